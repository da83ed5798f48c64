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
import sys
from pathlib import Path

import introspect
import pytest

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
