"""Shared fixtures: unique queue names, a process pool that never hangs, and a
check that nothing of ours is left in /dev/shm."""

import itertools
import os

import introspect
import pytest
from procs import ProcPool

from pysyncq import PySyncQ

_names = itertools.count()
START_METHODS = ["fork", "spawn", "forkserver"]


def new_name(tag="q"):
    return f"pysyncq-test-{os.getpid()}-{tag}-{next(_names)}"


def shm_exists(name):
    return os.path.exists(introspect.shm_path(name))


@pytest.fixture
def qname(request):
    """A fresh queue name; the test must leave nothing behind under it."""
    name = new_name(request.node.name[:40].replace("/", "_").replace("[", "_").replace("]", ""))
    yield name
    leaked = shm_exists(name)
    introspect.remove_shm(name)
    assert not leaked, f"test left shared memory {name!r} behind"


@pytest.fixture
def handles(qname):
    """The queue (its creator's handle, not open), a reader ``r`` and a
    writer ``w``; all closed at the end, whatever happened."""
    made = []

    def make(size):
        q = PySyncQ(qname, size=size)
        r = PySyncQ(qname, create=False)
        w = PySyncQ(qname, create=False)
        made.extend([w, r, q])
        r.open("r")
        w.open("w", reader=False)
        return q, r, w

    yield make
    for h in made:
        h.close()


@pytest.fixture
def no_watcher(monkeypatch):
    """Queues created by this test, and by its children, have no watcher: a
    test of what is left behind sees the leftover, not the watcher's work."""
    monkeypatch.setenv("PYSYNCQ_WATCH", "0")


@pytest.fixture
def procs():
    """Start processes with ``procs.start(...)``; all are reaped at teardown."""
    pool = ProcPool()
    yield pool
    pool.reap()


@pytest.fixture(params=START_METHODS)
def method(request):
    return request.param


def ours(name):
    """Names this test session makes: through ``qname`` or ``PySyncQ(None)``."""
    pid = os.getpid()
    return name.startswith((f"pysyncq-test-{pid}-", f"psq_{pid}_"))


@pytest.fixture(scope="session", autouse=True)
def no_queue_left_behind():
    yield
    left = [name for name in introspect.queues_in_shm() if ours(name)]
    for name in left:
        introspect.remove_shm(name)
    assert not left, f"the suite left queues in /dev/shm: {left}"
