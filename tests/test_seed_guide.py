"""Every example and promise of the pysyncq 0.0.1 user guide, as tests.

The section names follow the guide ("Get started with pysyncq").  Where the
guide describes processes, real processes run it, under each start method.
"""

import threading
import time

import introspect
import pytest
import workers

import pysyncq
from pysyncq import PySyncQ
from pysyncq import pysyncq as pq

# -- Initialisation -------------------------------------------------------------


def test_the_0_0_1_import_path_names_the_same_class():
    assert pq.PySyncQ is PySyncQ is pysyncq.PySyncQ


def test_parent_creates_children_open_and_all_close(qname, procs, method):
    """The guide's whole flow: create, start children with q as argument, open
    in every process, exchange messages, close everywhere; the last close
    unlinks the shared memory."""
    q = PySyncQ(qname)
    children = [procs.start(workers.seed_child, q, f"child-{i}", method=method) for i in range(3)]
    q.open("parent")
    assert q.wait_for_readers(3, timer=60) == 3
    q.append(msgtype="user", msg="start")
    replies = [q.pop(block=True, timer=60) for _ in children]
    assert sorted(replies) == [(f"child-{i}", "reply", f"child-{i}") for i in range(3)]
    q.append("user", "stop", block=True, timer=30)
    procs.join(children)
    q.close()
    assert not introspect.read_header(qname)


def test_start_argument_is_accepted_for_compatibility(qname):
    with PySyncQ(qname, start="fork") as q:
        assert q.start == "fork"
    with pytest.raises(ValueError, match="start must be"):
        PySyncQ(qname, start="teleport")


def test_default_sender_is_the_process_id(qname, procs, method):
    q = PySyncQ(qname)
    q.open("parent")  # before the child appends: a reader sees what comes after its open
    child = procs.start(workers.default_sender_child, q, method=method)
    q.wait_for_readers(1, timer=60)
    m = q.pop(block=True, timer=60)
    assert m == (str(child.pid), "hello", "from child")
    q.append("bye")
    procs.join([child])
    q.close()


# -- Sending messages -----------------------------------------------------------


def test_append_adds_sender_and_defaults_to_empty_type_and_body(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("alice")
        b.open("bob")
        a.append("type_of_message", "The body of the message.")
        a.append()
        a.append("only a type")
        assert b.pop() == ("alice", "type_of_message", "The body of the message.")
        assert b.pop() == ("alice", "", "")
        assert b.pop() == ("alice", "only a type", "")
        assert b.pop() is None


def test_full_queue_raises_memory_error_by_default(qname):
    with PySyncQ(qname, size=256) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        with pytest.raises(MemoryError):
            for _ in range(100):
                a.append("mtype", "message body")
        # Catching it and reading makes room again.
        for _ in b:
            pass
        for _ in a:
            pass
        a.append("mtype", "message body")
        assert b.pop() == ("a", "mtype", "message body")


def test_blocking_append_without_timer_waits_until_space_is_freed(qname):
    with PySyncQ(qname, size=256) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        n = 0
        while True:
            try:
                a.append("mtype", "message body")
                n += 1
            except MemoryError:
                break
        # The writer reads too (its own messages are screened, but it must pass
        # them): now only b holds the queue full.
        assert a.pop() is None
        done = threading.Event()

        def blocked_append():
            a.append("mtype", "last", block=True, timer=None)
            done.set()

        t = threading.Thread(target=blocked_append, daemon=True)
        t.start()
        assert not done.wait(0.3)  # still waiting: nobody has read
        assert b.pop() == ("a", "mtype", "message body")
        assert done.wait(10)
        t.join(10)
        assert [m[2] for m in b] == ["message body"] * (n - 1) + ["last"]


def test_blocking_append_with_a_timer_raises_memory_error_on_expiry(qname):
    with PySyncQ(qname, size=256) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        with pytest.raises(MemoryError):
            while True:
                a.append("mtype", "message body")
        t0 = time.monotonic()
        with pytest.raises(MemoryError, match="waited 0.2"):
            a.append("mtype", "message body", block=True, timer=0.2)
        assert time.monotonic() - t0 >= 0.19


def test_timer_defaults_to_half_a_second(qname):
    with PySyncQ(qname, size=256) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        with pytest.raises(MemoryError):
            while True:
                a.append("m", "x" * 20)
        t0 = time.monotonic()
        with pytest.raises(MemoryError):
            a.append("m", "x" * 20, block=True)
        assert 0.45 <= time.monotonic() - t0 < 10
        t0 = time.monotonic()
        assert b.pop() is not None
        for _ in b:
            pass
        assert b.pop(block=True) is None
        assert 0.45 <= time.monotonic() - t0 < 10


class Thing:
    def __str__(self):
        return "a thing"


@pytest.mark.parametrize(
    ("mtype", "body", "expected"),
    [
        ("str", "plain text", ("str", "plain text")),
        (b"bytes", b"raw bytes", ("bytes", "raw bytes")),
        (3, 3.5, ("3", "3.5")),
        (Thing(), [1, "two"], ("a thing", "[1, 'two']")),
        (None, {"k": 1}, ("None", "{'k': 1}")),
        ("unicode", "héllo ✓ 🐍", ("unicode", "héllo ✓ 🐍")),
    ],
)
def test_str_bytes_and_any_object_cast_with_str(qname, mtype, body, expected):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        a.append(mtype, body)
        assert b.pop() == ("a",) + expected


# -- Reading messages -----------------------------------------------------------


def test_pop_returns_a_tuple_or_none(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        assert b.pop() is None
        a.append("t", "m")
        sender, mtype, mbody = b.pop()
        assert (sender, mtype, mbody) == ("a", "t", "m")
        assert b.pop() is None


def test_open_screens_own_messages_unless_filtself_is_false(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b", filtself=False)
        assert "a" in a.scrnsend and "b" not in b.scrnsend
        a.append("t", "from a")
        b.append("t", "from b")
        assert a.pop() == ("b", "t", "from b")
        assert a.pop() is None  # its own message was screened
        assert b.pop() == ("a", "t", "from a")
        assert b.pop() == ("b", "t", "from b")


def test_own_sender_can_be_removed_from_scrnsend_as_str_or_bytes(qname):
    with PySyncQ(qname) as a:
        a.open("a")
        a.scrnsend.discard("a")  # 0.0.1 stored bytes, so this silently did nothing there
        assert "a" not in a.scrnsend and b"a" not in a.scrnsend
        a.append("t", "1")
        assert a.pop() == ("a", "t", "1")
        a.scrnsend.add(b"a")
        a.append("t", "2")
        assert a.pop() is None
        a.scrnsend.remove("a")
        a.append("t", "3")
        assert a.pop() == ("a", "t", "3")


def test_screening_by_sender_and_by_type(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b, PySyncQ(qname, create=False) as c:
        a.open("a")
        b.open("b")
        c.open("c")
        c.scrnsend.add("a")
        c.scrntype.add(b"noise")
        a.append("news", "1")
        b.append("noise", "2")
        b.append("news", "3")
        assert list(c) == [("b", "news", "3")]
        assert c.stats().members[2].screened == 2


def test_blocking_pop_waits_for_a_message(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        timer = threading.Timer(0.2, a.append, ("late", "message"))
        timer.start()
        try:
            assert b.pop(block=True, timer=None) == ("a", "late", "message")
        finally:
            timer.cancel()
            timer.join(10)


def test_blocking_pop_returns_none_when_the_timer_expires(qname):
    with PySyncQ(qname) as a:
        a.open("a")
        t0 = time.monotonic()
        assert a.pop(block=True, timer=0.2) is None
        assert time.monotonic() - t0 >= 0.19


def test_pop_timer_is_a_total_deadline_not_restarted_by_screened_messages(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        b.scrntype.add("noise")
        stop = threading.Event()

        def noise():
            while not stop.is_set():
                a.append("noise", "x", block=True, timer=1)
                time.sleep(0.02)

        t = threading.Thread(target=noise, daemon=True)
        t.start()
        try:
            t0 = time.monotonic()
            assert b.pop(block=True, timer=0.3) is None
            assert time.monotonic() - t0 < 5
        finally:
            stop.set()
            t.join(10)


def test_decode_false_returns_bytes(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        a.append("t", "body")
        a.append(b"t", b"\xff\x00binary")
        assert b.pop(decode=False) == (b"a", b"t", b"body")
        assert b.pop(decode=False) == (b"a", b"t", b"\xff\x00binary")


def test_decode_true_returns_undecodable_bytes_rather_than_losing_them(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        a.append("t", b"\xff\xfe")
        assert b.pop() == ("a", "t", b"\xff\xfe")


def test_the_queue_is_an_iterator_with_for_else(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        for i in range(5):
            a.append("n", i)
        seen = []
        for m in b:
            seen.append(m[2])
        else:
            seen.append("no more")
        assert seen == ["0", "1", "2", "3", "4", "no more"]


def test_iterator_with_block_timer_and_decode(qname):
    with PySyncQ(qname) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        a.append("n", "1")
        t = threading.Timer(0.05, a.append, ("n", "2"))
        t.start()
        try:
            t0 = time.monotonic()
            got = [m for m in b(block=True, timer=0.123, decode=False)]
            assert got == [(b"a", b"n", b"1"), (b"a", b"n", b"2")]
            assert time.monotonic() - t0 >= 0.12
            assert list(b(True, 0.01)) == []  # positional, as q(block, timer)
        finally:
            t.cancel()
            t.join(10)


# -- Closing and unlinking / General queue behaviour -----------------------------


def test_last_close_unlinks_the_shared_memory(qname):
    a = PySyncQ(qname)
    b = PySyncQ(qname, create=False)
    a.open("a")
    b.open("b")
    a.close()
    assert introspect.read_header(qname) is not None
    b.close()
    assert introspect.read_header(qname) is None


def test_a_message_is_freed_only_when_every_process_has_read_it(qname):
    with (
        PySyncQ(qname, size=512) as a,
        PySyncQ(qname, create=False) as b,
        PySyncQ(qname, create=False) as c,
    ):
        for q, n in ((a, "a"), (b, "b"), (c, "c")):
            q.open(n)
        body = "x" * 150  # a record of 168 bytes: three fill the 512-byte ring
        a.append("t", body)
        a.append("t", body)
        a.append("t", body)
        with pytest.raises(MemoryError):
            a.append("t", body)
        assert a.pop() is None  # a passes its own (screened) messages
        assert b.pop()[2] == body  # b read one: c still holds it
        with pytest.raises(MemoryError):
            a.append("t", body)
        assert c.pop()[2] == body  # now both have: its bytes are free
        a.append("t", body)
        for _ in c:  # the guide's "mark everything read"
            pass
        assert [m[2] for m in b] == [body] * 3
        # a had read everything when it appended its (screened) fourth
        # message, so it never pinned it: nothing is held.
        assert a.stats().used == 0
        assert a.pop() is None


def test_processes_read_at_different_rates(qname, procs, method):
    """Readers that sleep between pops, and one that does not, all receive
    the same stream in order while a writer blocks on a small queue."""
    q = PySyncQ(qname, size=4096)
    counts = {0: 300}
    readers = [
        procs.start(workers.checked_reader, q, f"r{i}", 1, counts, None, delay, method=method)
        for i, delay in enumerate((0.0, 0.001, 0.003))
    ]
    q.open("parent", reader=False)
    q.wait_for_readers(3, timer=60)
    writer = procs.start(workers.checked_writer, q, 0, 300, 200, 1, method=method)
    procs.join(readers + [writer], timeout=90)
    q.close()
