"""No leaked segment, whatever kills whom (issue 18, finding 2).

The process that creates a queue starts its watcher (``pysyncq/_watcher.py``),
which removes the segment within about a second once no live process holds it:
a lone parent killed by SIGKILL, SIGTERM or SIGINT, a whole process group
killed at once (what a batch scheduler or a notebook's kernel restart does),
a daemon producer killed by multiprocessing after its parent closed.  It never
removes a queue that a live process, or a durable slot, still holds, nor a
later queue under the same name.

Every program here runs in a subprocess of its own session, is waited for with
a timeout and killed if it is left; every queue is removed at the end.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import introspect
import pytest
from conftest import new_name, shm_exists

from pysyncq import PySyncQ, layout

pytestmark = pytest.mark.timeout(120)

#: How long the tests allow the watcher ("about a second" on an idle machine;
#: the suite's machine has 2 busy cores).
GONE_WITHIN = 10.0


def watcher_module():
    import importlib.util

    path = os.path.join(os.path.dirname(introspect.package_file()), "_watcher.py")
    spec = importlib.util.spec_from_file_location("pysyncq_watcher_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_watcher_reads_the_layout_pysyncq_writes():
    """The watcher copies the header's constants (it may not import numpy)."""
    w = watcher_module()
    for name in (
        "MAGIC HEADER_BYTES HEADER_WORDS SLOT_BYTES SLOT_WORDS H_MAGIC H_NSLOTS H_INSTANCE "
        "H_CREATOR H_FLAGS H_SLOT_HWM F_UNLINKED F_FOREIGN_NS S_STATE S_TOKEN S_FLAGS "
        "SLOT_ACTIVE SF_DURABLE PID_BITS PID_MASK START_MASK"
    ).split():
        assert getattr(w, name) == getattr(layout, name), name


def test_the_watcher_judges_processes_as_pysyncq_does():
    w = watcher_module()
    me = introspect.token_of(os.getpid())
    assert w.is_alive(me)
    assert not w.is_alive(me ^ (1 << layout.PID_BITS))  # same pid, another start time
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    token = introspect.token_of(p.pid)
    p.wait(30)
    assert not w.is_alive(token)
    assert not w.is_alive(0)


def test_the_watcher_imports_neither_numpy_nor_numba():
    """It runs as ``python -I -S``: only the standard library is there."""
    path = os.path.join(os.path.dirname(introspect.package_file()), "_watcher.py")
    code = (
        f"import runpy, sys; sys.argv = ['w']; runpy.run_path({path!r}, run_name='w'); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'numba', 'pysyncq')))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- Programs killed in every way.

HOLD = """
import sys, time
import pysyncq
q = pysyncq.PySyncQ({name!r}, size=1 << 16)
{more}
print(q.name, flush=True)
time.sleep(120)
"""


class Program:
    """A Python program in a session of its own, its first line read."""

    def __init__(self, path, code, env=None, pass_fds=()):
        with open(path, "w") as f:
            f.write(textwrap.dedent(code))
        self.p = subprocess.Popen(
            [sys.executable, path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            pass_fds=pass_fds,
        )
        self.first = self.p.stdout.readline().strip()
        if not self.first:
            self.p.kill()
            _, err = self.p.communicate(timeout=30)
            raise AssertionError(f"the program did not start: {err}")

    def signal_group(self, sig):
        os.killpg(self.p.pid, sig)

    def wait(self, timeout=30):
        try:
            return self.p.wait(timeout)
        finally:
            self.stop()

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(30)
        self.p.stdout.close()
        self.p.stderr.close()


def gone_within(name, seconds=GONE_WITHIN):
    """Seconds it took ``name`` to leave /dev/shm, or None if it stayed."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if not shm_exists(name):
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def stays_for(name, seconds=1.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if not shm_exists(name):
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def programs(tmp_path):
    started = []

    def start(code, env=None, pass_fds=()):
        prog = Program(tmp_path / f"program{len(started)}.py", code, env, pass_fds)
        started.append(prog)
        return prog

    yield start
    for prog in started:
        prog.stop()


@pytest.fixture
def cleanup():
    names = []
    yield names.append
    for name in names:
        introspect.remove_shm(name)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("opened", [False, True], ids=["created", "opened"])
def test_a_lone_parent_killed_leaves_nothing(programs, cleanup, sig, opened):
    name = new_name("watch")
    cleanup(name)
    prog = programs(HOLD.format(name=name, more="q.open('p')" if opened else ""))
    assert shm_exists(name)
    prog.signal_group(sig)
    prog.wait()
    assert gone_within(name) is not None


def test_a_queue_without_a_name_is_watched_too(programs, cleanup):
    prog = programs(HOLD.format(name=None, more="q.open('p')"))
    name = prog.first
    cleanup(name)
    assert shm_exists(name)
    prog.signal_group(signal.SIGKILL)
    prog.wait()
    assert gone_within(name) is not None


GROUP = """
import multiprocessing as mp, sys, time
import pysyncq

def produce(q):
    with q.open("child"):
        while True:
            q.append("t", "x" * 100, block=True, timer=None)
            time.sleep(0.001)

if __name__ == "__main__":
    mp.set_start_method({method!r})
    q = pysyncq.PySyncQ({name!r}, size=1 << 16)
    q.open("parent")
    children = [mp.Process(target=produce, args=(q,), daemon={daemon}) for _ in range(2)]
    for c in children:
        c.start()
    q.wait_for_readers(2, timer=60, processes=children)
    {then}
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_process_group_killed_at_once_leaves_nothing(programs, cleanup, method):
    """What a kernel restart or a scheduler's cancel does: every process of
    the group gets SIGKILL together."""
    name = new_name("watch")
    cleanup(name)
    then = "print('running', flush=True); time.sleep(120)"
    prog = programs(GROUP.format(method=method, name=name, daemon=False, then=then))
    prog.signal_group(signal.SIGKILL)
    prog.wait()
    assert gone_within(name) is not None


def test_daemon_producers_killed_after_their_parent_closed_leave_nothing(programs, cleanup):
    """The parent closes its handle (or main() returns and it is collected)
    while daemon producers run; at exit multiprocessing terminates them."""
    name = new_name("watch")
    cleanup(name)
    then = "q.close(); print('closed', flush=True)"
    prog = programs(GROUP.format(method="fork", name=name, daemon=True, then=then))
    assert prog.first == "closed"
    assert prog.wait() == 0
    assert gone_within(name) is not None


def test_a_live_member_keeps_the_queue(programs, cleanup):
    """The creator killed; a member it did not start still runs: the queue
    stays until that one is gone too."""
    name = new_name("watch")
    cleanup(name)
    creator = programs(HOLD.format(name=name, more=""))
    member = programs(
        f"""
        import time, pysyncq
        q = pysyncq.PySyncQ({name!r}, create=False)
        q.open("m")
        print("in", flush=True)
        time.sleep(120)
        """
    )
    creator.signal_group(signal.SIGKILL)
    creator.wait()
    assert stays_for(name)
    member.signal_group(signal.SIGKILL)
    member.wait()
    assert gone_within(name) is not None


def test_a_durable_slot_keeps_the_queue(programs, cleanup):
    name = new_name("watch")
    cleanup(name)
    prog = programs(HOLD.format(name=name, more="q.open('p', durable=True)"))
    prog.signal_group(signal.SIGKILL)
    prog.wait()
    assert stays_for(name)
    q = PySyncQ(name, create=False)
    q.open("p", durable=True)  # its next run takes the slot over, and leaves
    q.close()
    assert not shm_exists(name)


def test_a_later_queue_of_the_same_name_is_left_alone(programs, cleanup):
    """The first creator's queue is unlinked behind its back and the name
    made again by a live process: the first watcher must not touch it."""
    name = new_name("watch")
    cleanup(name)
    first = programs(HOLD.format(name=name, more=""))
    introspect.remove_shm(name)
    second = PySyncQ(name, size=1 << 16)
    try:
        first.signal_group(signal.SIGKILL)
        first.wait()
        assert stays_for(name)
    finally:
        second.close()
    assert not shm_exists(name)


def test_watchers_can_be_turned_off(programs, cleanup):
    """PYSYNCQ_WATCH=0: the leftover stays for the next process (as before)."""
    name = new_name("watch")
    cleanup(name)
    prog = programs(HOLD.format(name=name, more=""), env={"PYSYNCQ_WATCH": "0"})
    prog.signal_group(signal.SIGKILL)
    prog.wait()
    assert stays_for(name)
    PySyncQ(name, size=1 << 16).close()  # reclaimed, then removed
    assert not shm_exists(name)


def watchers_of(name):
    """Pids of the watcher processes of queue ``name`` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"_watcher.py") for a in argv) and name.encode() in argv:
                pids.append(int(entry))
    return pids


def test_a_watcher_ends_with_its_queue_and_leaves_no_zombie():
    """No process is left behind by a queue closed as usual, and the watcher
    is no child of its creator (its first process, reaped here, forked it)."""
    q = PySyncQ(None, size=1 << 16)
    try:
        deadline = time.monotonic() + GONE_WITHIN
        # Its first process (a child of this one) forks it and ends at once.
        while (
            not (pids := watchers_of(q.name)) or os.getpid() in map(parent_of, pids)
        ) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pids and os.getpid() not in map(parent_of, pids)
    finally:
        q.close()
    while watchers_of(q.name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not watchers_of(q.name)
    introspect.reap_watchers()
    assert not introspect.watchers_started()


def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_the_watcher_holds_no_descriptor_of_its_creator(programs, cleanup):
    """A pipe the creator leaves inheritable is not held open by the watcher:
    whoever waits for its end sees it when the creator ends."""
    name = new_name("watch")
    cleanup(name)
    r, w = os.pipe()
    os.set_inheritable(w, True)
    prog = programs(HOLD.format(name=name, more=""), pass_fds=(w,))  # inheritable there
    os.close(w)
    prog.signal_group(signal.SIGKILL)
    prog.wait()
    os.set_blocking(r, False)
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline:
        try:
            if os.read(r, 1) == b"":
                break  # every writer is gone: the watcher holds none
        except BlockingIOError:
            time.sleep(0.02)
    else:
        raise AssertionError("the pipe stayed open: something holds its write end")
    os.close(r)
    assert gone_within(name) is not None
