"""pysyncq.Workers: a worker group as short as multiprocessing.Pool (issue 18)."""

import os
import signal
import time

import pytest
import workers
from conftest import shm_exists

from pysyncq import ChildExited, Workers
from pysyncq.group import RemoteTraceback


def _sweep(q, n_tasks):
    for i in range(n_tasks):
        q.append("task", i, block=True, timer=None)
    q.append("stop")
    got = {}
    while len(got) < n_tasks:
        _, _, body = q.pop(block=True, timer=30)
        i, sq = map(int, body.split())
        got[i] = sq
    return got


@pytest.mark.parametrize("start", ["fork", "spawn", "forkserver"])
def test_a_sweep_with_each_start_method(qname, start):
    with Workers(workers.square_worker, 3, args=(3,), name=qname, start=start) as q:
        got = _sweep(q, 30)
    assert got == {i: i * i for i in range(30)}
    assert not shm_exists(qname)


def test_a_worker_exception_reaches_a_blocked_parent(qname):
    t = time.monotonic()
    with pytest.raises(ValueError, match="cannot do task 3") as info:
        with Workers(workers.failing_worker, 2, args=(3,), name=qname) as q:
            for i in range(5):
                q.append("task", i)
            q.pop(block=True, timer=None)  # nothing comes: the worker's failure ends it
    assert time.monotonic() - t < 30
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "failing_worker" in str(cause) and "ValueError" in str(cause)
    assert not shm_exists(qname)


def test_a_worker_exception_is_raised_on_leaving_the_block(qname):
    with pytest.raises(ValueError, match="cannot do task 0"):
        with Workers(workers.failing_worker, 1, args=(0,), name=qname) as q:
            q.append("task", 0)
            time.sleep(1.0)  # the worker fails meanwhile; the parent never waits on it
    assert not shm_exists(qname)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_leaving_by_an_exception_stops_the_workers(qname, error):
    group = Workers(workers.idle_worker, 2, name=qname, timeout=2.0)
    t = time.monotonic()
    with pytest.raises(error):
        with group as q:
            q.pop(block=True, timer=30)
            raise error()
    assert time.monotonic() - t < 30
    assert all(p.exitcode == 0 for p in group.processes)  # they ended by themselves
    assert not shm_exists(qname)


def test_a_worker_that_does_not_end_is_terminated(qname):
    group = Workers(workers.stubborn_worker, 1, name=qname, timeout=0.5)
    with group as q:
        q.pop(block=True, timer=30)
    assert group.processes[0].exitcode == -signal.SIGTERM
    assert not shm_exists(qname)


def test_a_killed_worker_is_named(qname):
    with pytest.raises(ChildExited, match="SIGKILL"):
        with Workers(workers.idle_worker, 1, name=qname) as q:
            pid = int(q.pop(block=True, timer=30)[2])
            os.kill(pid, signal.SIGKILL)
            q.pop(block=True, timer=None)
    assert not shm_exists(qname)


def test_workers_ignore_sigint(qname):
    # A Ctrl-C or a notebook interrupt reaches the whole process group.
    group = Workers(workers.idle_worker, 2, name=qname)
    with group as q:
        for _ in range(2):
            q.pop(block=True, timer=30)
        for p in group.processes:
            os.kill(p.pid, signal.SIGINT)
        time.sleep(0.5)
        assert all(p.exitcode is None for p in group.processes)
    assert all(p.exitcode == 0 for p in group.processes)
    assert not shm_exists(qname)


def test_a_worker_done_at_once(qname):
    # It opened, so it missed nothing: not a failure, even if it is gone before
    # the parent looks.
    group = Workers(workers.quick_worker, 3, name=qname)
    with group as q:
        q.append("task", "ignored")
    assert [p.exitcode for p in group.processes] == [0, 0, 0]
    assert not shm_exists(qname)


def test_a_worker_that_cannot_start_leaves_nothing(qname):
    with pytest.raises(Exception, match="pickle|lambda"):
        with Workers(lambda q, i: None, 2, name=qname, start="spawn"):
            pass
    assert not shm_exists(qname)


def test_bad_arguments():
    with pytest.raises(TypeError, match="target"):
        Workers(3, 2)
    with pytest.raises(ValueError, match="n"):
        Workers(workers.idle_worker, 0)
    with pytest.raises(TypeError, match="n"):
        Workers(workers.idle_worker, "2")


# -- Workers.map: Pool.map's shape


@pytest.mark.parametrize("start", ["fork", "spawn", "forkserver"])
def test_map_gives_every_result_in_order(start):
    items = list(range(50))
    assert Workers.map(workers.square, items, 3, start=start) == [x * x for x in items]


def test_map_takes_any_picklable_items_and_any_iterable():
    items = ({"a": i, "b": [i] * 3} for i in range(20))
    got = Workers.map(len, items, 2)
    assert got == [2] * 20
    assert Workers.map(workers.square, [], 2) == []
    assert Workers.map(workers.square, [4], 5) == [16]  # more workers than items


def test_map_with_more_than_the_queue_holds():
    """Tasks and results many times the queue's size: the parent's appends
    take the results in meanwhile (its inbox), nothing waits for ever."""
    items = [b"x" * 200] * 2000
    assert Workers.map(len, items, 2, size=4096) == [200] * 2000


def test_map_raises_the_worker_exception_with_its_traceback():
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="unlucky 13") as e:
        Workers.map(workers.square_or_fail, range(40), 2)
    assert isinstance(e.value.__cause__, RemoteTraceback)
    assert "square_or_fail" in str(e.value.__cause__)
    assert time.monotonic() - t0 < 30


def test_map_names_a_killed_worker():
    with pytest.raises(ChildExited, match="SIGKILL"):
        Workers.map(workers.die_on, range(20), 2)


def test_map_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        Workers.map(3, [1])
    with pytest.raises(ValueError):
        Workers.map(workers.square, [1], 0)


def test_map_names_a_worker_that_ended_without_its_results():
    """os._exit(0) in fn: no traceback, exit code 0, and its item never
    returns: the parent must not wait for it for ever."""
    with pytest.raises(ChildExited, match="exit code 0"):
        Workers.map(workers.exit_quietly_on, range(20), 2)


def test_map_does_not_raise_a_workers_systemexit_as_its_own():
    with pytest.raises(ChildExited, match="SystemExit"):
        Workers.map(workers.sys_exit_on, range(20), 2)
