"""Deadlock-free sending by default: the inbox (issue 18, finding 5).

A writer blocked for space whose own read cursor holds the space moves its
unread messages into its inbox and goes on; its later reads return them
first, in order, screens applied, nothing lost or doubled.  The tour of the
README then needs no ``send`` helper: the last test runs it for real.
"""

import asyncio
import multiprocessing as mp
import threading

import introspect
import numpy as np
import pytest
import workers
from procs import kill

from pysyncq import PySyncQ, QueueFull

pytestmark = pytest.mark.timeout(120)

SIZE = 4096


def fill(w, n=None, mtype="t"):
    """Append numbered messages with ``w`` until the queue is full (or ``n``)."""
    sent = []
    while n is None or len(sent) < n:
        try:
            w.append(mtype, f"m{len(sent)}")
        except QueueFull:
            break
        sent.append(("w", mtype, f"m{len(sent)}"))
    return sent


def test_a_reader_blocked_by_its_own_unread_messages_writes_at_once(handles):
    q, r, w = handles(SIZE)
    sent = fill(w)
    with pytest.raises(QueueFull):
        w.append("t", "one more")  # r's cursor holds the space
    assert r.append("mine", "x", block=True, timer=5) is not False
    got = []
    while (m := r.pop()) is not None:
        got.append(m)
    assert got == sent  # everything, in order, once; its own message screened (filtself)


def test_what_a_blocked_writer_reads_meanwhile_comes_first_then_the_queue(handles):
    q, r, w = handles(SIZE)
    sent = fill(w)
    for i in range(200):  # more than the queue holds: drained again and again
        r.append("mine", str(i), block=True, timer=5)
    sent += fill(w, 3, mtype="later")  # behind the inbox, in the queue
    got = [r.pop() for _ in range(len(sent))]
    assert got == sent
    assert r.pop() is None


def test_every_read_takes_from_the_inbox_first(handles):
    q, r, w = handles(SIZE)
    sent = fill(w)
    r.append("mine", "x", block=True, timer=5)
    assert introspect.inbox_len(r) > 0
    w.append("t", "after")  # in the queue, behind what the inbox holds
    sent.append(("w", "t", "after"))
    got = [r.pop()]
    got += r.pop_many(3)
    with r.pop_view() as v:
        got.append((v[0], v[1], bytes(v[2]).decode()))
    got += [m for m in r(timer=0)]
    assert got == sent


def test_apop_takes_from_the_inbox_first(handles):
    q, r, w = handles(SIZE)
    sent = fill(w)
    r.append("mine", "x", block=True, timer=5)

    async def read_all():
        out = []
        while (m := await r.apop(timer=0.2)) is not None:
            out.append(m)
        return out

    assert asyncio.run(read_all()) == sent


def test_decode_false_and_arrays_survive_the_inbox(handles):
    q, r, w = handles(1 << 16)
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    w.append("bin", b"\xff\x00")
    w.append_array("arr", arr)
    fill(w)
    r.append("mine", "x", block=True, timer=5)
    assert introspect.inbox_len(r) > 2
    assert r.pop(decode=False) == (b"w", b"bin", b"\xff\x00")
    s, t, got = r.pop()
    assert (s, t) == ("w", "arr") and got.dtype == arr.dtype and np.array_equal(got, arr)


def test_a_view_of_an_inbox_message_that_raises_leaves_it_unread(handles):
    q, r, w = handles(SIZE)
    sent = fill(w)
    r.append("mine", "x", block=True, timer=5)
    with pytest.raises(KeyError):
        with r.pop_view() as v:
            assert bytes(v[2]).decode() == sent[0][2]
            raise KeyError
    with r.pop_view() as v:
        body = v[2]
        assert body.readonly
        assert bytes(body).decode() == sent[0][2]
    with pytest.raises(ValueError):
        bytes(body)  # released with the block, as a view of the queue is
    assert r.pop() == sent[1]


def test_screens_apply_when_moved_and_when_read(handles):
    q, r, w = handles(SIZE)
    r.scrntype.add("noise")
    w.append("noise", "never")
    sent = fill(w)
    r.append("mine", "x", block=True, timer=5)
    r.scrnsend.add("w")  # after the move: still applies
    assert r.pop() is None
    r.scrnsend.discard("w")
    w.append("t", "new")
    assert r.pop() == ("w", "t", "new")
    assert len(sent) > 10


def test_a_reader_that_does_not_hold_the_space_waits_as_before(handles):
    """Another reader is further behind: moving our messages frees nothing."""
    q, r, w = handles(SIZE)
    q.open("slow")  # opened first: behind r once r has read
    fill(w)
    while r.pop() is not None:
        pass
    with pytest.raises(QueueFull, match="'slow'"):
        r.append("mine", "x", block=True, timer=0.3)
    assert introspect.inbox_len(r) == 0


def test_the_inbox_bound_then_the_timer(handles):
    q, r, w = handles(SIZE)
    r.inbox_limit = 200
    fill(w)
    with pytest.raises(QueueFull, match="inbox"):
        r.append("mine", "x" * 1000, block=True, timer=0.3)
    assert 0 < introspect.inbox_bytes(r) <= 200 + 64
    got = []
    while (m := r.pop()) is not None:
        got.append(m)
    assert [b for _, _, b in got] == [f"m{i}" for i in range(len(got))]


def test_no_inbox_when_turned_off_or_without_block(handles):
    q, r, w = handles(SIZE)
    fill(w)
    with pytest.raises(QueueFull):
        r.append("mine", "x")  # block=False never moves anything
    r.inbox_limit = 0
    with pytest.raises(QueueFull, match="this handle itself"):
        r.append("mine", "x", block=True, timer=0.2)
    assert introspect.inbox_len(r) == 0


def test_a_durable_member_has_no_inbox(handles):
    """Its read position is kept for its next run: it is not moved into a
    process that may die with it."""
    q, r, w = handles(SIZE)
    q.open("relay", durable=True)
    while r.pop() is not None:
        pass
    fill(w)
    with pytest.raises(QueueFull):
        q.append("mine", "x", block=True, timer=0.2)
    assert introspect.inbox_len(q) == 0


def test_the_tour_without_a_helper(qname):
    """The README's tour, sends and all blocking on a queue far smaller than
    what goes through it: parent and workers each hold the space in turn."""
    q = PySyncQ(qname, size=2048)
    ps = [mp.Process(target=workers.tour_worker, args=(q, f"w{i}")) for i in range(3)]
    try:
        for p in ps:
            p.start()
        q.open("parent")
        q.wait_for_readers(3, timer=60, processes=ps)
        n = 100
        for i in range(n):
            q.append("task", i, block=True, timer=60)  # every worker gets every task
        q.append("stop", block=True, timer=60)
        results = []
        while len(results) < 3 * n:
            m = q.pop(block=True, timer=60, processes=ps)
            assert m is not None, f"only {len(results)} results"
            results.append(m)
        for p in ps:
            p.join(30)
            assert p.exitcode == 0
        for i in range(3):
            mine = [b for s, t, b in results if s == f"w{i}"]
            assert mine == [f"w{i} squared {k}: {k * k}" for k in range(n)]
    finally:
        for p in ps:
            if p.is_alive():
                kill(p)
        q.close()


# -- Threads and tasks sharing one handle (the review of the inbox) -------------


def test_two_reader_threads_share_the_inbox_without_loss_or_doubles(handles):
    q, r, w = handles(SIZE)
    for _ in range(10):
        sent = fill(w)
        r.append("mine", "x", block=True, timer=5)  # moves all of it to the inbox
        got = []

        def read(got=got):
            while (m := r.pop()) is not None:
                got.append(m[2])

        ts = [threading.Thread(target=read) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert sorted(got, key=lambda b: int(b[1:])) == [b for _, _, b in sent]


def test_a_reader_thread_sees_order_while_a_writer_thread_moves_messages(handles):
    """One thread pops while another thread of the same handle appends to the
    full queue, moving messages to the inbox: the reader sees every message
    of the other writer once, in order, and is woken for the moved ones."""
    q, r, w = handles(SIZE)
    n = 5000
    got = []

    def reader():
        while (m := r.pop(block=True, timer=5)) is not None:
            got.append(int(m[2]))

    def other_writer():
        for i in range(n):
            w.append("t", str(i), block=True, timer=30)

    def own_writer():
        for i in range(n):
            r.append("mine", str(i), block=True, timer=30)

    ts = [threading.Thread(target=f) for f in (reader, other_writer, own_writer)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert got == list(range(n))


def test_an_apop_waiting_is_given_what_a_task_of_its_handle_moved(handles):
    """The usual asyncio shape: a consumer task waits in apop on the handle a
    producer task appends with; the producer's blocked aappend moves the
    queue's messages to the inbox, and the waiting apop returns the first."""
    q, r, w = handles(SIZE)

    async def consumer():
        return await r.apop(timer=10)

    async def producer():
        await asyncio.sleep(0.2)  # the consumer waits in apop now
        sent = fill(w)
        await r.aappend("mine", "x", timer=5)
        return sent

    async def main():
        return await asyncio.gather(consumer(), producer())

    first, sent = asyncio.run(main())
    assert first == sent[0]
    assert [r.pop() for _ in sent[1:]] == sent[1:]


def test_apop_during_a_view_raises_and_loses_nothing(handles):
    q, r, w = handles(SIZE)
    sent = fill(w)
    r.append("mine", "x", block=True, timer=5)
    with r.pop_view() as v:
        with pytest.raises(RuntimeError):
            asyncio.run(r.apop(timer=0.1))
        assert bytes(v[2]).decode() == sent[0][2]
    assert r.pop() == sent[1]
