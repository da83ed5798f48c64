"""Broadcast behaviour with real processes: many writers and readers, small
rings that wrap constantly, late joiners, slow readers and closing readers."""

import multiprocessing as mp

import pytest
import workers

from pysyncq import PySyncQ


@pytest.mark.parametrize("size", [512, 4096])
def test_many_writers_many_readers_through_a_small_ring(qname, procs, method, size):
    """Three writers, three readers, payloads of 0 to a quarter of the ring:
    every reader checks every message's checksum and each writer's order."""
    n_writers, n_readers, count = 3, 3, 400 if method == "fork" else 150
    q = PySyncQ(qname, size=size)
    counts = {w: count for w in range(n_writers)}
    readers = [
        procs.start(workers.checked_reader, q, f"r{i}", n_writers, counts, method=method)
        for i in range(n_readers)
    ]
    q.open("parent", reader=False)
    q.wait_for_readers(n_readers, timer=60)
    writers = [
        procs.start(workers.checked_writer, q, w, count, size // 4 - 64, w, method=method)
        for w in range(n_writers)
    ]
    procs.join(readers + writers, timeout=120)
    s = q.stats()
    assert s.appended == n_writers * (count + 1)
    q.close()


def test_late_joiner_sees_only_later_messages(qname):
    with PySyncQ(qname) as a:
        a.open("a")
        a.append("t", "before")
        with PySyncQ(qname, create=False) as late:
            late.open("late")
            assert late.pop() is None
            a.append("t", "after")
            assert late.pop() == ("a", "t", "after")
            assert late.pop() is None


def test_late_joining_process_sees_only_later_messages(qname, procs):
    q = PySyncQ(qname)
    q.open("parent", reader=False)
    for i in range(10):
        q.append("data", workers.checked_body(9, 0, i, b"early"))
    started = mp.Event()
    counts = {0: 50}
    late = procs.start(workers.checked_reader, q, "late", 1, counts, started)
    assert started.wait(60)
    q.wait_for_readers(1, timer=60)
    writer = procs.start(workers.checked_writer, q, 0, 50, 100, 0)
    procs.join([late, writer], timeout=60)
    q.close()


def test_slow_reader_holds_space_until_it_reads(qname, procs):
    """A writer blocks on a full ring while one reader lags, and proceeds as the
    laggard reads; the fast reader is never starved of order or content."""
    q = PySyncQ(qname, size=1024)
    counts = {0: 200}
    fast = procs.start(workers.checked_reader, q, "fast", 1, counts)
    slow = procs.start(workers.checked_reader, q, "slow", 1, counts, None, 0.002)
    q.open("parent", reader=False)
    q.wait_for_readers(2, timer=60)
    writer = procs.start(workers.checked_writer, q, 0, 200, 150, 3)
    procs.join([fast, slow, writer], timeout=90)
    q.close()


def test_closing_reader_releases_what_it_had_not_read(qname):
    with PySyncQ(qname, size=512) as w, PySyncQ(qname, create=False) as r1:
        w.open("w", reader=False)
        r1.open("r1")
        r2 = PySyncQ(qname, create=False)
        r2.open("r2")
        sent = 0
        with pytest.raises(MemoryError):
            while True:
                w.append("n", sent)
                sent += 1
        assert [int(m[2]) for m in r1] == list(range(sent))
        with pytest.raises(MemoryError):
            w.append("n", "more")  # r2 still holds everything
        r2.close()  # releases all it had not read
        w.append("n", "more")
        assert r1.pop() == ("w", "n", "more")
        assert w.stats().used == 0


def test_closing_process_releases_space_for_a_blocked_writer(qname, procs):
    q = PySyncQ(qname, size=512)
    started = mp.Event()
    idle = procs.start(workers.open_and_idle, q, "idle", started)
    assert started.wait(60)
    q.open("w", reader=False)
    with pytest.raises(MemoryError):
        while True:
            q.append("fill", "x" * 50)
    idle.terminate()  # SIGTERM: the process ends without closing...
    idle.join(30)
    q.append("after", "x" * 50, block=True, timer=30)  # ...and is reaped while we wait
    assert q.stats().reaped == 1
    q.close()


def test_echo_round_trips_between_processes(qname, procs, method):
    """The seed benchmark's pattern: child 0 echoes, the others only read."""
    q = PySyncQ(qname, size=1 << 16)
    children = [
        procs.start(workers.echo_child, q, f"c{i}", i == 0, method=method) for i in range(3)
    ]
    q.open("parent")
    q.scrnsend.update({"c1", "c2"})
    q.wait_for_readers(3, timer=60)
    for i in range(200):
        body = f"ping {i} " + "x" * (i * 37 % 3000)
        q.append("ping", body, block=True, timer=30)
        assert q.pop(block=True, timer=30) == ("c0", "echo", body)
    q.append("stop", block=True, timer=30)
    procs.join(children, timeout=60)
    q.close()


def test_stats_never_show_a_negative_lag_on_a_busy_queue(qname, procs):
    """Issue 17 item 4: a writer appends as fast as it can through a small
    ring while a reader pops; every snapshot taken meanwhile keeps every
    figure in range (the write position was read before the cursors, so a
    reader that popped meanwhile showed a negative lag and too small a
    ``used``)."""
    size = 4096
    q = PySyncQ(qname, size=size)
    q.open("watcher", reader=False)
    stop = mp.Event()
    up = [mp.Event(), mp.Event()]
    procs.start(workers.pop_until, q, "reader", up[0], stop)
    assert up[0].wait(60)
    procs.start(workers.append_until, q, "writer", up[1], stop)
    assert up[1].wait(60)
    seen = []
    try:
        for _ in range(3000):
            s = q.stats()
            r = [m for m in s.members if m.reader]
            seen.append(sum(m.lag for m in r))
            assert 0 <= s.used <= size and s.free == size - s.used, s
            assert all(0 <= m.lag <= size and m.lag_messages >= 0 for m in r), s
    finally:
        stop.set()
        procs.join(timeout=60)
        q.close()
    assert any(seen), "the reader never lagged: nothing was measured"
