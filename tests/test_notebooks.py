"""The notebooks in ``notebooks/`` run from top to bottom in a fresh kernel.

Each notebook is executed with nbclient in a new ipykernel (this
interpreter, whatever kernels are installed elsewhere), under the platform's
default start method and under ``spawn``; any cell that raises fails the test.
A kernel is another process than the test session, so the session's check
for leftover queues does not see its queues: each test looks for queues named
after the kernel's pid itself.  Timings are printed by the notebooks, never
asserted here.
"""

import asyncio
import json
import multiprocessing as mp
import os
import sys
import threading
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


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m or "default")
def test_nopython_streaming(method, jupyter_path, monkeypatch):
    """Workers stream the states of an @njit simulation from nopython code
    (pysyncq.jit); the notebook gathers and plots them."""
    env = {"PYSYNCQ_START_METHOD": method} if method else {}
    if method is None:
        monkeypatch.delenv("PYSYNCQ_START_METHOD", raising=False)
    nb = run(
        "03-nopython-streaming.ipynb", jupyter_path, monkeypatch, PYSYNCQ_NOTEBOOK_QUICK="1", **env
    )
    shown = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert "12,000 states in" in shown  # 3 workers x 4,000 steps, every one
    assert "still in /dev/shm: False" in shown
    images = [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(images) == 1


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


CHECK_CELL = """
import time
deadline = time.monotonic() + 30
while any(p.exitcode is None for p in group.processes) and time.monotonic() < deadline:
    time.sleep(0.05)
print("workers running", sum(p.exitcode is None for p in group.processes))
print("queue left", {name!r} in dict(pysyncq.list_queues()))
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


def _client(nb, jupyter_path, monkeypatch, **options):
    """An nbclient for ``nb`` in this interpreter's kernel."""
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    options.setdefault("timeout", CELL_TIMEOUT)
    return nbclient.NotebookClient(
        nb,
        startup_timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(TESTS)}},
        **options,
    )


def _text(cell):
    return "".join(out.get("text", "") for out in cell.get("outputs", []))


def _group_members(name):
    """The pids of the members of queue ``name`` once the group is up (3:
    the kernel and its two workers), else None."""
    if name not in queues():
        return None
    try:
        q = pysyncq.PySyncQ(name, create=False)
    except (FileNotFoundError, pysyncq.NotAQueue):
        return None
    try:
        pids = [m.pid for m in q.stats().members if m.alive]
    finally:
        q.close()
    return pids if len(pids) == 3 else None


def test_a_notebook_interrupt_stops_the_group_and_a_rerun_works(jupyter_path, monkeypatch):
    """nbclient interrupts the cell that waits (``interrupt_on_timeout``, as
    Jupyter's interrupt: SIGINT to the kernel's process group); the workers
    ignore it, the group stops them and removes the queue, and the same
    group runs again in the same kernel."""
    name = conftest_new_name("nbint")
    group = GROUP_CELL.format(tests=str(TESTS), name=name)
    cells = [group, CHECK_CELL.format(name=name), SWEEP_CELL.format(name=name)]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = _client(
        nb,
        jupyter_path,
        monkeypatch,
        timeout_func=lambda cell: 10 if cell.source == group else CELL_TIMEOUT,
        interrupt_on_timeout=True,
        allow_errors=True,
    )
    try:
        client.execute()
        errors = [o for o in nb.cells[0].outputs if o.output_type == "error"]
        assert [e.ename for e in errors] == ["KeyboardInterrupt"]
        assert "pids" in _text(nb.cells[0])
        assert _text(nb.cells[1]) == "workers running 0\nqueue left False\n"
        assert _text(nb.cells[2]) == "squares [0, 1, 4, 9, 16, 25]\n"
    finally:
        if name in queues():
            pysyncq.remove(name, force=True)


#: jupyter_client drops the killed kernel's Popen without waiting for it on a
#: restart from another event loop: its __del__ warns that it "is still running".
RESTART_WARNINGS = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


def _restart_during_a_group(jupyter_path, monkeypatch, name):
    """Run a group's cell with nbclient and restart the kernel while it waits
    (jupyter_client kills the kernel's process group, then starts a new
    kernel); return the pids of the kernel and its workers."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(GROUP_CELL.format(tests=str(TESTS), name=name))]
    )
    client = _client(nb, jupyter_path, monkeypatch, timeout=30)
    members, restarted = [], []

    def restart_when_up():
        if _await(lambda: members.append(_group_members(name)) or members[-1], 60):
            asyncio.run(client.km.restart_kernel(now=True))
            restarted.append(True)

    restarter = threading.Thread(target=restart_when_up, daemon=True)
    # The cell never replies: nbclient finds the kernel dead, or (the new
    # kernel being alive) gives up waiting at the cell's timeout.
    errors = (nbclient.exceptions.DeadKernelError, nbclient.exceptions.CellTimeoutError)
    with pytest.raises(errors):
        with client.setup_kernel():
            restarter.start()
            client.execute_cell(nb.cells[0], 0)
    restarter.join(60)
    pids = members[-1]
    assert pids and restarted, "the group never came up, or the kernel was not restarted"
    assert _await(lambda: not any(map(_alive, pids))), "workers outlived the kernel"
    return pids


@RESTART_WARNINGS
def test_a_kernel_restart_ends_the_group(jupyter_path, monkeypatch):
    name = conftest_new_name("nbrestart")
    try:
        _restart_during_a_group(jupyter_path, monkeypatch, name)
    finally:
        if name in queues():
            pysyncq.remove(name, force=True)


@RESTART_WARNINGS
def test_a_kernel_restart_removes_the_queue(jupyter_path, monkeypatch):
    name = conftest_new_name("nbrestart")
    try:
        _restart_during_a_group(jupyter_path, monkeypatch, name)
        assert _await(lambda: name not in queues(), 10), "the queue outlived the kernel"
    finally:
        if name in queues():
            pysyncq.remove(name, force=True)
