"""follow=True ends write-only members; blocking reads watch processes=.

Issue 18: a ``reader=False, follow=True`` producer kept appending for ever
once its parent had left (the queue never fills, so follow never fired); a
parent blocked in ``pop(timer=None)`` could not notice that its producer
had died.
"""

import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import workers
from conftest import shm_exists
from introspect import remove_shm
from procs import kill, wait_dead

from pysyncq import ChildExited, PySyncQ


def _producer_runs(count, at_least=5, timeout=20):
    deadline = time.monotonic() + timeout
    while count.value < at_least:
        assert time.monotonic() < deadline, "the producer did not start appending"
        time.sleep(0.01)


@pytest.mark.parametrize("target", [workers.follow_writer, workers.follow_loaner])
def test_write_only_follower_ends_when_creator_closes(qname, procs, target):
    q = PySyncQ(qname, size=1 << 16)
    started, count = mp.Event(), mp.Value("i", 0)
    p = procs.start(target, q, started, count)
    assert started.wait(20)
    _producer_runs(count)
    q.close()  # the creator leaves; nobody reads, the queue never fills
    p.join(10)
    assert p.exitcode == 0, f"the producer did not end with QueueClosed (exit {p.exitcode})"
    assert not shm_exists(qname)


def test_write_only_follower_ends_when_creator_is_killed(qname, procs):
    # The creator is a child of ours, so that it can die by SIGKILL.
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import multiprocessing as mp, workers
        from pysyncq import PySyncQ
        if __name__ == "__main__":
            q = PySyncQ({qname!r}, size=1 << 16)
            started = mp.Event()
            p = mp.get_context("fork").Process(target=workers.follow_writer,
                                                 args=(q, started, mp.Value("i", 0)))
            p.start()
            started.wait(20)
            print(p.pid, flush=True)
            time.sleep(60)
        """
    )
    producer = None
    creator = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = creator.stdout.readline()
        assert line, "the creator did not start its producer"
        producer = int(line)
        creator.send_signal(signal.SIGKILL)
        creator.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(producer, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the follow=True producer outlived its killed creator")
        # The creator's hold is a dead process's: the producer's close, the
        # last of a live process, removes the queue.
        deadline = time.monotonic() + 10
        while shm_exists(qname) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not shm_exists(qname), "the queue outlived its last live member"
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait(10)
        if producer is not None:
            try:
                os.kill(producer, signal.SIGKILL)
            except ProcessLookupError:
                pass

        remove_shm(qname)
        creator.stdout.close()


def test_follow_writer_costs_nothing_to_others(qname):
    # A non-follow handle's writes keep their screens cache: no call per append.
    q = PySyncQ(qname, size=1 << 16)
    try:
        q.open("w", reader=False, follow=True)  # the creator follows nobody
        q.append("t", "x")
        assert q._m.follow == 0 and q._skip_at == q._changes[0]
    finally:
        q.close()


def _reader_and_failing_child(qname, procs, code=1):
    q = PySyncQ(qname, size=1 << 16)
    q.open("parent")
    started = mp.Event()
    p = procs.start(workers.open_then_fail, q, started, code)
    assert started.wait(20)
    return q, p


POPS = {
    "pop": lambda q, ps: q.pop(block=True, timer=None, processes=ps),
    "pop_many": lambda q, ps: q.pop_many(10, block=True, timer=None, processes=ps),
    "iterate": lambda q, ps: list(q(block=True, timer=None, processes=ps)),
    "apop": lambda q, ps: asyncio.run(q.apop(timer=None, processes=ps)),
}


def _pop_view(q, ps):
    with q.pop_view(block=True, timer=None, processes=ps) as m:
        return m


POPS["pop_view"] = _pop_view


@pytest.mark.parametrize("how", sorted(POPS))
def test_blocked_pop_raises_when_a_watched_process_fails(qname, procs, how):
    q, p = _reader_and_failing_child(qname, procs)
    try:
        # What the child sent before failing comes first.
        if how != "pop_view":
            first = q.pop(block=True, timer=10, processes=[p])
            assert first[2] == "sent before failing"
        else:
            with q.pop_view(block=True, timer=10, processes=[p]) as m:
                assert bytes(m[2]) == b"sent before failing"
        t = time.monotonic()
        with pytest.raises(ChildExited, match="exit code 1"):
            POPS[how](q, [p])
        assert time.monotonic() - t < 15
    finally:
        q.close()


def test_blocking_write_watches_the_handles_processes(qname, procs):
    q = PySyncQ(qname, size=4096)
    q.open("parent")
    started = mp.Event()
    p = procs.start(workers.open_then_fail, q, started, 2)
    # A second reader that never reads pins the queue: a blocked write.
    pinner = PySyncQ(qname, create=False)
    pinner.open("pinner")
    try:
        assert started.wait(20)
        q._procs = (p,)  # as a worker group sets it
        with pytest.raises(ChildExited, match="exit code 2"):
            while True:
                q.append("t", "y" * 100, block=True, timer=None)
    finally:
        pinner.close()
        q._procs = ()
        q.close()


def test_normal_exit_is_not_an_error(qname, procs):
    q, p = _reader_and_failing_child(qname, procs, code=0)
    try:
        assert q.pop(block=True, timer=10, processes=[p])[2] == "sent before failing"
        p.join(10)
        assert q.pop(block=True, timer=0.3, processes=[p]) is None
    finally:
        q.close()


def test_killed_process_is_named(qname, procs):
    q = PySyncQ(qname, size=1 << 16)
    q.open("parent")
    try:
        p = procs.start(workers.open_and_idle, q, "child", mp.Event())
        kill(p)
        wait_dead(p)
        with pytest.raises(ChildExited, match="SIGKILL"):
            q.pop(block=True, timer=None, processes=[p])
    finally:
        q.close()


def test_processes_argument_is_checked(qname):
    q = PySyncQ(qname, size=1 << 16)
    q.open("r")
    try:
        with pytest.raises(TypeError, match="processes"):
            q.pop(processes=[object()])
        with pytest.raises(TypeError, match="processes"):
            q.pop(processes=3)
        with pytest.raises(TypeError, match="processes"):
            q.pop_many(3, processes=["x"])
        with pytest.raises(TypeError, match="processes"):
            q(processes=[1])
        assert q.pop(processes=[]) is None
    finally:
        q.close()


def test_a_dead_durable_member_keeps_the_queue_after_the_last_close(qname, procs):
    # The last live member's close removes a queue held only by dead
    # processes, but not one a durable slot waits in (for the relay's next run).
    import pysyncq

    q = PySyncQ(qname, size=1 << 16)
    q.open("parent")
    started = mp.Event()
    p = procs.start(workers.open_durable_and_idle, q, started)
    try:
        assert started.wait(20)
        kill(p)
        wait_dead(p)
        q.close()
        assert shm_exists(qname)
    finally:
        q.close()
        if shm_exists(qname):
            pysyncq.remove(qname, force=True)
