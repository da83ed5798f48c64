"""pysyncq.jit: the queue inside nopython code, against the Python API.

Nopython writer -> Python reader, Python writer -> nopython reader, both in
nopython code across processes (every start method), blocking and timers,
screens, the inbox, a closed handle, wrong arguments, and kills inside
nopython appends.  The programs are in tests/jitprogs.py.
"""

import multiprocessing as mp
import time

import jitprogs as jp
import numpy as np
import pytest
from procs import kill, wait_dead

from pysyncq import MessageTooLarge, PySyncQ, QueueClosed, QueueFull
from pysyncq import jit as pqjit
from pysyncq._jitside import code as py_code


@pytest.fixture
def pair(qname):
    """A writer handle and a reader handle of one queue, in this process."""
    w = PySyncQ(qname, size=1 << 16)
    w.open("w")
    r = PySyncQ(qname, create=False)
    r.open("r")
    yield w, r
    r.close()
    w.close()


#: Each array kind is a compile of the programs (seconds on a cold cache): the
#: default run takes four, the slow run every one.
_SLOW = pytest.mark.slow
ARRAYS = [
    np.array([1.5, -2.0]),
    np.arange(12, dtype=np.int32).reshape(3, 4),
    np.arange(10, dtype=np.uint16)[::2],  # not contiguous: sent as a C copy
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    pytest.param(np.array([[True, False], [False, True]]), marks=_SLOW),
    pytest.param(np.arange(6, dtype=np.complex128).reshape(2, 3, 1) * 1j, marks=_SLOW),
    pytest.param(np.zeros((0, 3), np.float32), marks=_SLOW),
    pytest.param(np.array(7, np.int64), marks=_SLOW),  # 0-d
]


def _arr_id(a):
    a = a.values[0] if hasattr(a, "values") else a
    return f"{a.dtype}{a.shape}"


@pytest.mark.parametrize("arr", ARRAYS, ids=_arr_id)
def test_a_nopython_array_reaches_a_python_reader_as_it_was(pair, arr):
    w, r = pair
    assert jp.send_array(w.jit_handle(), "arr", arr, 0.0) == pqjit.OK
    s, t, got = r.pop()
    assert (s, t) == ("w", "arr")
    assert got.dtype == arr.dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)
    assert r.pop() is None


@pytest.mark.parametrize("arr", ARRAYS, ids=_arr_id)
def test_a_python_array_reaches_a_nopython_reader_in_c_order(pair, arr):
    w, r = pair
    w.append_array("arr", arr)
    fill = np.array(99).astype(arr.dtype)
    out = np.full(max(arr.size, 1) + 3, fill, arr.dtype)
    got, shape = jp.pop_into(r.jit_handle(), out, 0.0)
    assert got == (pqjit.OK, arr.size, arr.ndim, pqjit.code("w"), pqjit.code("arr"))
    assert tuple(shape) == arr.shape
    np.testing.assert_array_equal(out[: arr.size], np.ascontiguousarray(arr).reshape(-1))
    assert (out[arr.size :] == fill).all()  # nothing written past the message


def test_bytes_both_ways_and_str_as_bytes(pair):
    w, r = pair
    hw, hr = w.jit_handle(), r.jit_handle()
    data = np.frombuffer(b"\xffhello\x00world", np.uint8)  # not UTF-8: stays bytes
    assert jp.send_bytes(hw, "b", data, 0.0) == pqjit.OK
    assert r.pop() == ("w", "b", b"\xffhello\x00world")
    assert jp.send_bytes(hw, "b", data[1:6], 0.0) == pqjit.OK
    assert r.pop() == ("w", "b", "hello")  # as a Python append's bytes: decoded where valid
    w.append("t", b"raw bytes")
    w.append("t", "text é")
    out = np.zeros(64, np.uint8)
    got = jp.pop_bytes_into(hr, out, 0.0)
    assert got.status == pqjit.OK and bytes(out[: got.count]) == b"raw bytes"
    got = jp.pop_bytes_into(hr, out, 0.0)
    assert bytes(out[: got.count]) == "text é".encode()
    assert got.mtype == pqjit.code("t") and got.sender == pqjit.code("w")


def test_a_message_not_taken_stays_unread(pair):
    w, r = pair
    hr = r.jit_handle()
    w.append("t", b"bytes first")
    assert jp.pop_into(hr, np.zeros(4), 0.0)[0].status == pqjit.WRONG_KIND
    assert r.pop() == ("w", "t", "bytes first")
    w.append_array("a", np.arange(3, dtype=np.int32))
    assert jp.pop_into(hr, np.zeros(4), 0.0)[0].status == pqjit.WRONG_DTYPE
    assert jp.pop_into(hr, np.zeros(2, np.int32), 0.0)[0].status == pqjit.NO_ROOM
    with pytest.raises(ValueError, match="too small"):
        r.raise_for(pqjit.NO_ROOM)
    assert jp.pop_bytes_into(hr, np.zeros(99, np.uint8), 0.0).status == pqjit.WRONG_KIND
    got, shape = jp.pop_into(hr, np.zeros(3, np.int32), 0.0)
    assert got.status == pqjit.OK and tuple(shape) == (3,)
    assert r.pop() is None


def test_codes_agree_between_python_and_nopython():
    for name in ["", "state", "é", "日本", "\U0001f600", "x" * 300]:
        assert jp.code_of(name) == py_code(name) == py_code(name.encode())


def test_timers_empty_and_full(qname):
    with PySyncQ(qname, size=4096) as w, PySyncQ(qname, create=False) as r:
        w.open("w")
        r.open("r")
        hw, hr = w.jit_handle(), r.jit_handle()
        out = np.zeros(2)
        t = time.monotonic()
        assert jp.pop_into(hr, out, 0.0)[0].status == pqjit.EMPTY
        assert jp.pop_into(hr, out, 0.3)[0].status == pqjit.EMPTY
        assert 0.25 <= time.monotonic() - t < 5
        r.raise_for(pqjit.EMPTY)  # nothing: a Python pop returns None
        sent, st = jp.send_states(hw, 1000, 0, 0.0)
        assert st == pqjit.FULL and 10 < sent < 1000
        with pytest.raises(QueueFull):
            w.raise_for(st)
        t = time.monotonic()
        assert jp.send_states(hw, 1, 0, 0.3) == (0, pqjit.FULL)
        assert 0.25 <= time.monotonic() - t < 5
        assert jp.pop_into(hr, out, 0.0)[0].status == pqjit.OK  # room again
        assert jp.send_states(hw, 1, 1.0, 0.0) == (1, pqjit.OK)


def test_too_large_and_bad_arguments(pair):
    w, r = pair
    hw, hr = w.jit_handle(), r.jit_handle()
    st = jp.send_array(hw, "big", np.zeros(1 << 14), 10.0)
    assert st == pqjit.TOO_LARGE
    with pytest.raises(MessageTooLarge):
        w.raise_for(st)
    assert jp.send_array(hw, "x" * 70_000, np.zeros(1), 0.0) == pqjit.BAD_ARG
    w.append_array("a", np.arange(4.0))
    assert jp.pop_into(hr, np.zeros((4, 2))[:, 0], 0.0)[0].status == pqjit.BAD_ARG
    with pytest.raises(ValueError, match="wrong argument"):
        r.raise_for(pqjit.BAD_ARG)
    assert r.pop()[2].tolist() == [0.0, 1.0, 2.0, 3.0]
    with PySyncQ(w.name, create=False) as wo:
        wo.open("wo", reader=False)
        assert jp.pop_into(wo.jit_handle(), np.zeros(4), 0.0)[0].status == pqjit.BAD_ARG


def test_screens_apply_also_when_changed_after_the_handle_was_made(pair):
    w, r = pair
    hw, hr = w.jit_handle(), r.jit_handle()
    assert jp.send_states(hw, 1, 0, 0.0) == (1, pqjit.OK)
    assert jp.pop_into(hw, np.zeros(2), 0.0)[0].status == pqjit.EMPTY  # own: screened
    r.scrntype.add("state")
    jp.send_states(hw, 1, 1, 0.0)
    w.append_array("other", np.arange(2.0))
    got, _ = jp.pop_into(hr, np.zeros(2), 0.0)
    assert got.status == pqjit.OK and got.mtype == pqjit.code("other")
    r.scrntype.discard("state")
    jp.send_states(hw, 1, 2, 0.0)
    got, _ = jp.pop_into(hr, np.zeros(2), 0.0)
    assert got.mtype == pqjit.code("state")
    # A writer that screens a type passes its own cursor over it (it never pins it).
    w.scrnsend.clear()
    w.scrntype.add("state")
    jp.send_states(hw, 1, 3, 0.0)
    assert w.pop() is None


def test_the_inbox_comes_first(qname):
    """A Python write blocked by its own unread messages moves them to the
    inbox: a nopython pop returns them first, in order, then the queue's."""
    with PySyncQ(qname, size=4096) as a, PySyncQ(qname, create=False) as b:
        a.open("a")
        b.open("b")
        ha = a.jit_handle()
        sent, _ = jp.send_states(b.jit_handle(), 1000, 0, 0.0)  # fills the queue
        for _ in range(3):
            a.append("t", b"own", block=True, timer=5)  # moves b's states into a's inbox
        got, st, _ = jp.read_states(ha, sent, 0.0)
        assert (got, st) == (sent, pqjit.OK)
        assert jp.pop_into(ha, np.zeros(2), 0.0)[0].status == pqjit.EMPTY


def test_a_closed_handle_is_a_status(qname):
    q = PySyncQ(qname)
    q.open("a")
    h = q.jit_handle()
    assert q.jit_handle() is h
    q.close()
    assert jp.send_states(h, 1, 0, 0.0) == (0, pqjit.CLOSED)
    assert jp.pop_into(h, np.zeros(2), 0.0)[0].status == pqjit.CLOSED
    with pytest.raises(QueueClosed):
        q.raise_for(pqjit.CLOSED)
    with pytest.raises(RuntimeError, match="open"):
        q.jit_handle()


def test_statuses_are_distinct_and_raise_for_knows_each(pair):
    w, _ = pair
    codes = [getattr(pqjit, n) for n in pqjit.__all__ if n.isupper()]
    assert len(set(codes)) == len(codes)
    for c in codes:
        if c in (pqjit.OK, pqjit.EMPTY):
            assert w.raise_for(c) is None
        else:
            with pytest.raises(Exception):  # noqa: B017 - each its own
                w.raise_for(c)
    with pytest.raises(ValueError, match="not a status"):
        w.raise_for(12345)


ACROSS = [
    ("fork", "nopython->python"),
    ("fork", "python->nopython"),
    ("fork", "both"),
    ("spawn", "both"),
    ("forkserver", "both"),
    pytest.param("spawn", "nopython->python", marks=_SLOW),
    pytest.param("spawn", "python->nopython", marks=_SLOW),
    pytest.param("forkserver", "nopython->python", marks=_SLOW),
    pytest.param("forkserver", "python->nopython", marks=_SLOW),
]


@pytest.mark.parametrize(("method", "direction"), ACROSS)
def test_across_processes(qname, procs, method, direction):
    """Through a small queue (the writer waits for space, the reader for
    data), in every start method: every message, in order."""
    n = 3000 if method == "fork" else 1000
    q = PySyncQ(qname, size=8192)
    q.open("parent", reader=False)
    reader = jp.python_reader if direction == "nopython->python" else jp.nopython_reader
    writer = jp.python_writer if direction == "python->nopython" else jp.nopython_writer
    r = procs.start(reader, q, n, method=method)
    q.wait_for_readers(1, timer=60)
    wp = procs.start(writer, q, n, method=method)
    procs.join([r, wp], timeout=120)
    q.close()


def test_python_and_nopython_wake_each_other(qname, procs):
    """A nopython pop blocked without limit wakes on a Python append; a
    Python pop blocked wakes on a nopython append."""
    q = PySyncQ(qname)
    q.open("parent")
    ready = mp.Event()
    r = procs.start(jp.nopython_reader, q, 2, "reader", ready)
    assert ready.wait(60)
    q.wait_for_readers(1, timer=60)
    time.sleep(0.3)  # the reader sleeps now
    q.append_array("state", np.array([0.0, 0.0]))
    time.sleep(0.3)
    q.append_array("state", np.array([1.0, 0.5]))
    procs.join([r], timeout=60)
    w = procs.start(jp.nopython_writer, q, 1, 0, "writer")
    assert q.pop(block=True, timer=30)[0] == "writer"
    procs.join([w], timeout=60)
    q.close()


def test_kills_inside_nopython_appends_leave_the_queue_usable(qname, procs):
    """A process SIGKILLed while it appends in nopython code (with no reader
    the queue never fills: it is inside an append, most likely holding the
    lock): the others' nopython writes and reads go on (the lock is taken
    over, its slot reaped)."""
    q = PySyncQ(qname, size=1 << 16)
    q.open("parent", reader=False)
    for k in range(6):
        ready = mp.Event()
        p = procs.start(jp.nopython_spinner, q, ready)
        assert ready.wait(60)
        time.sleep(0.05 + 0.02 * k)
        kill(p)
        wait_dead(p)
        with PySyncQ(qname, create=False) as rd, PySyncQ(qname, create=False) as wr:
            rd.open("rd")
            wr.open("wr", reader=False)
            assert jp.send_states(wr.jit_handle(), 5, 0, 5.0) == (5, pqjit.OK)
            got, st, _ = jp.read_states(rd.jit_handle(), 5, 5.0)
            assert (got, st) == (5, pqjit.OK)
        p.join(5)
    q.close()


def test_streaming_a_simulation_costs_little(qname):
    """Not a timing assertion: the issue's simulation streams every step
    and a Python reader gets every state."""
    q = PySyncQ(qname, size=1 << 24)
    q.open("sim")
    r = PySyncQ(qname, create=False)
    r.open("plot")
    h = q.jit_handle()
    assert jp.simulate(h, 50_000, True) == (50_000, pqjit.OK)
    got = r.pop_many(100_000)
    assert len(got) == 50_000 and got[-1][2].tolist() == [50_000.0, 25_000.0]
    r.close()
    q.close()
