"""The segment's lifecycle seen from outside: whole programs run in a fresh
interpreter must exit cleanly (nothing on stderr: no resource_tracker warning,
no traceback) and leave nothing in /dev/shm, under every start method."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import START_METHODS, shm_exists

from pysyncq import PySyncQ, kernels

PROLOGUE = """
import multiprocessing as mp
import os
import sys
import time
from pysyncq import PySyncQ

method, name = sys.argv[1], sys.argv[2]
"""

SCENARIOS = {
    "every_process_opens_and_closes": """
def child(q, i):
    q.open(f"c{i}")
    q.scrntype.add("hello")
    q.append("hello", i)
    assert q.pop(block=True, timer=60) == ("parent", "bye", "")
    q.close()

if __name__ == "__main__":
    mp.set_start_method(method)
    q = PySyncQ(name, size=4096)
    P = [mp.Process(target=child, args=(q, i)) for i in range(3)]
    for p in P:
        p.start()
    q.open("parent")
    q.wait_for_readers(3, timer=60)
    q.append("bye")
    for p in P:
        p.join(60)
    assert [p.exitcode for p in P] == [0, 0, 0]
    q.close()
""",
    "parent_creates_but_never_opens": """
def child(q, i):
    with q.open(f"c{i}"):
        q.append("hello", i)

if __name__ == "__main__":
    mp.set_start_method(method)
    q = PySyncQ(name)
    P = [mp.Process(target=child, args=(q, i)) for i in range(3)]
    for p in P:
        p.start()
    for p in P:
        p.join(60)
    assert [p.exitcode for p in P] == [0, 0, 0]
    # no open(), no close(): the exit must clean up
""",
    "nobody_closes": """
def child(q, i):
    q.open(f"c{i}")
    q.append("hello", i)
    # returns without close()

if __name__ == "__main__":
    mp.set_start_method(method)
    q = PySyncQ(name)
    q.open("parent")
    P = [mp.Process(target=child, args=(q, i)) for i in range(3)]
    for p in P:
        p.start()
    for p in P:
        p.join(60)
    assert [p.exitcode for p in P] == [0, 0, 0]
    assert len(list(q)) == 3
""",
    "child_raises": """
def child(q):
    q.open("c")
    raise SystemExit(3)  # a worker that dies of an exception

if __name__ == "__main__":
    mp.set_start_method(method)
    q = PySyncQ(name)
    q.open("parent")
    p = mp.Process(target=child, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 3
    q.close()
""",
    "spawned_child_loads_kernels_from_cache": """
def child(q):
    from pysyncq import kernels
    q.open("c")
    q.append("t", "m")
    misses = sum(sum(f.stats.cache_misses.values())
                 for f in vars(kernels).values() if hasattr(f, "stats"))
    hits = sum(sum(f.stats.cache_hits.values())
               for f in vars(kernels).values() if hasattr(f, "stats"))
    q.close()
    if misses or not hits:
        raise SystemExit(f"{misses} kernels compiled in the child, {hits} loaded from cache")

if __name__ == "__main__":
    mp.set_start_method(method)
    q = PySyncQ(name)
    p = mp.Process(target=child, args=(q,))
    p.start()
    p.join(120)
    assert p.exitcode == 0, p.exitcode
    q.close()
""",
}


def run_script(tmp_path, body, *args, timeout=120):
    script = tmp_path / "scenario.py"
    script.write_text(PROLOGUE + textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


CASES = [
    (method, scenario)
    for scenario in sorted(SCENARIOS)
    for method in START_METHODS
    # a forked child inherits the compiled kernels: nothing to load
    if not (scenario == "spawned_child_loads_kernels_from_cache" and method == "fork")
]


@pytest.mark.parametrize(("method", "scenario"), CASES)
def test_program_exits_cleanly_and_leaves_nothing(tmp_path, qname, method, scenario):
    r = run_script(tmp_path, SCENARIOS[scenario], method, qname)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert not shm_exists(qname)


CTRL_C = """
def worker(q, i):
    q.open(f"w{i}")
    while True:
        q.pop(block=True, timer=None)

if __name__ == "__main__":
    mp.set_start_method(method)
    q = PySyncQ(name)
    P = [mp.Process(target=worker, args=(q, i)) for i in range(3)]
    for p in P:
        p.start()
    q.open("parent")
    q.wait_for_readers(3, timer=60)
    print("ready", flush=True)
    while True:
        q.append("tick", block=True, timer=None)
        time.sleep(0.001)
"""


def test_ctrl_c_on_a_running_pool_leaves_nothing_behind(tmp_path, qname, method):
    script = tmp_path / "pool.py"
    script.write_text(PROLOGUE + textwrap.dedent(CTRL_C))
    proc = subprocess.Popen(
        [sys.executable, str(script), method, qname],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        proc.wait(60)
        deadline = time.monotonic() + 30
        while shm_exists(qname) and time.monotonic() < deadline:
            time.sleep(0.05)  # children may finish their cleanup after the parent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert "KeyboardInterrupt" in stderr
    assert "resource_tracker" not in stderr
    assert not shm_exists(qname)
    # multiprocessing's helpers (resource tracker, fork server) end when they
    # see their parent's pipe close: give the whole group a moment.
    deadline = time.monotonic() + 30
    while (left := group_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes of the pool are still running: {left}"


def group_members(pgid):
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode(errors="replace")[:120])
    return out


@pytest.mark.parametrize("error", [KeyboardInterrupt, NotImplementedError])
def test_a_segment_that_could_not_be_formatted_is_not_left(qname, monkeypatch, error):
    """A Ctrl-C, or a kernel that cannot run (NUMBA_DISABLE_JIT), while the
    new segment is formatted: it is unlinked (unformatted, nobody could ever
    reclaim it as a queue)."""

    def boom(*args):
        raise error("while formatting")

    monkeypatch.setattr(kernels, "ring_format", boom)
    with pytest.raises(error):
        PySyncQ(qname, size=4096)
    assert not shm_exists(qname)
