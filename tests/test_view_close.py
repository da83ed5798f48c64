"""An array of a ``pop_view`` kept past ``close()`` never shows another
message's bytes (issue 17, item 6): the closed handle's slot stays, as a pin
of the record and no longer a reader, until the array is collected."""

import gc
import multiprocessing as mp

import introspect
import numpy as np
import pytest
from conftest import shm_exists

from pysyncq import NotOpened, PySyncQ, QueueFull

pytestmark = pytest.mark.timeout(120)


def fill(w, n=2000):
    """Append until the queue is full (or ``n`` messages); how many went in."""
    for i in range(n):
        try:
            w.append("fill", b"\xee" * 500)
        except QueueFull:
            return i
    return n


def viewed_array(r):
    with r.pop_view(block=True, timer=10) as m:
        return m[2]


def test_an_array_kept_past_close_keeps_its_bytes(handles):
    q, r, w = handles(1 << 14)
    want = np.arange(200, dtype=np.int64)
    w.append_array("a", want)
    arr = viewed_array(r)
    r.close()
    with pytest.raises(NotOpened):
        r.pop()
    n = fill(w)
    assert n < 2000, "the writer went round the ring over the kept array"
    np.testing.assert_array_equal(arr, want)
    members = {m.name: m for m in q.stats().members}
    assert not members["r"].reader  # it pins, it does not read
    assert q.wait_for_readers(0, timer=1) == 0
    del arr
    gc.collect()
    assert "r" not in {m.name for m in q.stats().members}
    assert fill(w) > 0  # the space is free again


def test_the_last_close_with_an_array_alive_removes_the_queue_when_it_goes(qname):
    q = PySyncQ(qname, size=1 << 14)
    q.open("q")
    w = PySyncQ(qname, create=False)
    w.open("w", reader=False)
    w.append_array("a", np.ones(10))
    w.close()
    arr = viewed_array(q)
    q.close()
    assert shm_exists(qname)  # its last member still pins the array's record
    assert arr.sum() == 10
    del arr
    gc.collect()
    assert not shm_exists(qname)


def view_close_and_exit(q, ready):
    q.open("child")
    ready.wait(30)
    arr = viewed_array(q)
    q.close()
    assert arr.sum() == 10
    # exits with the array alive: the slot goes at exit


def test_a_process_that_exits_with_an_array_kept_past_close_leaves_no_slot(qname, procs):
    q = PySyncQ(qname, size=1 << 14)
    q.open("parent", reader=False)
    ready = mp.Event()
    child = procs.start(view_close_and_exit, q, ready)
    q.wait_for_readers(1, timer=30, processes=[child])
    q.append_array("a", np.ones(10))
    ready.set()
    procs.join([child], timeout=60)
    assert [m.name for m in q.stats().members] == ["parent"]
    assert q.stats().reaped == 0  # it left by itself
    q.close()


def test_an_array_collected_before_close_leaves_nothing_behind(handles):
    q, r, w = handles(1 << 14)
    w.append_array("a", np.ones(10))
    arr = viewed_array(r)
    del arr
    gc.collect()
    r.close()
    assert [m.name for m in q.stats().members] == ["w"]
    assert introspect.words(q) is not None
