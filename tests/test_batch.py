"""Batches: ``extend`` and ``pop_many`` (pysyncq.batch).

First the two batch kernels against the reference model, message by message:
``ring_put_many`` must leave the ring exactly as the same appends one by one
would (the first that does not go in ends the batch), and ``ring_pop_many``
must hand back, through its struct format and run table, exactly what the
same pops one by one would.  Then the queue: every body by ``append``'s rules,
``pop_many`` giving what ``pop`` gives for every kind, counts on ``QueueFull``,
``MessageTooLarge`` and a busy lock, threads sharing one handle, and real
processes.
"""

import copy
import struct
import threading
import time
import warnings

import introspect
import numpy as np
import pytest
import test_fuzz
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_kernels import CAPS, Pair, body_of, code, starts

from pysyncq import MessageTooLarge, PySyncQ, QueueFull, QueueLocked
from pysyncq import kernels as K
from pysyncq import layout as L

NAMES = [b"", b"a", b"bob", "jürgen".encode()]
TYPES = [b"", b"t", b"type-2"]
NONE = np.zeros(0, np.int64)

# -- ring_put_many against appends one by one ------------------------------------


def _lag(p, data, readers):
    """Some traffic first, so that readers lag and the ring is partly used."""
    w = p.active(reader=False)[0]
    for k in range(data.draw(st.integers(0, 12))):
        n = data.draw(st.integers(0, p.rig.cap // 3))
        p.append(w, p.rig.tokens[w], b"w", b"x", body_of(n, 1000 + k), L.KIND_BYTES)
        for r in readers:
            if data.draw(st.booleans()):
                p.pop(r, p.rig.tokens[r])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    cap=st.sampled_from(CAPS),
    which=st.integers(0, 4),
    sender=st.sampled_from(NAMES),
    mtype=st.sampled_from(TYPES),
    sizes=st.lists(st.integers(0, 90), min_size=1, max_size=12),
    uniform=st.booleans(),
    mixed=st.booleans(),
    skip=st.booleans(),
    first=st.integers(0, 3),
    waiting=st.booleans(),
    self_reader=st.booleans(),
)
def test_put_many_matches_appends_one_by_one(
    data, cap, which, sender, mtype, sizes, uniform, mixed, skip, first, waiting, self_reader
):
    p = Pair(cap, 4, starts(cap)[which])
    readers = [p.open(True), p.open(True)]
    p.open(False)
    me = p.open(self_reader)
    _lag(p, data, readers)
    if waiting:
        p.set_waiting(readers[0], L.W_DATA)
    if uniform:
        sizes = [sizes[0]] * len(sizes)
    bodies = [body_of(n, k) for k, n in enumerate(sizes)]
    kinds = [L.KIND_STR if (k % 2 and mixed) else L.KIND_BYTES for k in range(len(bodies))]
    flag = L.APPEND_SKIP if skip else 0
    first = min(first, len(bodies) - 1)
    blob = b"".join(bodies)
    off = sum(sizes[:first])
    lens = np.array(sizes[:1] if uniform else sizes, np.int64)
    karr = np.array(kinds, np.int64) | flag if mixed else NONE
    rig, model = p.rig, p.model
    before = p._before()
    status, n, off2 = K.ring_put_many(
        rig.w, rig.mem, me, rig.tokens[me], sender, mtype, blob, lens, karr,
        L.KIND_BYTES | flag, first, off, len(bodies),
    )  # fmt: skip
    expected = L.OK
    done = 0
    for body, kind in zip(bodies[first:], kinds[first:], strict=True):
        expected = model.append(me, rig.tokens[me], sender, mtype, body, kind, skip)
        if expected != L.OK:
            break
        done += 1
    assert (code(status), n) == (expected, done)
    assert off2 == off + sum(sizes[first : first + done])
    if expected == L.FULL:
        assert status >> L.SEQ_SHIFT == int(rig.w[L.H_SPACE_SEQ]) & 0xFFFFFFFF
        assert rig.head == model.min_cursor()  # so the next move of it wakes the writer
        p.full = (status >> L.SEQ_SHIFT, model.min_cursor())
    else:
        assert status >> L.SEQ_SHIFT == 0
    assert bool(status & L.WAKE_DATA) == (done > 0 and waiting)
    p._step(status, before, False, False)  # the ring, byte for byte, as the model has it


def test_put_many_refuses_a_body_outside_the_blob():
    p = Pair(256, 2, 0)
    w = p.open(False)
    rig = p.rig
    lens = np.array([4, 9], np.int64)
    status, n, off = K.ring_put_many(
        rig.w, rig.mem, w, rig.tokens[w], b"", b"", b"12345678", lens, NONE, 1, 0, 0, 2
    )
    assert (code(status), n, off) == (L.TOO_LARGE, 1, 4)
    p.model.append(w, rig.tokens[w], b"", b"", b"1234", L.KIND_STR)
    p.check()


# -- ring_pop_many against pops one by one ----------------------------------------


def unpack(out, fmt, flen, segs, nsegs):
    """What the kernel's format and run table describe: ``(sender, type,
    body, kind)`` per message, as bytes (an array body sliced from ``out``)."""
    items = struct.unpack_from(bytes(fmt[:flen]), out)
    msgs, i, s, t = [], 0, None, None
    for r in range(nsegs):
        c, new, at, length = segs[4 * r : 4 * r + 4].tolist()
        if new:
            s, t = items[i], items[i + 1]
            i += 2
        if length >= 0:
            assert c == 1
            msgs.append((s, t, bytes(out[at : at + length]), L.KIND_ARRAY))
            continue
        for body in items[i : i + c]:
            msgs.append((s, t, body, None))
        i += c
    assert i == len(items)
    return msgs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    cap=st.sampled_from(CAPS),
    which=st.integers(0, 4),
    msgs=st.lists(
        st.tuples(
            st.sampled_from(NAMES[:3]),
            st.sampled_from(TYPES),
            st.integers(0, 24) | st.integers(0, 60),
            st.sampled_from([L.KIND_STR, L.KIND_BYTES, L.KIND_ARRAY]),
            st.integers(0, 4).map(lambda x: x == 0),  # pop one after this append
        ),
        min_size=2,
        max_size=40,
    ),
    senders=st.lists(st.sampled_from(NAMES), max_size=2, unique=True),
    types=st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
    tight=st.booleans(),
)
def test_pop_many_matches_pops_one_by_one(data, cap, which, msgs, senders, types, tight):
    """Messages from several senders (with pops in between, so that the ring
    wraps), then one ring_pop_many: the same messages, screens and counts as
    pops one by one, stopping where the buffer, the format, the run table or
    ``limit`` runs out."""
    p = Pair(cap, 3, starts(cap)[which])
    r, w = p.open(True), p.open(False)
    rig, model = p.rig, p.model
    for k, (s, t, n, kind, pop) in enumerate(msgs):
        n = min(n, max(0, cap - 16 - len(s) - len(t)))
        if code(p.append(w, rig.tokens[w], s, t, body_of(n, k), kind)) == L.FULL or pop:
            p.pop(r, rig.tokens[r])
    # Room for everything, or (tight) little room in one or more of the
    # buffer, the format, the run table and the count.
    draw = (lambda big, low, high: data.draw(st.integers(low, high))) if tight else max
    out = np.zeros(draw(4096, 0, 200), np.uint8)
    fmt = np.zeros(K.FMT_PER_MESSAGE * draw(40, 0, 6) + draw(0, 0, 47), np.uint8)
    segs = np.zeros(K.SEG_WORDS * draw(40, 0, 6), np.int64)
    limit = draw(40, 0, 12)
    scr = introspect.screen_table(senders, types)
    before = p._before()
    status, count, flen, nsegs, arrays = K.ring_pop_many(
        rig.w, rig.mem, r, rig.tokens[r], scr, out, fmt, segs, limit
    )
    # The model, one pop at a time, with the kernel's rules for what fits:
    # room in fmt and segs is checked before each message, the buffer after.
    want, at, fp, prev, runs, expected = [], 0, 0, None, 0, L.OK
    while len(want) < limit:
        if fp + K.FMT_PER_MESSAGE > len(fmt) or K.SEG_WORDS * (runs + 1) > len(segs):
            break
        got, msg = copy.deepcopy(model).pop(r, rig.tokens[r], senders, types)
        if got != L.OK:
            expected = model.pop(r, rig.tokens[r], senders, types)[0]
            break
        s, t, body, kind = msg
        same = prev == (s, t)
        # The sender and type need no room when they are the previous ones.
        room_ = len(out) - at + (len(s) + len(t) if same else 0)
        got, msg = model.pop(r, rig.tokens[r], senders, types, room_)
        if got != L.OK:
            expected = got
            break
        at += len(body) + (0 if same else len(s) + len(t))
        fp += len(b"%ds" % len(body)) + (0 if same else len(b"%ds%ds" % (len(s), len(t))))
        runs += not same or kind == L.KIND_ARRAY or bool(want and want[-1][3])
        prev = (s, t)
        want.append((s, t, body, kind == L.KIND_ARRAY))
    assert code(status) == expected
    assert count == len(want) and nsegs == runs
    assert arrays == sum(1 for m in want if m[3])
    if expected == L.NEED_SPACE:
        _, (s, t, body, _) = copy.deepcopy(model).pop(r, rig.tokens[r], senders, types)
        assert status >> L.SEQ_SHIFT == len(s) + len(t) + len(body)
    elif expected == L.EMPTY:
        assert status >> L.SEQ_SHIFT == p.model.appends & 0xFFFFFFFF
    assert flen == fp
    got = unpack(out, fmt, flen, segs, nsegs)
    assert [(s, t, b, k == L.KIND_ARRAY) for s, t, b, k in got] == want
    event(f"{min(len(want), 9)} popped")
    event(f"ended by {expected}")
    if any(a[3] and b[:2] == a[:2] and not b[3] for a, b in zip(want, want[1:], strict=False)):
        event("an array, then a message with the same sender and type")
    p._step(status, before, False, False)


def test_pop_many_shares_one_copy_of_a_repeated_sender_and_type():
    p = Pair(512, 2, 0)
    r, w = p.open(True), p.open(False)
    rig = p.rig
    for k, (s, t) in enumerate([(b"a", b"t"), (b"a", b"t"), (b"b", b"t"), (b"b", b"t")]):
        p.append(w, rig.tokens[w], s, t, b"%d" % k, L.KIND_BYTES)
    out, fmt = np.zeros(64, np.uint8), np.zeros(400, np.uint8)
    segs = np.zeros(40, np.int64)
    status, count, flen, nsegs, arrays = K.ring_pop_many(
        rig.w, rig.mem, r, rig.tokens[r], introspect.screen_table([], []), out, fmt, segs, 10
    )
    assert (code(status), count, nsegs, arrays) == (L.EMPTY, 4, 2, 0)
    assert bytes(fmt[:flen]) == b"1s1s1s1s1s1s1s1s"
    assert bytes(out[:8]) == b"at01bt23"
    assert segs[:8].tolist() == [2, 1, 0, -1, 2, 1, 0, -1]
    for _ in range(4):
        p.model.pop(r, rig.tokens[r])
    p.check()


# -- The queue ---------------------------------------------------------------------


@pytest.fixture
def pair(qname):
    with PySyncQ(qname, size=1 << 16) as w, PySyncQ(qname, create=False) as r:
        w.open("w")
        r.open("r")
        yield w, r


class Loud(str):
    def __str__(self):
        return "loud!"


class Mute:
    def __str__(self):
        return "mute"


def _bodies():
    return [
        "a",
        "",
        "é" * 3,
        b"\xff\xfe",  # not UTF-8
        b"",
        bytearray(b"ba"),
        memoryview(b"mv"),
        memoryview(np.arange(3, dtype=np.int32)),  # 12 bytes, 3 items
        7,
        Mute(),
        Loud("quiet"),
        np.arange(3),  # as text, with the warning
        "x" * 300,
    ]


def test_every_body_follows_appends_rules(pair):
    w, r = pair
    warnings.simplefilter("ignore", UserWarning)  # an ndarray sent as text (append's rule)
    bodies = _bodies()
    for b in bodies:
        w.append("t", b)
    one_by_one = [r.pop(decode=False) for _ in bodies]
    assert w.extend("t", bodies) == len(bodies)
    assert w.extend("t", iter(bodies)) == len(bodies)  # any iterable
    assert r.pop_many(100, decode=False) == one_by_one * 2
    assert w.extend("t", "abc") == 3  # a str is an iterable of characters
    assert r.pop_many(10) == [("w", "t", "a"), ("w", "t", "b"), ("w", "t", "c")]


@pytest.mark.parametrize("n", [1, 2, 3, 100])
@pytest.mark.parametrize("decode", [True, False])
def test_pop_many_gives_what_pop_gives_for_every_kind(qname, decode, n):
    """Two readers with the same screens: one pops, one pops in batches of n."""
    with (
        PySyncQ(qname, size=1 << 16) as w,
        PySyncQ(qname, create=False) as x,
        PySyncQ(qname, create=False) as a,
        PySyncQ(qname, create=False) as b,
    ):
        w.open("w", filtself=False)
        x.open(b"x\xff", reader=False)  # a sender that is not UTF-8
        a.open("a")
        b.open("b")
        for r in (a, b):
            r.scrntype.add("hidden")
            r.scrnsend.add("w")
            r.scrnsend.discard("w")  # the screens changed once: rebuilt, not stale
        w.extend("t", ["s", b"b", b"\xff", "\u00e9", ""])
        w.append_array("arr", np.arange(3.0))
        w.extend("hidden", ["no"] * 3)
        w.append_array("arr", np.zeros((2, 2), ">i2"))
        w.append_array("arr", np.zeros(0))
        x.extend(b"\xfe", ["from x", b"\x80"])
        w.extend("t", ["tail"] * 5)
        w.append("t", "last")
        expected = []
        while (m := a.pop(decode=decode)) is not None:
            expected.append(m)
        got = []
        while chunk := b.pop_many(n, decode=decode):
            assert len(chunk) <= n
            got += chunk
        assert len(got) == len(expected) == 16
        for g, e in zip(got, expected, strict=True):
            assert [type(f) for f in g] == [type(f) for f in e]
            assert g[:2] == e[:2]
            if isinstance(e[2], np.ndarray):
                assert g[2].dtype == e[2].dtype and np.array_equal(g[2], e[2])
                assert g[2].flags.writeable and g[2].flags.owndata == e[2].flags.owndata
            else:
                assert g[2] == e[2]


def test_pop_many_in_batches_gives_the_stream_in_order(pair):
    w, r = pair
    sent = []
    for k in range(40):
        bodies = [f"{k}-{i}" for i in range(k % 7)]
        mtype = "t" if k % 3 else "u"
        w.extend(mtype, bodies)
        sent += [("w", mtype, b) for b in bodies]
    got = []
    for n in [1, 5, 2, 50, 3, 1000]:
        got += r.pop_many(n)
    got += r.pop_many(1000)
    assert got == sent


def test_pop_many_leaves_the_garbage_collector_as_it_found_it(pair):
    # pop_many holds the collector off while it builds its tuples; it must
    # switch it back on afterwards, leave it off if the caller had it off,
    # and switch it back on when the pop raises.
    import gc

    w, r = pair
    seen = []
    real = introspect.BATCH_POP.get()

    def spy(*args):
        seen.append(gc.isenabled())
        return real(*args)

    was = gc.isenabled()
    try:
        gc.enable()
        w.extend("t", ["a"] * 2100)
        introspect.BATCH_POP.set(spy)
        assert len(r.pop_many(4096)) == 2100
        assert seen == [False] and gc.isenabled()
        gc.disable()
        w.extend("t", ["b"] * 10)
        assert len(r.pop_many(4096)) == 10
        assert seen == [False, False] and not gc.isenabled()
        gc.enable()

        def boom(*args):
            raise KeyError("boom")

        introspect.BATCH_POP.set(boom)
        with pytest.raises(KeyError):
            r.pop_many(10)
        assert gc.isenabled() and introspect.gc_holds() == 0
    finally:
        introspect.BATCH_POP.set(real)
        gc.enable() if was else gc.disable()


def test_pop_many_is_refused_while_a_pop_view_is_open(pair):
    w, r = pair
    w.extend("t", ["a", "b"])
    with r.pop_view() as m:
        assert bytes(m[2]) == b"a"
        with pytest.raises(RuntimeError, match="pop_view"):
            r.pop_many(5)
    assert r.pop_many(5) == [("w", "t", "b")]


def test_bad_arguments_are_refused_and_nothing_is_written(pair):
    w, r = pair
    with pytest.raises(TypeError):
        r.pop_many("3")
    with pytest.raises(ValueError):
        r.pop_many(-1)
    with pytest.raises(ValueError):
        w.extend("t", ["a"], timer=-1)
    with pytest.raises(ValueError):
        w.extend("x" * 70000, ["a"])
    with pytest.raises(TypeError):
        w.extend("t", 5)  # not iterable
    assert r.pop_many(10) == []


def test_queue_full_partway_counts_exactly_then_block_true_writes_all(qname):
    with PySyncQ(qname, size=4096) as w, PySyncQ(qname, create=False) as r:
        w.open("w", reader=False)
        r.open("r")
        bodies = [b"%05d" % i + b"." * 59 for i in range(200)]  # 64 B: 80 B records
        with pytest.raises(QueueFull) as info:
            w.extend("d", bodies)
        n = info.value.written
        assert n == 4096 // 88  # 16 + 1 + 1 + 64 = 82 -> 88 ring bytes
        got = r.pop_many(1000, decode=False)
        assert [m[2] for m in got] == bodies[:n]
        # Blocking: a reader drains meanwhile, so everything goes in, in order.
        received = []
        deadline = time.monotonic() + 60

        def drain():
            while len(received) < 1000 and time.monotonic() < deadline:
                received.extend(m[2] for m in r.pop_many(64, True, 0.05, False))

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        try:
            many = [b"%05d" % i + b"." * 59 for i in range(1000)]
            assert w.extend("d", many, block=True, timer=30) == 1000
        finally:
            t.join(60)
        assert not t.is_alive()
        assert received == many


def test_block_true_that_times_out_partway_counts_exactly(qname):
    with PySyncQ(qname, size=1024) as w, PySyncQ(qname, create=False) as r:
        w.open("w", reader=False)
        r.open("r")
        t0 = time.monotonic()
        with pytest.raises(QueueFull) as info:
            w.extend("d", [b"x" * 40] * 100, block=True, timer=0.2)
        assert time.monotonic() - t0 >= 0.2
        n = info.value.written
        assert 0 < n < 100
        assert len(r.pop_many(1000)) == n


def test_a_batch_straddling_the_ring_end_comes_back_whole(qname):
    for shift in range(0, 120, 8):
        with PySyncQ(qname, size=1024) as w, PySyncQ(qname, create=False) as r:
            w.open("w", reader=False)
            r.open("r")
            w.append("t", "." * shift)  # move the write position
            r.pop()
            for k in range(5):
                bodies = [f"{shift}/{k}/{i}" * (1 + i % 3) for i in range(12)]
                assert w.extend("t", bodies) == 12
                assert [m[2] for m in r.pop_many(100)] == bodies


def _hold_lock(q, seconds):
    """Make the queue lock look held by this (live) process for ``seconds``."""
    w = introspect.words(q)
    w[L.H_LOCK] = introspect.own_token()
    time.sleep(seconds)
    w[L.H_LOCK] = 0


def test_a_busy_lock_is_waited_for_with_the_batch(pair):
    w, r = pair
    t = threading.Thread(target=_hold_lock, args=(w, 0.2))
    t.start()
    time.sleep(0.05)
    try:
        assert w.extend("t", [str(i) for i in range(50)]) == 50
    finally:
        t.join(10)
    t = threading.Thread(target=_hold_lock, args=(w, 0.2))
    t.start()
    time.sleep(0.05)
    try:
        got = r.pop_many(100)
    finally:
        t.join(10)
    assert [m[2] for m in got] == [str(i) for i in range(50)]


def test_a_lock_never_released_raises_queue_locked_with_the_count(pair):
    w, r = pair
    introspect.words(w)[L.H_LOCK] = introspect.own_token()  # "held" by a live process
    try:
        with pytest.raises(QueueLocked) as info:
            w.extend("t", ["a", "b"])
        assert info.value.written == 0
        with pytest.raises(QueueLocked):
            r.pop_many(5)
    finally:
        introspect.words(w)[L.H_LOCK] = 0
    assert w.extend("t", ["c"]) == 1
    assert [m[2] for m in r.pop_many(5)] == ["c"]


def test_two_threads_share_one_handle(qname):
    """One reader handle used by two threads (its m.lock): nothing lost or
    doubled, each thread's share in order."""
    with PySyncQ(qname, size=1 << 16) as w, PySyncQ(qname, create=False) as r:
        w.open("w", reader=False)
        r.open("r")
        total = 20000
        seen = [[], []]
        done = threading.Event()

        def reader(k):
            while True:
                got = r.pop_many(37, True, 0.05)
                seen[k].extend(int(m[2]) for m in got)
                if not got and done.is_set():
                    return

        threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in (0, 1)]
        for t in threads:
            t.start()
        try:
            for i in range(0, total, 100):
                w.extend("t", [str(j) for j in range(i, i + 100)], block=True, timer=30)
        finally:
            done.set()
            for t in threads:
                t.join(30)
        assert not any(t.is_alive() for t in threads)
        for s in seen:
            assert s == sorted(s)
        assert sorted(seen[0] + seen[1]) == list(range(total))


def batch_writer(q, count, k):
    with q.open("w", reader=False):
        for i in range(0, count, k):
            q.extend("d", [b"%08d" % j for j in range(i, min(count, i + k))], True, 30)


def batch_reader(q, count, started):
    got = []
    with q.open("r"):
        started.set()
        while len(got) < count:
            ms = q.pop_many(1000, True, 30, False)
            if not ms:
                raise SystemExit(f"nothing within 30 s after {len(got)} messages")
            got += ms
        if [m[2] for m in got] != [b"%08d" % j for j in range(count)]:
            raise SystemExit("messages lost, doubled or out of order")
        if {m[:2] for m in got} != {(b"w", b"d")}:
            raise SystemExit("wrong sender or type")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_exchange_batches_in_order(qname, procs, method):
    with PySyncQ(qname, size=8192) as q:  # small: the writer blocks on a full queue often
        import multiprocessing as mp

        started = mp.get_context(method).Event()
        reader = procs.start(batch_reader, q, 30000, started, method=method)
        assert started.wait(60)
        writer = procs.start(batch_writer, q, 30000, 77, method=method)
        procs.join([writer, reader], timeout=120)


def test_message_too_large_partway_counts_exactly(pair):
    w, r = pair
    with pytest.raises(MessageTooLarge) as info:
        w.extend("t", ["ok", "x" * 70000, "never"])
    assert info.value.written == 1
    assert [m[2] for m in r.pop_many(5)] == ["ok"]


def test_an_array_record_is_a_run_of_its_own():
    p = Pair(512, 2, 0)
    r, w = p.open(True), p.open(False)
    rig = p.rig
    kinds = [L.KIND_BYTES, L.KIND_ARRAY, L.KIND_BYTES, L.KIND_ARRAY, L.KIND_ARRAY]
    for k, kind in enumerate(kinds):
        p.append(w, rig.tokens[w], b"a", b"t", b"%d" % k, kind)
    out, fmt = np.zeros(64, np.uint8), np.zeros(400, np.uint8)
    segs = np.zeros(40, np.int64)
    status, count, flen, nsegs, arrays = K.ring_pop_many(
        rig.w, rig.mem, r, rig.tokens[r], introspect.screen_table([], []), out, fmt, segs, 10
    )
    assert (code(status), count, nsegs, arrays) == (L.EMPTY, 5, 5, 3)
    assert bytes(fmt[:flen]) == b"1s1s1s1x1s1x1x"
    assert segs[:20].tolist() == [1, 1, 0, -1, 1, 0, 3, 1, 1, 0, 0, -1, 1, 0, 5, 1, 1, 0, 6, 1]
    assert unpack(out, fmt, flen, segs, nsegs) == [
        (b"a", b"t", b"0", None),
        (b"a", b"t", b"1", L.KIND_ARRAY),
        (b"a", b"t", b"2", None),
        (b"a", b"t", b"3", L.KIND_ARRAY),
        (b"a", b"t", b"4", L.KIND_ARRAY),
    ]
    for _ in kinds:
        p.model.pop(r, rig.tokens[r])
    p.check()


# -- A corrupt segment (test_fuzz.py's trials, with batches) -------------------------


class BatchTrial(test_fuzz.Trial):
    """test_fuzz's trial with batches in the history and among the calls on
    the corrupt queue: no value in the segment may crash, hang or raise a
    foreign exception from extend or pop_many either."""

    def build(self):
        super().build()
        rng = self.rng
        for i, q in enumerate(self.handles):  # more history, in batches
            bodies = [self.message(self.cap)[1] for _ in range(rng.randrange(0, 12))]
            self.call(f"h{i}.extend(build)", q.extend, "b", bodies)
            if introspect.reads(q) and rng.random() < 0.7:
                q.pop_many(rng.randrange(1, 8))

    def exercise(self):
        for i, q in enumerate(self.handles):
            if introspect.reads(q):
                self.call(f"h{i}.pop_many", q.pop_many, 50)
                self.call(f"h{i}.pop_many(raw)", q.pop_many, 3, decode=False)
                self.call(f"h{i}.pop_many(block)", q.pop_many, 50, block=True, timer=0.005)
            bodies = [self.message(self.cap)[1] for _ in range(self.rng.randrange(1, 9))]
            self.call(f"h{i}.extend", q.extend, "t", bodies)
        super().exercise()


def test_fuzz_segment_with_batches(qname, monkeypatch):
    monkeypatch.setattr(test_fuzz, "Trial", BatchTrial)  # the forked children inherit it
    test_fuzz._fuzz(qname, 150)
