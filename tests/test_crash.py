"""Crash tolerance: processes are SIGKILLed while reading, waiting and holding
the lock, and the others carry on without a hang, a loss or a corruption."""

import multiprocessing as mp
import os
import time

import introspect
import pytest
import workers
from procs import kill, wait_dead

import pysyncq
from pysyncq import PySyncQ
from pysyncq import layout as L
from pysyncq.layout import F_FOREIGN_NS, H_FLAGS, H_LOCK, H_PIDNS, H_TIMENS, H_WRITE_POS

pytestmark = pytest.mark.timeout(180)


def test_killed_reader_is_reaped_and_survivors_get_everything(qname, procs):
    size = 4096
    q = PySyncQ(qname, size=size)
    started = mp.Event()
    victim = procs.start(workers.open_and_idle, q, "victim", started)
    payload = b"p" * 200
    count = 10 * size // len(payload)  # ten times the capacity
    survivors = [procs.start(workers.checked_reader, q, f"r{i}", 1, {0: count}) for i in range(2)]
    q.open("parent", reader=False)
    q.wait_for_readers(3, timer=60)
    kill(victim)
    wait_dead(victim)  # a zombie: not yet joined by its parent
    for seq in range(count):
        q.append("data", workers.checked_body(0, 0, seq, payload), block=True, timer=30)
    q.append("done", "0", block=True, timer=30)
    procs.join(survivors, timeout=60)
    assert q.stats().reaped == 1
    q.close()


@pytest.mark.parametrize("where", ["pop", "append"])
def test_process_killed_while_waiting_hangs_nobody(qname, procs, where):
    q = PySyncQ(qname, size=1024)
    started = mp.Event()
    target = workers.block_in_pop if where == "pop" else workers.block_in_append
    victim = procs.start(target, q, "victim", started)
    assert started.wait(60)
    reader = PySyncQ(qname, create=False)
    reader.open("reader")
    q.open("writer", reader=False)
    time.sleep(0.2)  # let the victim fall asleep in its wait
    kill(victim)
    wait_dead(victim)
    for _ in reader:  # what the victim appended before it died
        pass
    # Others append, pop and close as usual; with a 1 KiB ring the victim's
    # stale waiting flags get exercised on every one of these.
    for i in range(2000):
        q.append("n", i, block=True, timer=30)
        while (m := reader.pop()) is not None and m[1] == "fill":
            pass
        assert m == ("writer", "n", str(i))
    reader.close()
    q.close()


def test_dead_lock_holder_is_detected_and_the_queue_recovered(qname, procs):
    """Simulate a process killed inside a kernel: the lock word holds its token
    and a half-written record lies beyond the write position."""
    q = PySyncQ(qname, size=4096)
    r = PySyncQ(qname, create=False)
    q.open("w")
    r.open("r")
    q.append("t", "committed")
    started = mp.Event()
    victim = procs.start(workers.open_and_idle, q, "victim", started)
    assert started.wait(60)
    token = introspect.token_of(victim.pid)
    kill(victim)
    wait_dead(victim)
    words = introspect.words(q)
    pos = int(words[H_WRITE_POS])
    start = L.HEADER_BYTES + L.SLOT_BYTES * introspect.nslots(q) + pos % q.size
    introspect.mem(q)[start : start + 300] = 0xAB  # garbage where the next record would go
    words[H_LOCK] = token
    t0 = time.monotonic()
    q.append("t", "after recovery", block=True, timer=30)
    recovered_in = time.monotonic() - t0
    assert r.pop() == ("w", "t", "committed")
    assert r.pop() == ("w", "t", "after recovery")
    assert r.pop() is None
    assert q.stats().recoveries == 1
    assert words[H_LOCK] == 0
    print(f"lock recovered after {recovered_in * 1000:.0f} ms")
    r.close()
    q.close()


def test_live_lock_holder_is_waited_for_not_robbed(qname, monkeypatch):
    """A holder that is alive keeps the lock however long it takes; a call that
    may not block gives up after a short patience, without changing anything."""
    introspect.LOCK_PATIENCE.patch(monkeypatch, 0.3)
    q = PySyncQ(qname)
    q.open("w")
    introspect.words(q)[H_LOCK] = introspect.token_of(os.getppid())  # alive, and not us
    with pytest.raises(pysyncq.QueueLocked, match="is locked by process"):
        q.append("t", "m")
    with pytest.raises(pysyncq.QueueLocked, match="is locked by process"):
        q.append("t", "m", block=True, timer=0.5)
    # Pops take no lock: they read on (here: nothing, since nothing went in).
    assert q.pop() is None
    assert q.pop(block=True, timer=0.1) is None
    assert q.stats().recoveries == 0 and q.stats().appended == 0
    introspect.words(q)[H_LOCK] = 0
    q.append("t", "m")
    q.close()


def test_kill_storm(qname, procs, monkeypatch):
    """Writers append 1 MiB records without pause while a killer process
    SIGKILLs them, half of the time the moment one holds the lock; the dead
    are replaced.  The reader (this process) checks every message's checksum
    and each incarnation's order, and must keep receiving throughout.

    The records are large so that the critical section (a memcpy of the
    record, tens of microseconds) is long enough for a kill to land in.  A
    third of the writers copy with the lock held, a third reserve and copy
    outside it, a third write through loans: a writer killed holding a
    reservation is reaped and its record voided, and the reader goes on.
    """
    # Forked writers inherit this: check a silent lock holder sooner.
    introspect.LOCK_CHECK.patch(monkeypatch, 0.02)
    n_writers, size, kills_wanted = 3, 1 << 20, 120
    q = PySyncQ(qname, size=8 * size, slots=16)
    try:
        q.open("reader")
        incarnation = 0

        def spawn():
            nonlocal incarnation
            incarnation += 1
            return procs.start(workers.storm_writer, q, incarnation, incarnation, size - 100)

        writers = [spawn() for _ in range(n_writers)]
        counts = mp.Array("i", 2)
        killer = procs.start(workers.storm_killer, q, kills_wanted, counts, 1)
        checker = workers.StreamChecker("storm reader")
        deadline = time.monotonic() + 150
        last = time.monotonic()
        while killer.exitcode is None:
            now = time.monotonic()
            assert now < deadline, f"only {counts[0]} kills in time"
            assert now - last < 30, f"stalled after {checker.count} messages, {counts[0]} kills"
            m = q.pop(block=True, timer=0.05, decode=False)
            if m is not None:
                checker.check(bytes(m[2]))  # a loan's message is a uint8 array
                last = now
            for i, p in enumerate(writers):
                if p.exitcode is not None:
                    p.join()
                    writers[i] = spawn()
        assert killer.exitcode == 0
        # The replacements keep writing after the storm: the reader still receives.
        before = checker.count
        for _ in range(10):
            m = q.pop(block=True, timer=30, decode=False)
            assert m is not None, "stalled after the storm"
            checker.check(bytes(m[2]))
        s = q.stats()
        print(
            f"kills={counts[0]} (aimed at the lock holder: {counts[1]}), "
            f"messages checked={checker.count}, lock recoveries={s.recoveries}, "
            f"reaped={s.reaped}"
        )
        assert checker.count > before
        assert s.recoveries >= 1, "no kill landed while the lock was held"
    finally:
        procs.reap()  # the writers die without closing: our close reaps them
        q.close()


def test_creator_killed_before_anyone_opened_leaves_a_reclaimable_queue(qname, procs):
    started = mp.Event()
    child = procs.start(_create_and_wait, qname, started)
    assert started.wait(60)
    kill(child)
    child.join(30)
    assert introspect.read_header(qname) is not None  # left behind...
    assert (qname, False) in pysyncq.list_queues()
    with PySyncQ(qname, size=1024) as q:  # ...and reclaimed by the next create
        assert q.size == 1024


def test_whole_group_killed_then_removed_with_remove(qname, procs):
    q = PySyncQ(qname)
    started = [mp.Event() for _ in range(2)]
    children = [procs.start(workers.open_and_idle, q, f"c{i}", e) for i, e in enumerate(started)]
    for e in started:
        assert e.wait(60)
    introspect.crash(q)  # this process "crashes" too: it will not close
    for c in children:
        kill(c)
        c.join(30)
    # The parent is alive and still holds the creator's hold...
    with pytest.raises(pysyncq.QueueExists):
        pysyncq.remove(qname)
    assert pysyncq.remove(qname, force=True)
    assert introspect.read_header(qname) is None
    introspect.unmap(q)


def _create_and_wait(name, started):
    q = PySyncQ(name, size=512)  # noqa: F841 - held until the process is killed
    started.set()
    time.sleep(3600)


def test_members_of_a_dead_process_are_never_confused_with_a_reused_pid():
    """A token names a process by pid and start time."""
    me = introspect.own_token()
    assert introspect.is_alive(me)
    assert not introspect.is_alive(me + (1 << pysyncq.layout.PID_BITS))  # same pid, other start
    assert not introspect.is_alive(0)
    assert introspect.token_pid(me) == os.getpid()


def test_nobody_is_judged_dead_across_namespaces(qname, procs, monkeypatch):
    """A member in another pid or time namespace (a container sharing /dev/shm)
    has pids and start times that mean nothing here: no reaping, no takeover."""
    q = PySyncQ(qname, size=512)
    started = mp.Event()
    victim = procs.start(workers.open_and_idle, q, "victim", started)
    assert started.wait(60)
    real = introspect.namespaces()
    introspect.pretend_namespaces(monkeypatch, (real[0] + 1, real[1]))
    w = PySyncQ(qname, create=False)
    w.open("foreign", reader=False)  # marks the queue as spanning namespaces
    introspect.pretend_namespaces(monkeypatch, real)
    assert introspect.words(q)[pysyncq.layout.H_FLAGS] & pysyncq.layout.F_FOREIGN_NS
    kill(victim)
    wait_dead(victim)
    with pytest.raises(MemoryError):
        while True:
            w.append("fill", "x" * 50)
    with pytest.raises(MemoryError):  # the dead reader is not reaped...
        w.append("fill", "x" * 50, block=True, timer=1.5)
    assert q.stats().reaped == 0
    w.close()
    q.close()
    victim.join()
    assert pysyncq.remove(qname, force=True)  # ...so the segment needs removing by hand


def test_open_and_close_give_up_on_a_live_lock_holder(qname, monkeypatch):
    """A lock word naming a live process that never releases hangs neither
    open() nor close(): both raise QueueLocked after their patience, and the
    closed handle is closed all the same."""
    introspect.OPEN_PATIENCE.patch(monkeypatch, 0.3)
    introspect.CLOSE_PATIENCE.patch(monkeypatch, 0.3)
    q = PySyncQ(qname)
    q.open("w")
    other = PySyncQ(qname, create=False)
    introspect.words(q)[H_LOCK] = introspect.token_of(os.getppid())  # alive, and not us
    with pytest.raises(pysyncq.QueueLocked, match="is locked by process"):
        other.open("late")
    t0 = time.monotonic()
    with pytest.raises(pysyncq.QueueLocked, match="is locked by process"):
        q.close()
    assert time.monotonic() - t0 < 60 and q.closed  # it returned: no hang
    introspect.words(other)[H_LOCK] = 0
    other.close()
    # q's slot is still taken (its process lives): remove the queue by force.
    assert pysyncq.remove(qname, force=True)


def test_namespaces_are_in_place_before_the_magic_word(qname):
    """Segment.create formats everything, the creator's namespaces included,
    before the magic word lets anyone attach."""
    q = PySyncQ(qname)
    header = introspect.read_header(qname)
    assert (header[H_PIDNS], header[H_TIMENS]) == introspect.namespaces() != (0, 0)
    q.close()


def test_a_process_from_another_namespace_is_flagged_before_it_takes_the_lock(qname, monkeypatch):
    """Attaching from another namespace sets F_FOREIGN_NS at once, before the
    first lock acquisition (open), so no holder is judged by a foreign pid."""
    q = PySyncQ(qname)
    q.open("here")
    introspect.pretend_namespaces_cached(monkeypatch, (1, 2))
    other = PySyncQ(qname, create=False)
    assert introspect.words(q)[H_FLAGS] & F_FOREIGN_NS  # before any open()
    monkeypatch.undo()
    other.close()
    q.close()


@pytest.mark.parametrize("call", ["append", "aappend"])
def test_a_deadline_before_the_liveness_look_still_replaces_a_dead_holder(
    qname, procs, monkeypatch, call
):
    """Issue 17 item 2: a process that holds the lock is SIGKILLed; a call
    whose lock deadline falls before the first LOCK_CHECK look (a short
    timer, or a long one mostly spent waiting for space) looks at the holder
    at its deadline, takes the lock over and succeeds, instead of raising
    QueueLocked for a "live" dead process."""
    import asyncio

    q = PySyncQ(qname, size=4096)
    r = PySyncQ(qname, create=False)
    q.open("w")
    r.open("r")
    started = mp.Event()
    holder = procs.start(workers.hold_lock_and_idle, q, started)
    assert started.wait(60)
    assert introspect.words(q)[H_LOCK] == introspect.token_of(holder.pid)
    kill(holder)
    wait_dead(holder)
    timer = 0.05
    # The whole call's lock deadline (its timer, at least LOCK_PATIENCE)
    # comes before the holder has held the lock LOCK_CHECK in its eyes.
    introspect.LOCK_PATIENCE.patch(monkeypatch, timer)
    assert timer < introspect.LOCK_CHECK.get()
    if call == "append":
        q.append("t", "after the kill", block=True, timer=timer)
    else:
        asyncio.run(q.aappend("t", "after the kill", timer=timer))
    assert q.stats().recoveries == 1 and introspect.words(q)[H_LOCK] == 0
    assert r.pop() == ("w", "t", "after the kill")
    r.close()
    q.close()
