"""The public API beyond the guide: errors for bad input, context managers,
screening sets, statistics, pickling and the module functions.

Every bad call must raise its specific exception and leave the queue working:
``assert_still_works`` runs a message through afterwards.
"""

import fractions
import math
import os
import pickle
import time

import introspect
import numpy as np
import pytest

import pysyncq
from pysyncq import (
    MessageTooLarge,
    NotAQueue,
    NotOpened,
    PySyncQ,
    PySyncQError,
    QueueClosed,
    QueueExists,
    QueueFull,
    ScreenSet,
    TooManyProcesses,
)
from pysyncq import layout as L


@pytest.fixture
def pair(qname):
    a = PySyncQ(qname, size=1024)
    b = PySyncQ(qname, create=False)
    a.open("a")
    b.open("b")
    yield a, b
    b.close()
    a.close()


def assert_still_works(a, b):
    for _ in a:
        pass
    for _ in b:
        pass
    a.append("check", "still works")
    assert b.pop() == ("a", "check", "still works")
    assert a.stats().used == 0 or a.pop() is None


# -- Construction -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"name": 42}, TypeError, "name must be a str"),
        ({"name": ""}, ValueError, "invalid queue name"),
        ({"name": "/"}, ValueError, "invalid queue name"),
        ({"name": "a/b"}, ValueError, "invalid queue name"),
        ({"name": "nul\0"}, ValueError, "invalid queue name"),
        ({"name": ".."}, ValueError, "invalid queue name"),
        ({"name": "x" * 251}, ValueError, "limit is 250"),
        ({"size": -1}, ValueError, "size must be between"),
        ({"size": 0}, ValueError, "size must be between"),
        ({"size": 63}, ValueError, "size must be between"),
        ({"size": 1 << 41}, ValueError, "size must be between"),
        ({"size": "big"}, TypeError, "size must be an int"),
        ({"size": 1.5}, TypeError, "size must be an int"),
        ({"size": True}, TypeError, "size must be an int"),
        ({"slots": 0}, ValueError, "slots must be between"),
        ({"slots": None}, TypeError, "slots must be an int"),
        ({"start": "teleport"}, ValueError, "start must be"),
    ],
)
def test_bad_constructor_arguments(qname, kwargs, exc, match):
    kwargs = {"name": qname, **kwargs}
    with pytest.raises(exc, match=match):
        PySyncQ(**kwargs)


def test_size_is_usable_capacity_rounded_up_to_8(qname):
    with PySyncQ(qname, size=100) as q:
        assert q.size == 104
        assert q.max_message == 104 - 16
        expected = L.HEADER_BYTES + L.SLOT_BYTES * pysyncq.DEFAULT_SLOTS + 104
        assert os.path.getsize(f"/dev/shm/{qname}") == expected


def test_numpy_integer_size_is_accepted(qname):
    with PySyncQ(qname, size=np.int64(4096)) as q:
        assert q.size == 4096


def test_name_none_makes_a_unique_name():
    with PySyncQ() as a, PySyncQ() as b:
        assert a.name != b.name
        assert a.name.startswith("psq_")


def test_leading_slash_is_allowed(qname):
    with PySyncQ("/" + qname) as q:
        assert q.name == qname


def test_create_on_a_live_queue_raises_queue_exists(qname):
    with PySyncQ(qname) as q:
        q.open("a")
        with pytest.raises(QueueExists, match="in use by a live process") as e:
            PySyncQ(qname)
        assert isinstance(e.value, FileExistsError)
        q.append("still", "works")
        assert q.stats().appended == 1


def test_create_on_foreign_shared_memory_raises_and_does_not_touch_it(qname):
    fd = introspect.shm_open(qname, os.O_CREAT | os.O_EXCL | os.O_RDWR)
    try:
        os.write(fd, b"not a queue" * 100)
        with pytest.raises(QueueExists, match="not a pysyncq queue"):
            PySyncQ(qname)
        with pytest.raises(NotAQueue, match="not a pysyncq queue") as e:
            PySyncQ(qname, create=False)
        assert isinstance(e.value, ValueError)
        with pytest.raises(NotAQueue):
            pysyncq.remove(qname)
        assert os.pread(fd, 11, 0) == b"not a queue"
    finally:
        os.close(fd)
        introspect.remove_shm(qname)


def test_attach_to_a_missing_queue_raises_file_not_found(qname):
    with pytest.raises(FileNotFoundError, match="create it first"):
        PySyncQ(qname, create=False)


# -- Membership ---------------------------------------------------------------------


def test_use_before_open_raises_not_opened(qname):
    with PySyncQ(qname) as q:
        for call in (q.pop, q.append, lambda: list(q), lambda: q(block=True)):
            with pytest.raises(NotOpened, match=r"call open\(\)"):
                call()
        q.open("a")
        q.append("t", "m")


def test_use_after_close_raises_queue_closed(qname):
    q = PySyncQ(qname)
    q.open("a")
    q.close()
    assert q.closed
    for call in (q.pop, q.append, q.open, q.stats, lambda: list(q), lambda: q.wait_for_readers(1)):
        with pytest.raises(QueueClosed, match="closed"):
            call()
    q.close()  # closing twice is harmless


def test_open_twice_raises(pair):
    a, b = pair
    with pytest.raises(RuntimeError, match="already open"):
        a.open("again")
    assert a.sender == "a"
    assert_still_works(a, b)


@pytest.mark.parametrize(
    ("sender", "exc", "match"),
    [
        (42, TypeError, "sender must be a str or bytes"),
        (["a"], TypeError, "sender must be a str or bytes"),
        ("s" * 65536, ValueError, "limit is 65535"),
        (b"s" * 65536, ValueError, "limit is 65535"),
    ],
)
def test_bad_sender(qname, sender, exc, match):
    with PySyncQ(qname) as q:
        with pytest.raises(exc, match=match):
            q.open(sender)
        q.open("ok")  # the failed open changed nothing
        assert q.sender == "ok"


def test_longest_sender_and_type_work(qname):
    with PySyncQ(qname, size=1 << 18) as a, PySyncQ(qname, create=False) as b:
        a.open("s" * 65535)
        b.open("b")
        a.append("t" * 65535, "body")
        assert b.pop() == ("s" * 65535, "t" * 65535, "body")


def test_bytes_sender_is_returned_decoded(pair, qname):
    with PySyncQ(qname, create=False) as c:
        c.open(b"bytes-sender")
        c.append("t", "m")
        a, b = pair
        assert b.pop() == ("bytes-sender", "t", "m")
        assert a.pop() == ("bytes-sender", "t", "m")


def test_too_many_processes(qname):
    with (
        PySyncQ(qname, slots=2) as a,
        PySyncQ(qname, create=False) as b,
        PySyncQ(qname, create=False) as c,
    ):
        a.open("a")
        b.open("b")
        with pytest.raises(TooManyProcesses, match="all 2 slots"):
            c.open("c")
        b.close()
        c.open("c")  # a freed slot is reused


def test_writer_only_handle_cannot_pop_and_pins_nothing(qname):
    with PySyncQ(qname, size=256) as w, PySyncQ(qname, create=False) as r:
        w.open("w", reader=False)
        r.open("r")
        with pytest.raises(NotOpened, match="reader=False"):
            w.pop()
        with pytest.raises(NotOpened, match="reader=False"):
            list(w)
        for i in range(100):  # ten times the capacity: only r has to keep up
            w.append("n", i)
            assert r.pop() == ("w", "n", str(i))


# -- Messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timer", "exc", "match"),
    [
        (-1, ValueError, ">= 0 seconds"),
        (-0.001, ValueError, ">= 0 seconds"),
        (math.nan, ValueError, ">= 0 seconds"),
        ("soon", TypeError, "number of seconds"),
        (True, TypeError, "number of seconds"),
        ([1], TypeError, "number of seconds"),
        (1j, TypeError, "number of seconds"),
    ],
)
def test_bad_timers(pair, timer, exc, match):
    a, b = pair
    with pytest.raises(exc, match=match):
        a.append("t", "m", block=True, timer=timer)
    with pytest.raises(exc, match=match):
        a.append("t", "m", timer=timer)  # even when it would not be used
    with pytest.raises(exc, match=match):
        b.pop(block=True, timer=timer)
    with pytest.raises(exc, match=match):
        b(block=True, timer=timer)
    with pytest.raises(exc, match=match):
        a.wait_for_readers(1, timer=timer)
    assert b.pop() is None  # nothing was appended
    assert_still_works(a, b)


@pytest.mark.parametrize(
    "timer", [0, 0.0, 1, fractions.Fraction(1, 100), np.float64(0.01), math.inf]
)
def test_good_timers(pair, timer):
    a, b = pair
    a.append("t", "m", block=True, timer=timer)
    assert b.pop(block=True, timer=timer) == ("a", "t", "m")


def test_message_too_large_raises_at_once_whatever_block_says(pair):
    a, b = pair
    big = "x" * (a.max_message - len("a") - len("t") + 1)
    for kwargs in ({}, {"block": True, "timer": None}, {"block": True, "timer": 100}):
        with pytest.raises(MessageTooLarge, match="can never fit") as e:
            a.append("t", big, **kwargs)
        assert isinstance(e.value, MemoryError)
    a.append("t", big[:-1])  # the largest that fits, in an empty queue
    assert b.pop() == ("a", "t", big[:-1])
    assert_still_works(a, b)


def test_over_long_type_raises(pair):
    a, b = pair
    with pytest.raises(ValueError, match="msgtype is 65536 bytes"):
        a.append("t" * 65536, "m")
    assert_still_works(a, b)


def test_unencodable_str_raises_before_touching_the_queue(pair):
    a, b = pair
    with pytest.raises(UnicodeEncodeError):
        a.append("t", "lone surrogate \udc80")
    assert_still_works(a, b)


def test_bytearray_and_memoryview_are_written_as_bytes(pair):
    a, b = pair
    a.append(bytearray(b"t"), bytearray(b"\x00\x01"))
    a.append("t", memoryview(b"mv"))
    assert b.pop(decode=False) == (b"a", b"t", b"\x00\x01")
    assert b.pop(decode=False) == (b"a", b"t", b"mv")


def test_queue_full_is_a_memory_error_and_loses_nothing(pair):
    a, b = pair
    sent = 0
    with pytest.raises(QueueFull, match="is full") as e:
        while True:
            a.append("n", sent)
            sent += 1
    assert isinstance(e.value, MemoryError)
    assert [int(m[2]) for m in b] == list(range(sent))


def test_large_messages_grow_the_read_buffer(qname):
    with PySyncQ(qname, size=1 << 20) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        for n in (0, 1, 4095, 4096, 100_000, 1_000_000):
            body = os.urandom(n)
            a.append("t", body)
            assert b.pop(decode=False) == (b"a", b"t", body)
            assert a.pop() is None  # the writer passes its own message too


# -- Context managers, pickling, screening sets ---------------------------------------


def test_context_managers(qname):
    with PySyncQ(qname) as q:
        with q.open("a") as opened:
            assert opened is q
            q.append("t", "m")
        assert q.closed
    assert introspect.read_header(qname) is None


def test_handles_and_exceptions_pickle(qname):
    with PySyncQ(qname) as q:
        q.open("a")
        q.scrntype.add("noise")
        copy = pickle.loads(pickle.dumps(q))
        try:
            assert copy.name == q.name and copy.sender is None  # not opened in the copy
            # the explicit screen travels; the automatic self-screen is the opener's own
            assert "noise" in copy.scrntype and "a" not in copy.scrnsend
            copy.open("copy")
            copy.append("t", "from copy")
            assert q.pop() == ("copy", "t", "from copy")
        finally:
            copy.close()
    with pytest.raises(QueueClosed):
        pickle.dumps(q)
    for exc in (QueueFull("x"), MessageTooLarge("y"), QueueClosed("z"), NotAQueue("w")):
        again = pickle.loads(pickle.dumps(exc))
        assert type(again) is type(exc) and str(again) == str(exc)
        assert isinstance(again, PySyncQError)


def test_screen_sets_accept_str_and_bytes_in_every_operation(qname):
    with PySyncQ(qname) as q:
        s = q.scrnsend
        s.add("x")
        s.add(b"y")
        s.add(7)
        assert "x" in s and b"x" in s and "y" in s and 7 in s and "7" in s
        assert s == {"x", b"y", "7"} and s == {b"x", "y", 7}
        assert len(s) == 3
        s.discard(b"x")
        s.remove("y")
        with pytest.raises(KeyError):
            s.remove("absent")
        s |= {"p", "q"}
        s -= {b"p"}
        s.update(["r"], [b"s"])
        assert s == {"7", "q", "r", "s"}
        q.scrnsend = ["only"]
        assert q.scrnsend == {"only"} and isinstance(q.scrnsend, ScreenSet)
        q.scrntype = set()
        assert not q.scrntype
        assert "\udc80" not in s  # unencodable: simply absent
        assert repr(ScreenSet()) == "ScreenSet()"


def test_screen_changes_take_effect_on_the_next_pop(pair):
    a, b = pair
    a.append("t1", "1")
    a.append("t2", "2")
    a.append("t1", "3")
    b.scrntype.add("t1")
    assert b.pop() == ("a", "t2", "2")  # "1" was screened: passed, never to be seen
    b.scrntype.clear()
    assert b.pop() == ("a", "t1", "3")
    assert b.pop() is None


# -- Inspection and module functions ---------------------------------------------------


def test_stats(pair):
    a, b = pair
    a.append("t", "x" * 100)
    s = b.stats()
    assert (s.capacity, s.appended, s.used, s.free) == (1024, 1, 120, 904)
    by_slot = {r.slot: r for r in s.members}
    # a screens its own messages, so it moved past the one it appended.
    assert by_slot[0].sent == 1 and by_slot[0].lag == 0 and by_slot[0].screened == 1
    assert by_slot[1].lag == 120 and by_slot[1].pid == os.getpid()
    assert by_slot[1].lag_messages == 1 and by_slot[0].lag_messages == 0
    assert {r.name for r in s.members} == {"a", "b"} and s.held == 1
    assert all(r.alive and r.waiting == "" for r in s.members)
    b.pop()
    a.pop()
    assert b.stats().used == 0 and b.stats().held == 0


def test_wait_for_readers_counts_others_and_times_out(pair, qname):
    a, b = pair
    assert a.wait_for_readers(1, timer=1) == 1
    with pytest.raises(TimeoutError, match="only 1 of 2 readers"):
        a.wait_for_readers(2, timer=0.05)
    with pytest.raises(ValueError):
        a.wait_for_readers(-1)
    with PySyncQ(qname, create=False) as c:
        c.open("w", reader=False)
        assert a.wait_for_readers(1, timer=1) == 1  # a writer-only handle is no reader


def test_repr(qname):
    q = PySyncQ(qname, size=256)
    assert "not opened" in repr(q)
    q.open("me")
    assert repr(q) == f"PySyncQ(name={qname!r}, size=256, sender='me', open)"
    q.close()
    assert "closed" in repr(q)


def test_list_and_remove(qname):
    q = PySyncQ(qname)
    q.open("a")
    assert (qname, True) in pysyncq.list_queues()
    with pytest.raises(QueueExists):
        pysyncq.remove(qname)
    q.close()
    assert pysyncq.remove(qname) is False  # already gone
    assert qname not in [n for n, _ in pysyncq.list_queues()]


def test_threads_may_share_one_handle(qname):
    """Two threads pop from one handle while a third appends: every message
    arrives exactly once, intact."""
    import threading

    n = 5000
    with PySyncQ(qname, size=4096) as w, PySyncQ(qname, create=False) as r:
        w.open("w", reader=False)
        r.open("r")
        got = [[], []]

        def reader(k):
            while (m := r.pop(block=True, timer=5)) is not None and m[1] != "end":
                i, pad = m[2].split(":")
                assert pad == "x" * (int(i) % 50)
                got[k].append(int(i))

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for i in range(n):
            w.append("n", f"{i}:{'x' * (i % 50)}", block=True, timer=10)
        w.append("end", block=True, timer=10)
        w.append("end", block=True, timer=10)
        for t in threads:
            t.join(30)
        assert sorted(got[0] + got[1]) == list(range(n))  # each exactly once
        assert got[0] == sorted(got[0]) and got[1] == sorted(got[1])  # in order


# -- Found in review ------------------------------------------------------------------


def test_augmented_assignment_keeps_the_screen_set(qname):
    with PySyncQ(qname) as q:
        q.open("me")
        q.scrnsend |= {"x"}
        q.scrntype |= {"t"}
        q.scrntype -= {b"t"}
        q.scrnsend &= {b"me", "x", "y"}
        assert q.scrnsend == {"me", "x"} and not q.scrntype
        q.append("t", "m")
        assert q.pop() is None  # still screening its own messages


def test_set_operations_match_str_and_bytes_on_both_sides():
    s = ScreenSet([b"me", "x"])
    s &= {"me", "x"}
    assert s == {"me", "x"}
    assert ScreenSet({b"me", "x"}) - {"me"} == {"x"}
    assert {"me", "z"} - ScreenSet([b"me"]) == {"z"}
    assert ScreenSet([b"me"]) <= {"me"} and ScreenSet([b"me"]) < {"me", "y"}
    assert ScreenSet(["a"]).union([b"b"]) == {"a", "b"}
    assert ScreenSet(["a", "b"]).intersection([b"a"]) == {"a"}
    assert ScreenSet(["a", "b"]).difference(["a"]) == {"b"}
    assert ScreenSet(["a"]).symmetric_difference({b"a", "z"}) == {"z"}
    assert ScreenSet(["a"]).issubset([b"a", "c"]) and ScreenSet(["a", "c"]).issuperset([b"a"])
    assert ScreenSet(["a"]).isdisjoint(["b"]) and not ScreenSet(["a"]).isdisjoint([b"a"])


def test_an_interrupted_constructor_leaves_no_segment(qname, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    introspect.HANDLE_SETUP.patch(monkeypatch, interrupted)
    with pytest.raises(KeyboardInterrupt):
        PySyncQ(qname)
    assert introspect.read_header(qname) is None


def test_a_pickled_handle_does_not_attach_to_a_newer_queue_of_the_same_name(qname):
    q = PySyncQ(qname)
    data = pickle.dumps(q)
    q.close()
    with PySyncQ(qname) as newer:
        with pytest.raises(QueueClosed, match="no longer exists"):
            pickle.loads(data)
        assert not newer.closed


def test_bytes_subclasses_are_written_as_bytes(pair):
    a, b = pair
    a.append(np.bytes_(b"t"), np.bytes_(b"\x00raw"))
    assert b.pop(decode=False) == (b"a", b"t", b"\x00raw")


def test_closing_while_another_thread_waits_raises_queue_closed_there(qname):
    import threading

    q = PySyncQ(qname)
    q.open("a")
    errors = []

    def wait():
        try:
            q.pop(block=True, timer=None)
        except QueueClosed as e:
            errors.append(e)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.1)
    q.close()
    t.join(10)
    assert not t.is_alive() and len(errors) == 1
    with pytest.raises(QueueClosed):
        q.append("t", "m")


def test_a_pop_does_not_wait_for_the_queue_lock(qname, monkeypatch):
    """Pops take no lock (a reader's cursor has one writer, itself): with the
    queue lock held by a live process that does not let go, pop(block=False)
    answers at once, a blocking pop in another thread waits for data (not
    for the lock), and an append is what the lock holds up."""
    import threading

    introspect.LOCK_PATIENCE.patch(monkeypatch, 0.2)
    q = PySyncQ(qname)
    q.open("a", filtself=False)
    q.append("t", "before")
    got = []
    introspect.words(q)[pysyncq.layout.H_LOCK] = introspect.token_of(os.getppid())
    assert q.pop() == ("a", "t", "before")
    assert q.pop() is None
    t = threading.Thread(target=lambda: got.append(q.pop(block=True, timer=None)))
    t.start()
    with pytest.raises(pysyncq.QueueLocked, match="is locked by process"):
        q.append("t", "m")
    introspect.words(q)[pysyncq.layout.H_LOCK] = 0
    q.append("t", "m")
    t.join(10)
    assert got == [("a", "t", "m")]
    q.close()


def test_screen_sets_are_sets(qname):
    """The guide says "Both of these are sets": they are, and still compare
    str and bytes entries as the same."""
    import copy

    with PySyncQ(qname) as q:
        q.open("me")
        for s in (q.scrnsend, q.scrntype):
            assert isinstance(s, set)
        s = q.scrnsend
        assert s == {"me"} and {"me"} == s and {b"me"} == s and s != {"other"}
        s.add(b"me")  # the same entry, now in its bytes form
        assert len(s) == 1 and list(s) == [b"me"] and set(s) == {b"me"}
        assert "me" in s and b"me" in s and frozenset(s) == {b"me"}
        assert ({"x"} | s) == {"x", "me"} and isinstance({"x"} | s, ScreenSet)
        assert {"me"} <= s and s <= {b"me", "y"} and not s < {"me"}
        s.remove("me")
        with pytest.raises(KeyError):
            s.remove("me")
        s.update(["a", b"b"])
        assert s.pop() in ("a", b"b") and len(s) == 1
        assert pickle.loads(pickle.dumps(s)) == s and copy.copy(s) == s
        s.clear()
        assert not s and s == set()


def test_two_threads_opening_one_handle_claim_one_slot(qname):
    """open() from two threads at once: one wins, the other is told the handle
    is open already; no second slot leaks."""
    import threading

    q = PySyncQ(qname)
    results = []
    barrier = threading.Barrier(2)

    def opener(name):
        barrier.wait()
        try:
            q.open(name)
            results.append("opened")
        except RuntimeError as e:
            results.append(str(e))

    threads = [threading.Thread(target=opener, args=(n,)) for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results.count("opened") == 1 and any("already open" in r for r in results)
    assert len(q.stats().members) == 1
    q.close()


def test_a_queue_whose_magic_word_was_overwritten_can_still_be_removed_by_force(qname):
    """Issue 6: after QueueCorrupt the segment stays removable, even when the
    word hit was the magic one (a plain remove still refuses: not a queue)."""
    q = PySyncQ(qname, size=1024)
    q.open("a")
    with open(os.path.join("/dev/shm", qname), "r+b") as f:
        f.write(bytes(8))
    with pytest.raises(pysyncq.QueueCorrupt, match="magic word"):
        q.append("t", "x")
    assert q.stats().appended == 0
    with pytest.raises(pysyncq.NotAQueue):
        pysyncq.remove(qname)
    assert pysyncq.remove(qname, force=True)
    q.close()
