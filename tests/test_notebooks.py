"""The notebooks in ``notebooks/`` run from top to bottom in a fresh kernel.

Each notebook is executed with nbclient in a new ipykernel (this
interpreter, whatever kernels are installed elsewhere), under the platform's
default start method and under ``spawn``; any cell that raises fails the test.
A kernel is another process than the test session, so the session's check
for leftover queues does not see its queues: each test looks for queues named
after the kernel's pid itself.  Timings are printed by the notebooks, never
asserted here.
"""

import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import introspect
import pytest
from conftest import new_name as conftest_new_name

import pysyncq

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the test extra")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the test extra")
pytest.importorskip("ipykernel", reason="the notebook tests need the test extra")
pytest.importorskip("matplotlib", reason="the notebook tests need the test extra")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT = 120  # seconds, per cell
#: Appended to every notebook run here: which process the kernel was.
PID_CELL = "import os; print('kernel pid', os.getpid())"


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory):
    """A ``python3`` kernelspec that starts this very interpreter, first on
    ``JUPYTER_PATH``: a kernel installed elsewhere (another venv's, a
    system-wide one) must not run the notebooks."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3 (pysyncq tests)", "language": "python"})
    )
    return root


def queues():
    # Names only: list_queues() would also judge every queue, other programs' too.
    return set(introspect.queues_in_shm())


def kernel_pid(nb):
    cell = nb.cells[-1]
    for out in cell.get("outputs", []):
        text = out.get("text", "")
        if text.startswith("kernel pid"):
            return int(text.split()[-1])
    return None


def run(name, jupyter_path, monkeypatch, **env):
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's migration warning
    monkeypatch.setenv("MPLBACKEND", "Agg")  # headless, whatever the notebook asks
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        assert not cell.get("outputs"), f"{name} is committed with outputs: clear them"
    nb.cells.append(nbformat.v4.new_code_cell(PID_CELL))
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        startup_timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    before = queues()
    try:
        client.execute()
    finally:
        pid = kernel_pid(nb)
        if pid is not None:
            mine = (f"-{pid}", f"psq_{pid}_")
            left = [q for q in queues() - before if q.endswith(mine[0]) or q.startswith(mine[1])]
            for q in left:
                pysyncq.remove(q, force=True)
            assert not left, f"{name} left queues in /dev/shm: {left}"
    return nb


METHODS = [None, "spawn"]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m or "default")
def test_quickstart(method, jupyter_path, monkeypatch):
    env = {"PYSYNCQ_START_METHOD": method} if method else {}
    if method is None:
        monkeypatch.delenv("PYSYNCQ_START_METHOD", raising=False)
    nb = run("01-quickstart.ipynb", jupyter_path, monkeypatch, **env)
    shown = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert f"start method: {method or mp.get_all_start_methods()[0]}" in shown
    assert "still in /dev/shm: False" in shown


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m or "default")
def test_numerical_workers(method, jupyter_path, monkeypatch):
    env = {"PYSYNCQ_START_METHOD": method} if method else {}
    if method is None:
        monkeypatch.delenv("PYSYNCQ_START_METHOD", raising=False)
    # The throughput section with smaller counts: the test is about the
    # notebook running, not about the figures.
    nb = run(
        "02-numerical-workers.ipynb", jupyter_path, monkeypatch, PYSYNCQ_NOTEBOOK_QUICK="1", **env
    )
    images = [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(images) == 3, "the notebook draws three figures"


# -- A worker group in a kernel: interrupt, restart (issue 18) ---------------------

TESTS = Path(__file__).resolve().parent

GROUP_CELL = """
import sys; sys.path.insert(0, {tests!r})
import workers, pysyncq
group = pysyncq.Workers(workers.idle_worker, 2, name={name!r}, start="fork", timeout=5)
with group as q:
    for _ in range(2):
        q.pop(block=True, timer=60)
    print("pids", *[p.pid for p in group.processes], flush=True)
    q.pop(block=True, timer=None)  # until interrupted
"""

SWEEP_CELL = """
with pysyncq.Workers(workers.square_worker, 2, args=(2,), name={name!r}) as q:
    for i in range(6):
        q.append("task", i)
    q.append("stop")
    got = sorted(int(q.pop(block=True, timer=30)[2].split()[1]) for _ in range(6))
print("squares", got)
"""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _await(what, timeout=30):
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Kernel:
    """A kernel started as nbclient starts one (jupyter_client's KernelManager,
    this interpreter's kernelspec), for cells run one message at a time."""

    def __init__(self, jupyter_path, monkeypatch):
        monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
        monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")

    def __enter__(self):
        self.km.start_kernel()
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=60)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)

    def start(self, code):
        return self.kc.execute(code)

    def output_until(self, msg_id, marker, timeout=60):
        """The stdout text of ``msg_id`` up to a line starting with ``marker``."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except Exception:  # noqa: BLE001 (queue.Empty)
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                text += msg["content"]["text"]
                for line in text.splitlines():
                    if line.startswith(marker):
                        return line
            if msg["msg_type"] == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
        raise AssertionError(f"no {marker!r} within {timeout} s; got {text!r}")

    def reply(self, msg_id, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.kc.get_shell_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]
        raise AssertionError(f"no reply within {timeout} s")


def test_a_notebook_interrupt_stops_the_group_and_a_rerun_works(jupyter_path, monkeypatch):
    name = conftest_new_name("nbint")
    try:
        with Kernel(jupyter_path, monkeypatch) as k:
            cell = k.start(GROUP_CELL.format(tests=str(TESTS), name=name))
            pids = [int(p) for p in k.output_until(cell, "pids").split()[1:]]
            k.km.interrupt_kernel()  # SIGINT to the kernel's whole process group
            reply = k.reply(cell)
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
            assert _await(lambda: not any(map(_alive, pids))), "the group's workers are left"
            assert name not in queues()
            again = k.start(SWEEP_CELL.format(name=name))
            assert k.output_until(again, "squares") == "squares [0, 1, 4, 9, 16, 25]"
            assert k.reply(again)["status"] == "ok"
    finally:
        if name in queues():
            pysyncq.remove(name, force=True)


def _restart_during_a_group(jupyter_path, monkeypatch, name):
    """Start a group in a kernel, restart the kernel (it is killed, its cell
    never ends); return the workers' pids."""
    with Kernel(jupyter_path, monkeypatch) as k:
        cell = k.start(GROUP_CELL.format(tests=str(TESTS), name=name))
        pids = [int(p) for p in k.output_until(cell, "pids").split()[1:]]
        k.km.restart_kernel(now=True)
        assert _await(lambda: not any(map(_alive, pids))), "workers outlived the kernel"


def test_a_kernel_restart_ends_the_group(jupyter_path, monkeypatch):
    name = conftest_new_name("nbrestart")
    try:
        _restart_during_a_group(jupyter_path, monkeypatch, name)
    finally:
        if name in queues():
            pysyncq.remove(name, force=True)


def test_a_kernel_restart_removes_the_queue(jupyter_path, monkeypatch):
    name = conftest_new_name("nbrestart")
    try:
        _restart_during_a_group(jupyter_path, monkeypatch, name)
        assert _await(lambda: name not in queues(), 10), "the queue outlived the kernel"
    finally:
        if name in queues():
            pysyncq.remove(name, force=True)
