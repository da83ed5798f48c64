"""Deadlock-free sending by default: the inbox (issue 18, finding 5).

A writer blocked for space whose own read cursor holds the space moves its
unread messages into its inbox and goes on; its later reads return them
first, in order, screens applied, nothing lost or doubled.  The tour of the
README then needs no ``send`` helper: the last test runs it for real.
"""

import asyncio
import multiprocessing as mp

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
