"""Large records popped outside the queue lock (views.pop_outside), and
bytes-like bodies appended straight from their buffer.

A pop whose record does not fit the handle's copy buffer and is at least
``copy_outside`` bytes finds the record under the lock with the cursor left at
it (the cursor pins it), copies it once outside the lock straight into what
``pop`` returns, and commits under the lock.  Every pop guarantee must hold:
order, screening, blocking, decoding, one handle shared by threads, and a
reader killed mid-copy pins the record only until it is reaped.
"""

import multiprocessing as mp
import os
import signal
import threading
import time

import introspect
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysyncq import MessageTooLarge, PySyncQ, QueueCorrupt, QueueFull
from pysyncq.layout import KIND_ARRAY

BIG = 1 << 17  # views.COPY_OUTSIDE: large enough to go outside the lock
WAIT = 60


def big_bytes(i, n=BIG + 24):
    return bytes([i % 251]) * (n - 8) + i.to_bytes(8, "little")


@pytest.fixture
def pair(qname):
    with PySyncQ(qname, size=2 << 20) as w, PySyncQ(qname, create=False) as r:
        w.open("w")
        r.open("r")
        yield w, r


@pytest.fixture
def copies(monkeypatch):
    """Count the copies made outside the lock."""
    made = []
    real = introspect.LARGE_COPY.get()

    def counted(buf, kind, decode):
        made.append(len(buf))
        return real(buf, kind, decode)

    introspect.LARGE_COPY.patch(monkeypatch, counted)
    return made


def test_large_and_small_messages_mixed_arrive_in_order_and_equal(pair, copies):
    w, r = pair
    arrays = [
        np.arange(BIG // 8 + 5, dtype=np.float64),
        np.asfortranarray(np.arange(400 * 100, dtype=">i4").reshape(400, 100)),
        np.zeros(20000, np.dtype([("a", "<i2"), ("b", ">f8"), ("c", "S3")], align=True)),
    ]
    sent = []
    for i in range(3):
        w.append("small", f"s{i}")
        sent.append(("w", "small", f"s{i}"))
        w.append_array("arr", arrays[i])
        sent.append(("w", "arr", arrays[i]))
        w.append("text", "é" * (BIG // 2 + i))  # str, 2 bytes a character
        sent.append(("w", "text", "é" * (BIG // 2 + i)))
        w.append("raw", big_bytes(i))
        sent.append(("w", "raw", big_bytes(i)))
    for want in sent:
        got = r.pop()
        assert got[:2] == want[:2]
        if isinstance(want[2], np.ndarray):
            a, b = want[2], got[2]
            assert type(b) is np.ndarray and b.dtype == a.dtype and b.shape == a.shape
            assert b.flags.writeable and b.flags.owndata
            assert b.flags.f_contiguous == a.flags.f_contiguous
            assert a.tobytes("A") == b.tobytes("A")
        else:
            # a bytes body that is valid UTF-8 decodes, as for small messages
            assert got[2] == (want[2].decode() if want[1] == "raw" else want[2])
    assert r.pop() is None
    assert len(copies) == 9  # every large one copied outside, the small ones not
    assert len(introspect.copy_buffer(r)) < BIG  # the copy buffer never grew for them
    assert r.stats().used == 0


def test_decode_false_and_invalid_utf8(pair, copies):
    w, r = pair
    body = b"\xff\xfe" * (BIG // 2)
    w.append("t", body)
    w.append("t", "x" * BIG)
    assert r.pop() == ("w", "t", body)  # not UTF-8: bytes rather than lost
    assert r.pop(decode=False) == (b"w", b"t", b"x" * BIG)
    assert len(copies) == 2


def test_screened_large_records_are_skipped_without_a_copy(pair, qname, copies):
    w, r = pair
    r.scrntype.add("skip")
    with PySyncQ(qname, create=False) as other:
        other.open("o")
        r.scrnsend.add("o")
        w.append("skip", big_bytes(1))
        other.append("any", big_bytes(2))
        w.append_array("skip", np.zeros(BIG))
        w.append("keep", big_bytes(3))
        assert r.pop(decode=False) == (b"w", b"keep", big_bytes(3))
        assert r.pop() is None
    assert copies == [len(big_bytes(3))]
    assert r.stats().members[1].screened == 3


def test_a_blocking_pop_waits_for_a_large_message(pair):
    w, r = pair
    body = big_bytes(7, 3 * BIG)
    t = threading.Timer(0.05, w.append, ("late", body))
    t.start()
    try:
        assert r.pop(block=True, timer=WAIT, decode=False) == (b"w", b"late", body)
    finally:
        t.join(WAIT)
    assert r.pop(block=True, timer=0.01) is None


def test_iteration_and_pop_many_see_large_messages(pair):
    w, r = pair
    for i in range(3):
        w.append("t", big_bytes(i))
    assert [m[2] for m in r(decode=False)] == [big_bytes(i) for i in range(3)]
    w.append("t", big_bytes(5))
    w.append("t", "small")
    assert [m[2] for m in r.pop_many(5, decode=False)] == [big_bytes(5), b"small"]


def test_the_record_is_pinned_while_it_is_copied(pair, monkeypatch):
    """Writers that fill the ring while a reader copies a record outside the
    lock find it full: the record's bytes are not reused under the copy."""
    w, r = pair
    real = introspect.LARGE_COPY.get()
    filled = []

    def copy_after_filling(buf, kind, decode):
        with pytest.raises(QueueFull):
            for i in range(100):
                w.append("fill", big_bytes(i + 100, 100_000))  # under copy_outside
                filled.append(i)
        return real(buf, kind, decode)

    introspect.LARGE_COPY.patch(monkeypatch, copy_after_filling)
    body = big_bytes(42, 3 * BIG)
    w.append("big", body)
    assert r.pop(decode=False) == (b"w", b"big", body)
    assert 10 < len(filled) < 100
    introspect.LARGE_COPY.patch(monkeypatch, real)
    for i in filled:
        assert r.pop(decode=False)[2] == big_bytes(i + 100, 100_000)


def test_a_corrupt_large_array_raises_and_is_passed(pair):
    w, r = pair
    introspect.raw_append(w, b"w", b"bad", b"\0" * (BIG + 8), KIND_ARRAY)
    w.append("t", "next")
    with pytest.raises(QueueCorrupt, match="descriptor"):
        r.pop()
    assert r.pop() == ("w", "t", "next")


def test_an_interrupted_copy_leaves_the_message_unread(pair, monkeypatch):
    w, r = pair

    def interrupted(buf, kind, decode):
        raise KeyboardInterrupt

    body = big_bytes(3)
    w.append("t", body)
    real = introspect.LARGE_COPY.get()
    introspect.LARGE_COPY.patch(monkeypatch, interrupted)
    with pytest.raises(KeyboardInterrupt):
        r.pop()
    introspect.LARGE_COPY.patch(monkeypatch, real)
    assert r.pop(decode=False)[2] == body
    assert r.stats().used == 0


def test_threads_sharing_one_handle_get_each_message_once(pair):
    w, r = pair
    n = 60
    got = [[], []]
    errors = []

    def reader(k):
        try:
            while len(got[0]) + len(got[1]) < n:
                m = r.pop(block=True, timer=0.05, decode=False)
                if m is not None:
                    got[k].append(int.from_bytes(m[2][-8:], "little"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for i in range(n):
        body = big_bytes(i) if i % 3 else i.to_bytes(8, "little")  # large and small
        w.append("t", body, block=True, timer=WAIT)
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads) and not errors
    assert sorted(got[0] + got[1]) == list(range(n))
    assert got[0] == sorted(got[0]) and got[1] == sorted(got[1])


# -- Several processes ----------------------------------------------------------


def read_mixed(q, name, n, ready):
    """Read ``n`` messages, large and small mixed, and check each in order."""
    q.open(name)
    ready.set()
    for i in range(n):
        m = q.pop(block=True, timer=WAIT, decode=False)
        if m is None:
            raise SystemExit(f"{name}: message {i} did not come")
        want = big_bytes(i) if i % 2 else i.to_bytes(8, "little")
        if m[2] != want:
            raise SystemExit(f"{name}: message {i} is wrong ({len(m[2])} bytes)")
    q.close()


def test_several_reader_processes_get_every_message(qname, procs):
    n = 40
    ctx = mp.get_context("fork")
    with PySyncQ(qname, size=1 << 20) as q:
        q.open("w", reader=False)
        ready = [ctx.Event() for _ in range(3)]
        for k in range(3):
            procs.start(read_mixed, q, f"r{k}", n, ready[k])
        assert all(e.wait(WAIT) for e in ready)
        for i in range(n):
            q.append("t", big_bytes(i) if i % 2 else i.to_bytes(8, "little"), True, WAIT)
        procs.join(timeout=WAIT)


def stall_in_copy(q, opened, copying):
    """Open, pop a large record, and stop in the middle of copying it."""
    q.open("stuck")
    opened.set()

    def stall(buf, kind, decode):
        copying.set()
        time.sleep(WAIT)

    introspect.LARGE_COPY.set(stall)
    q.pop(block=True, timer=WAIT)
    raise SystemExit("the stalled copy returned")


def test_a_reader_killed_mid_copy_pins_the_record_only_until_it_is_reaped(qname, procs):
    ctx = mp.get_context("fork")
    with PySyncQ(qname, size=1 << 20) as q:
        q.open("w", reader=False)
        q.reap_interval = 0.2
        opened, copying = ctx.Event(), ctx.Event()
        p = procs.start(stall_in_copy, q, opened, copying)
        with PySyncQ(qname, create=False) as r:
            r.open("r")
            assert opened.wait(WAIT)
            first = big_bytes(1, 3 * BIG)
            q.append("t", first)
            assert copying.wait(WAIT)
            # The record being copied is pinned: the ring fills up behind it.
            assert r.pop(decode=False)[2] == first
            with pytest.raises(QueueFull):
                for i in range(20):
                    q.append("t", big_bytes(i, 100_000))
            os.kill(p.pid, signal.SIGKILL)
            p.join(WAIT)
            # Reaped after reap_interval: the writer gets room again.
            q.append("t", big_bytes(9, 3 * BIG), block=True, timer=WAIT)
            assert q.stats().reaped == 1
            got = [m[2] for m in r(decode=False)]
            assert got[-1] == big_bytes(9, 3 * BIG) and len(got) >= 5


# -- Bytes-like bodies ----------------------------------------------------------


@pytest.mark.parametrize("n", [0, 100, introspect.BUFFER_DIRECT, BIG + 8, 3 * BIG])
def test_bytes_like_bodies_arrive_as_bytes(pair, n):
    w, r = pair
    data = bytes(range(256)) * (n // 256) + bytes(n % 256)
    arr = np.frombuffer(data, np.uint8).copy()
    bodies = [
        bytearray(data),
        memoryview(data),
        memoryview(bytearray(data)),
        memoryview(arr),  # any C-contiguous buffer, through a memoryview
        memoryview(arr.view(np.uint16)) if n % 2 == 0 else memoryview(arr),
        memoryview(arr.reshape(-1, 4)) if n % 4 == 0 else memoryview(arr),
    ]
    for b in bodies:
        w.append("b", b, block=True, timer=WAIT)
        assert r.pop(decode=False) == (b"w", b"b", data)


def test_bytes_like_bodies_are_copied_straight_from_the_buffer(pair, monkeypatch):
    """Large contiguous buffers never go through bytes(): the ring is filled
    from the caller's memory (the wrapper views it, it does not copy it)."""
    w, r = pair
    seen = []
    real = introspect.BUFFER_WRAP.get()

    def spy(msg):
        body = real(msg)
        seen.append(body)
        return body

    introspect.BUFFER_WRAP.patch(monkeypatch, spy)
    src = bytearray(b"x" * (3 * BIG))
    w.append("b", memoryview(src))
    w.append("b", src[: introspect.BUFFER_DIRECT])
    assert all(type(b) is np.ndarray and not b.flags.writeable for b in seen)
    assert np.shares_memory(seen[0], np.frombuffer(src, np.uint8))
    assert r.pop(decode=False)[2] == bytes(src)
    assert r.pop(decode=False)[2] == bytes(introspect.BUFFER_DIRECT * b"x")


def test_a_non_contiguous_memoryview_is_sent_in_c_order(pair):
    w, r = pair
    a = np.arange(BIG, dtype=np.int32).reshape(-1, 64)
    for v in (a[:, ::2], a.T, a[::-1]):
        w.append("b", memoryview(v))
        assert r.pop(decode=False)[2] == v.tobytes()  # as bytes(memoryview) gives


def test_bytes_like_bodies_keep_appends_rules(pair, qname):
    w, r = pair
    with pytest.raises(MessageTooLarge):
        w.append("b", bytearray(4 << 20))
    with pytest.raises(ValueError, match="msgtype"):
        w.append("t" * 70000, bytearray(BIG))
    w.scrntype.add("mine")
    w.append("mine", memoryview(bytearray(BIG)))  # screened by the writer itself
    w.append("mine", memoryview(bytearray(1 << 15)))
    assert w.pop() is None
    assert len(r.pop(decode=False)[2]) == BIG and len(r.pop(decode=False)[2]) == 1 << 15
    with pytest.raises(QueueFull):
        for _ in range(100):
            w.append("b", bytearray(1 << 15))
    released = memoryview(bytearray(BIG))
    released.release()
    with pytest.raises(ValueError):
        w.append("b", released)


# -- Mixed paths against a plain expectation -------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(
                st.just("append"),
                st.sampled_from(["a", "b", "c"]),
                st.one_of(st.integers(0, 300), st.integers(4000, 12000)),
            ),
            st.tuples(st.just("pop"), st.integers(0, 1), st.sampled_from(["pop", "view", "many"])),
        ),
        min_size=1,
        max_size=60,
    ),
    arrays=st.booleans(),
)
def test_large_and_small_pops_keep_order_and_screens_as_the_stream_says(qname, ops, arrays):
    """Records over the (lowered) threshold go outside the lock, the others
    through the buffer; each reader's pops, of every kind, are exactly the
    appended messages its screens keep, in order, across ring wraps."""
    with PySyncQ(qname, size=40000) as w:
        w.open("w", reader=False)
        rs = [PySyncQ(qname, create=False) for _ in range(2)]
        try:
            for k, r in enumerate(rs):
                r.open(f"r{k}")
                r.copy_outside = 4097  # records over the 4 KiB buffer go outside
            rs[0].scrntype.add("b")
            rs[1].scrntype.add("c")
            expect = [[], []]
            seq = 0
            for op in ops:
                if op[0] == "append":
                    _, t, n = op
                    seq += 1
                    body = (seq.to_bytes(4, "little") * (n // 4 + 1))[:n]
                    try:
                        if arrays and n % 2:
                            w.append_array(t, np.frombuffer(body, np.uint8))
                        else:
                            w.append(t, body)
                    except QueueFull:
                        continue
                    for k in range(2):
                        if t not in rs[k].scrntype:
                            expect[k].append((t, body))
                    continue
                _, k, how = op
                r = rs[k]
                if how == "view":
                    with r.pop_view() as m:
                        got = None if m is None else [(m[1], bytes(memoryview(m[2]).cast("B")))]
                elif how == "many":
                    got = [(m[1], bytes(m[2])) for m in r.pop_many(3, decode=False)] or None
                    if got is not None:
                        got = [(t.decode(), b) for t, b in got]
                else:
                    m = r.pop(decode=False)
                    got = None if m is None else [(m[1].decode(), bytes(m[2]))]
                if got is None:
                    assert expect[k] == []  # nothing here stops a reader: None is empty
                    continue
                for item in got:
                    assert expect[k], f"reader {k} got {item[0]!r} that was never sent"
                    assert item == expect[k].pop(0)
            for k, r in enumerate(rs):
                rest = [(m[1].decode(), bytes(m[2])) for m in r(decode=False)]
                assert rest == expect[k]
        finally:
            for r in rs:
                r.close()
