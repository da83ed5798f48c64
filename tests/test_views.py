"""Loans (write in place), views (read in place) and large appends: the
publication protocol (reserve, fill outside the lock, publish or void)."""

import gc
import multiprocessing as mp
import os
import signal
from contextlib import nullcontext

import introspect
import numpy as np
import pytest
import workers

from pysyncq import MessageTooLarge, PySyncQ, QueueFull


@pytest.fixture
def pair(qname):
    with PySyncQ(qname, size=4096) as w, PySyncQ(qname, create=False) as r:
        w.open("w")
        r.open("r")
        yield w, r


def test_a_loan_is_published_when_its_block_ends(pair):
    w, r = pair
    with w.loan("x", (2, 3), np.int32) as arr:
        assert arr.flags.writeable and arr.shape == (2, 3) and arr.dtype == np.int32
        arr[...] = [[1, 2, 3], [4, 5, 6]]
        assert r.pop() is None  # not yet published: the reader waits at it
    sender, mtype, got = r.pop()
    assert (sender, mtype) == ("w", "x") and got.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert w.stats().appended == 1


def test_a_loan_whose_block_raises_is_discarded(pair):
    w, r = pair
    with pytest.raises(KeyError):
        with w.loan("x", 10, np.float64) as arr:
            arr[:] = 1
            raise KeyError("no")
    w.append("t", "after")
    assert r.pop() == ("w", "t", "after")  # the loan was never seen
    assert r.pop() is None
    s = r.stats()
    # The loan counted when it was reserved and stays counted; the reader
    # passed its void record as screened, so it holds nothing.
    assert s.appended == 2 and s.used == 0 and s.held == 0
    (reader,) = [m for m in s.members if m.name == "r"]
    assert reader.screened == 1 and reader.lag_messages == 0


def test_other_writers_go_on_behind_an_open_loan(pair, qname):
    w, r = pair
    with PySyncQ(qname, create=False) as other:
        other.open("o")
        with w.loan("x", 4, np.uint8) as arr:
            other.append("t", "behind")  # not blocked by the loan
            assert r.pop() is None  # ring order: the loan comes first
            arr[:] = 9
        assert r.pop()[2].tolist() == [9, 9, 9, 9]
        assert r.pop() == ("o", "t", "behind")


def test_a_loan_that_can_never_fit_and_one_that_waits(pair):
    w, r = pair
    with pytest.raises(MessageTooLarge):
        with w.loan("x", 10_000, np.uint8):
            pass
    with w.loan("x", 3000, np.uint8) as arr:
        arr[:] = 1
    with pytest.raises(QueueFull):
        with w.loan("x", 3000, np.uint8, block=True, timer=0.05):
            pass
    assert r.pop()[2].sum() == 3000
    with w.loan("x", 3000, np.uint8) as arr:
        arr[:] = 2
    assert r.pop()[2][0] == 2


def test_a_process_killed_holding_a_loan_blocks_readers_only_until_it_is_reaped(qname, procs):
    with PySyncQ(qname, size=4096) as q:
        q.open("r")
        q.reap_interval = 0.2
        started = mp.get_context("fork").Event()
        p = procs.start(workers.loan_and_die, q, started)
        assert started.wait(30)
        with PySyncQ(qname, create=False) as w:
            w.open("w")
            w.append("t", "behind the loan")
            assert q.pop() is None  # waits at the unpublished loan
            os.kill(p.pid, signal.SIGKILL)
            p.join(30)
            m = q.pop(block=True, timer=30)  # reaps the dead writer, voids its loan
            assert m == ("w", "t", "behind the loan")
            assert q.stats().reaped == 1


def test_a_view_reads_in_place_and_its_memoryview_dies_with_the_block(pair):
    w, r = pair
    w.append("t", "hello")
    with r.pop_view() as m:
        sender, mtype, body = m
        assert (sender, mtype) == ("w", "t") and bytes(body) == b"hello"
        assert len(m) == 3 and m[0] == "w" and "View" in repr(m)
        assert body.readonly
        assert r.stats().members[1].lag > 0  # not read until the block ends
        with pytest.raises(RuntimeError, match="pop_view"):
            r.pop()
    with pytest.raises(ValueError):
        bytes(body)
    with pytest.raises(ValueError, match="ended"):
        m[2]  # the view itself is released too
    assert r.pop() is None and r.stats().used == 0
    with r.pop_view() as m:
        assert m is None


def test_an_array_view_is_read_only_and_shares_the_queue_memory(pair):
    w, r = pair
    w.append_array("a", np.arange(6.0).reshape(2, 3))
    with r.pop_view() as m:
        arr = m[2]
        assert arr.tolist() == [[0, 1, 2], [3, 4, 5]] and not arr.flags.writeable
        assert np.shares_memory(arr, introspect.mem(r))
        with pytest.raises(ValueError):
            arr[0, 0] = 1
        del arr
    assert r.stats().used == 0


def test_a_view_whose_block_raises_leaves_the_message_unread(pair):
    w, r = pair
    w.append("t", "again")
    with pytest.raises(KeyError):
        with r.pop_view():
            raise KeyError
    assert r.pop() == ("w", "t", "again")


def test_an_array_kept_after_its_view_keeps_its_bytes_from_being_reused(pair):
    """The view's array cannot be revoked: while it lives, its record stays
    pinned, so it never shows another message's bytes."""
    w, r = pair
    w.append_array("a", np.full(100, 5, np.uint8))
    with r.pop_view() as m:
        kept = m[2]
    del m
    # Fill the ring: the kept array's record is not freed.
    with pytest.raises(QueueFull):
        for _ in range(100):
            w.append("t", "x" * 500)
            for _ in r:
                pass
    assert kept.tolist() == [5] * 100
    del kept
    gc.collect()
    for _ in r:
        pass
    w.append("t", "x" * 500)  # room again once the array is gone
    assert r.stats().used <= 600


@pytest.mark.parametrize("size", [(1 << 17) + 3, 1 << 18])
def test_large_appends_are_copied_outside_the_lock_and_wrap_the_ring(qname, size):
    with PySyncQ(qname, size=1 << 20) as w, PySyncQ(qname, create=False) as r:
        w.open("w")
        r.open("r")
        for i in range(12):  # several times around the ring
            body = bytes([i]) * size
            w.append("big", body, block=True, timer=5)
            assert r.pop(decode=False)[2] == body
        assert r.stats().used == 0


@pytest.mark.parametrize("outcome", ["published", "discarded"])
def test_a_loan_reserved_before_a_reader_opened_is_not_counted_against_it(qname, outcome):
    """Issue 17 item 5: a loan reserved before a reader opens lies before its
    cursor, so it never reaches that reader; published (or discarded) after
    the open, it must not stay in the reader's lag_messages and the queue's
    held.  An early reader, open before the loan, counts it as it passes."""
    with (
        PySyncQ(qname, size=4096) as w,
        PySyncQ(qname, create=False) as early,
        PySyncQ(qname, create=False) as late,
    ):
        w.open("w")
        early.open("early")
        with pytest.raises(KeyError) if outcome == "discarded" else nullcontext():
            with w.loan("x", 8, np.uint8) as arr:
                arr[:] = 1
                late.open("late")  # its cursor starts after the reservation
                if outcome == "discarded":
                    raise KeyError("discard")
        w.append("t", "after")
        assert late.pop() == ("w", "t", "after") and late.pop() is None
        got = [m[:2] for m in early]
        want = [("w", "x"), ("w", "t")] if outcome == "published" else [("w", "t")]
        assert got == want
        s = w.stats()
        by_name = {m.name: m for m in s.members}
        assert by_name["late"].lag_messages == 0 and by_name["early"].lag_messages == 0
        assert s.held == 0 and s.used == 0 and s.appended == 2
