"""Numpy arrays as messages (append_array / pop), batches (extend / pop_many).

Round trips of every dtype family and shape edge case go through a real queue
here; the descriptor format itself is tested in test_codec.py.  Across
processes under fork and spawn, arrays and text mixed in one queue.
"""

import pickle
import warnings

import introspect
import numpy as np
import pytest
import workers
from hypothesis import HealthCheck, given, settings
from hypothesis.extra import numpy as hnp

from pysyncq import MessageTooLarge, PySyncQ, QueueFull


@pytest.fixture
def q(qname):
    with PySyncQ(qname, size=1 << 16) as q:
        q.open("me", filtself=False)
        yield q


def same(a, b):
    assert type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
    assert a.dtype.str == b.dtype.str  # byte order too
    if a.dtype.names is None and a.dtype.kind in "fc":
        assert np.array_equal(a, b, equal_nan=True)
    else:
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


CASES = [
    np.arange(10, dtype=np.int8),
    np.array([True, False]),
    np.float16([1.5, np.nan]),
    np.array([1 + 2j], ">c16"),
    np.array(["2024-01-01", "NaT"], "M8[ns]"),
    np.array([1, 2], "m8[D]"),
    np.array([b"ab", b""], "S3"),
    np.array(["hé", "x"], "U2"),
    np.zeros((2, 0, 3)),
    np.array(3.5),
    np.zeros((1,) * 32, np.uint16),
    np.zeros(
        3,
        np.dtype(
            {"names": ["a", "b"], "formats": ["<i4", ">f8"], "offsets": [0, 8], "itemsize": 24}
        ),
    ),
    np.zeros(2, np.dtype([("p", [("x", "i2"), ("y", "f4", (2, 3))]), ("q", "S2")], align=True)),
    np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    np.arange(24).reshape(4, 6)[::2, ::-3],  # strided, negative strides
    np.arange(12).reshape(3, 4).T,
    np.broadcast_to(np.arange(3), (4, 3)),
]


@pytest.mark.parametrize("arr", CASES, ids=range(len(CASES)))
def test_an_array_comes_back_equal_private_and_writable(q, arr):
    q.append_array("x", arr)
    sender, mtype, got = q.pop()
    assert (sender, mtype) == ("me", "x")
    same(arr, got)
    assert got.flags.writeable and got.flags.owndata or got.base is not None
    if arr.flags.f_contiguous and not arr.flags.c_contiguous:
        assert got.flags.f_contiguous
    got[...] = got  # writable
    assert not np.shares_memory(got, introspect.copy_buffer(q))


@settings(deadline=None, max_examples=60, suppress_health_check=list(HealthCheck))
@given(
    arr=hnp.arrays(
        hnp.scalar_dtypes() | hnp.byte_string_dtypes() | hnp.unicode_string_dtypes(),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_round_trip_of_any_dtype_and_shape(qname_session, arr):
    q = qname_session
    q.append_array("h", arr)
    same(arr, q.pop()[2])


@pytest.fixture(scope="module")
def qname_session():
    from conftest import new_name

    name = new_name("hyp")
    with PySyncQ(name, size=1 << 16) as q:
        q.open("me", filtself=False)
        yield q


def test_arrays_and_text_mix_and_honour_screens_and_decode(q, qname):
    with PySyncQ(qname, create=False) as r:
        r.open("r")
        r.scrntype.add("skip")
        q.append("t", "text")
        q.append_array("skip", np.zeros(3))
        q.append_array("a", np.arange(3))
        q.append("t", b"\xff")
        assert r.pop() == ("me", "t", "text")
        s, t, body = r.pop(decode=False)
        assert (s, t) == (b"me", b"a") and np.array_equal(body, np.arange(3))
        assert r.pop() == ("me", "t", b"\xff")
        q.append_array("a", np.ones(2))
        assert [m[2].tolist() for m in r(block=True, timer=0.1)] == [[1.0, 1.0]]


def test_bad_arrays_are_refused_with_a_reason(q):
    for bad, why in (
        (np.array([object()]), "object"),
        ([1, 2], "np.asarray"),
        (np.zeros(2, [("o", "O")]), "object"),
    ):
        with pytest.raises(TypeError, match=why):
            q.append_array("x", bad)
    with pytest.raises(MessageTooLarge):
        q.append_array("x", np.zeros(1 << 17, np.uint8))
    assert q.pop() is None  # nothing was written


def test_array_size_limits_behave_like_append(qname):
    with PySyncQ(qname, size=4096) as q, PySyncQ(qname, create=False) as r:
        q.open("w")
        r.open("r")
        q.append_array("x", np.zeros(3000, np.uint8))
        with pytest.raises(QueueFull):
            q.append_array("x", np.zeros(3000, np.uint8), block=True, timer=0.05)
        assert r.pop()[2].shape == (3000,)
        q.append_array("x", np.zeros(3000, np.uint8))


def test_append_of_an_array_warns_once_and_sends_text(q, monkeypatch):
    introspect.forget_array_warning(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q.append("x", np.arange(3))
        q.append("x", np.arange(3))
    assert len(caught) == 1 and "append_array" in str(caught[0].message)
    assert caught[0].category is UserWarning
    assert q.pop()[2] == "[0 1 2]"
    assert (
        "append_array" in PySyncQ.append.__doc__ or "append_array" in PySyncQ.append_array.__doc__
    )


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_arrays_cross_processes(qname, procs, method):
    with PySyncQ(qname, size=1 << 20) as q:
        p = procs.start(workers.array_echo_child, q, "child", method=method)
        q.open("parent")
        q.wait_for_readers(1, timer=60)
        sent = [CASES[i] for i in (0, 3, 4, 6, 7, 11, 12, 13, 14)]
        for a in sent:
            q.append_array("go", a, block=True, timer=30)
        for a in sent:
            m = q.pop(block=True, timer=60)
            assert m is not None and m[1] == "back"
            same(np.ascontiguousarray(a) if not a.flags.f_contiguous else a, m[2])
        q.append("stop")
        procs.join([p])


# -- Batches ------------------------------------------------------------------


def test_extend_and_pop_many_in_order_with_screens(q, qname):
    with PySyncQ(qname, create=False) as r:
        r.open("r")
        assert q.extend("t", ["a", b"b", 3, "é"]) == 4
        assert q.extend("t", []) == 0
        r.scrntype.add("hidden")
        q.extend("hidden", ["x"] * 5)
        q.append_array("arr", np.arange(2))
        got = r.pop_many(10)
        assert [m[:2] for m in got] == [("me", "t")] * 4 + [("me", "arr")]
        assert [m[2] for m in got[:4]] == ["a", "b", "3", "é"]
        assert np.array_equal(got[4][2], np.arange(2))
        assert r.pop_many(10) == [] and r.pop_many(0) == []
        assert r.pop_many(3, block=True, timer=0.05) == []
        q.extend("t", ["1", "2", "3"])
        assert r.pop_many(2, decode=False) == [(b"me", b"t", b"1"), (b"me", b"t", b"2")]
        assert r.pop_many(5, block=True, timer=1) == [("me", "t", "3")]


def test_a_batch_that_wraps_the_ring_and_meets_a_full_queue_counts_exactly(qname):
    with PySyncQ(qname, size=1024) as q, PySyncQ(qname, create=False) as r:
        q.open("w")
        r.open("r")
        total = 0
        expected = []
        for round_ in range(20):
            bodies = [f"{round_}-{i}-" + "x" * (i * 7 % 50) for i in range(40)]
            try:
                n = q.extend("t", bodies)
            except QueueFull as e:
                n = e.written
                assert 0 <= n < len(bodies)
                assert pickle.loads(pickle.dumps(e)).written == n
            expected += bodies[:n]
            total += n
            got = r.pop_many(1000)
            assert [m[2] for m in got] == expected
            expected = []
        assert total > 40  # the ring (1 KiB) wrapped many times
        with pytest.raises(MessageTooLarge) as info:
            q.extend("t", ["ok", "x" * 2000])
        assert info.value.written == 1
        assert [m[2] for m in r.pop_many(5)] == ["ok"]


def test_pop_many_grows_its_buffer_for_a_large_message(q, qname):
    with PySyncQ(qname, create=False) as r:
        r.open("r")
        q.extend("t", ["s", "L" * 20000, "s"])
        got = r.pop_many(5)
        assert [len(m[2]) for m in got] == [1, 20000, 1]
