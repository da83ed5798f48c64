"""Every writer copies large bodies outside the queue lock.

``append``, ``aappend`` and ``extend`` are twins: a body of ``copy_outside``
bytes or more is reserved under the lock, copied outside it and then
published, so that no writer queues behind another's memcpy.  The spy below
watches the kernels that take the lock and the publication: no locked call
may carry a large body, and when a reservation is published (right after its
body was copied) the lock word is free.
"""

import asyncio

import introspect
import numpy as np
import pytest

from pysyncq import PySyncQ, QueueFull, kernels
from pysyncq.layout import H_LOCK

BIG = 1 << 17  # the default copy_outside


@pytest.fixture
def spy(monkeypatch):
    """Record (kernel, body bytes) of every locked write, and the lock word
    seen when each reservation is published."""
    calls = []
    published = []

    def wrap(name, largest):
        real = getattr(kernels, name)

        def spied(mem, lockval, *args):
            calls.append((name, largest(*args)))
            return real(mem, lockval, *args)

        monkeypatch.setattr(kernels, name, spied)

    def extended(slot, sender, mtype, blob, lens, kinds, kind, first, off, count):
        # The largest body of those this call is to write: first..count.
        return int(lens[0]) if len(lens) == 1 else int(max(lens[first:count], default=0))

    wrap("op_append", lambda slot, sender, mtype, body, kind: len(body))
    wrap("op_extend", extended)
    real_reserve = kernels.op_reserve

    def reserve(mem, lockval, *args):
        calls.append(("op_reserve", 0))  # the body's bytes are not passed in
        return real_reserve(mem, lockval, *args)

    monkeypatch.setattr(kernels, "op_reserve", reserve)
    real_publish = kernels.record_publish

    def publish(mem, *args):
        published.append(int(mem.view(np.int64)[H_LOCK]))
        return real_publish(mem, *args)

    monkeypatch.setattr(kernels, "record_publish", publish)
    introspect.call_kernels_by_name(monkeypatch)  # the spied ones
    return calls, published


@pytest.fixture
def pair(qname):
    with PySyncQ(qname, size=4 << 20) as w, PySyncQ(qname, create=False) as r:
        w.open("w")
        r.open("r")
        yield w, r


def body(i, n):
    return bytes([i % 251]) * n


def no_large_body_under_the_lock(calls):
    return [c for c in calls if c[0] != "op_reserve" and c[1] >= BIG]


def test_append_copies_a_large_body_outside_the_lock(pair, spy):
    w, r = pair
    calls, published = spy
    w.append("t", body(1, BIG + 8))
    assert ("op_reserve", 0) in calls and published == [0]
    assert not no_large_body_under_the_lock(calls)
    assert r.pop(decode=False) == (b"w", b"t", body(1, BIG + 8))


def test_aappend_copies_a_large_body_outside_the_lock(pair, spy):
    w, r = pair
    calls, published = spy

    async def send():
        await w.aappend("t", body(2, BIG + 8))
        await w.aappend("t", "small")
        await w.aappend("t", "é" * BIG)  # a str body too

    asyncio.run(send())
    assert published == [0, 0]
    assert not no_large_body_under_the_lock(calls)
    assert r.pop(decode=False) == (b"w", b"t", body(2, BIG + 8))
    assert r.pop() == ("w", "t", "small")
    assert r.pop() == ("w", "t", "é" * BIG)
    assert r.pop() is None


def test_extend_copies_large_bodies_outside_the_lock_in_order(pair, spy):
    w, r = pair
    calls, published = spy
    bodies = [body(0, 10), body(1, BIG), body(2, 20), body(3, 30), body(4, BIG + 1), body(5, 5)]
    assert w.extend("t", bodies) == len(bodies)
    assert published == [0, 0]
    assert not no_large_body_under_the_lock(calls)
    assert [m[2] for m in r.pop_many(10, decode=False)] == bodies
    # All large, all alike in length:
    calls.clear()
    assert w.extend("t", [body(6, BIG), body(7, BIG)]) == 2
    assert not no_large_body_under_the_lock(calls)
    assert [m[2] for m in r.pop_many(10, decode=False)] == [body(6, BIG), body(7, BIG)]


def test_extend_with_large_bodies_on_a_full_queue_says_how_many_went_in(qname):
    with PySyncQ(qname, size=1 << 19) as w, PySyncQ(qname, create=False) as r:
        w.open("w")
        r.open("r")
        bodies = [body(i, BIG) for i in range(6)]  # 6 x 128 KiB > 512 KiB
        with pytest.raises(QueueFull) as e:
            w.extend("t", bodies)
        n = e.value.written
        assert 0 < n < len(bodies)
        got = [m[2] for m in r.pop_many(10, decode=False)]
        assert got == bodies[:n]  # nothing lost, nothing doubled
        assert w.extend("t", bodies[n:]) == len(bodies) - n
        assert [m[2] for m in r.pop_many(10, decode=False)] == bodies[n:]
