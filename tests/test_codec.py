"""Specification of pysyncq.codec: numpy arrays as descriptor + raw bytes."""

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from pysyncq.codec import (
    MAX_NDIM,
    QueueCorrupt,
    array_kind_size,
    decode_array,
    encode_array,
)
from pysyncq.errors import PySyncQError

SETTINGS = settings(
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ helpers


def assert_same_dtype(x, y):
    """Equal, and equal in what == ignores: byte order, alignment flag, titles, nesting."""
    assert x == y and x.str == y.str and x.itemsize == y.itemsize
    assert x.isalignedstruct == y.isalignedstruct
    assert x.names == y.names
    if x.subdtype is not None:
        assert x.subdtype[1] == y.subdtype[1]
        assert_same_dtype(x.subdtype[0], y.subdtype[0])
    for name in x.names or ():
        fx, fy = x.fields[name], y.fields[name]
        assert fx[1:] == fy[1:]  # offset and title
        assert_same_dtype(fx[0], fy[0])


def field_bytes(a):
    """a's bytes field by field: what a copy must keep (padding is numpy's business)."""
    if a.dtype.names is None:
        return a.tobytes()
    return b"".join(field_bytes(a[name]) for name in a.dtype.names)


def assert_same_array(a, b):
    assert_same_dtype(a.dtype, b.dtype)
    assert a.shape == b.shape
    assert field_bytes(a) == field_bytes(b)  # bit-exact: NaN payloads, NaT, raw voids
    if a.flags.c_contiguous:  # sent raw: padding bytes too
        assert a.tobytes() == b.tobytes()
    elif a.flags.f_contiguous:
        assert a.T.tobytes() == b.T.tobytes()
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        assert b.flags.f_contiguous and not b.flags.c_contiguous
    else:
        assert b.flags.c_contiguous


def roundtrip(a, lead=0):
    desc, data = encode_array(a, lead)
    assert isinstance(desc, bytes) and (16 + lead + len(desc)) % 8 == 0
    assert data.dtype == np.uint8 and data.ndim == 1 and data.nbytes == a.nbytes
    assert array_kind_size(a, lead) == len(desc) + data.nbytes
    body = desc + data.tobytes()
    b = decode_array(body)
    assert_same_array(a, b)
    assert b.flags.writeable and b.flags.owndata
    v = decode_array(body, copy=False)
    assert_same_array(a, v)
    assert not v.flags.writeable
    return desc, data, b


def filled(dt, shape, seed):
    """An array of ``dt`` holding random bytes: every bit pattern, no object."""
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    return np.ndarray(shape, dt, bytearray(np.random.default_rng(seed).bytes(n)))


# ------------------------------------------------------------------ strategies

E = "?"  # either byte order
plain_dtypes = st.one_of(
    npst.boolean_dtypes(),
    npst.integer_dtypes(endianness=E),
    npst.unsigned_integer_dtypes(endianness=E),
    npst.floating_dtypes(endianness=E, sizes=(16, 32, 64)),
    npst.complex_number_dtypes(endianness=E),
    npst.datetime64_dtypes(endianness=E),
    npst.timedelta64_dtypes(endianness=E),
    npst.byte_string_dtypes(endianness=E, min_len=1, max_len=6),
    npst.unicode_string_dtypes(endianness=E, min_len=1, max_len=3),
    st.sampled_from(
        [np.dtype(s) for s in ["V8", "V1", "g", ">g", "G", "M8", ">m8", "M8[25s]", "m8[7D]"]]
    ),
)


@st.composite
def padded_structs(draw, leaves):
    """Explicit offsets, gaps, tail padding, shuffled field order, titles, or align=True."""
    fmts = draw(st.lists(leaves, min_size=1, max_size=4))
    names = [f"f{i}" for i in range(len(fmts))]
    if draw(st.booleans()):
        return np.dtype(list(zip(names, fmts, strict=True)), align=True)
    offsets, at = [], 0
    for f in fmts:
        at += draw(st.integers(0, 5))
        offsets.append(at)
        at += f.itemsize
    order = draw(st.permutations(range(len(fmts))))
    titles = [draw(st.none() | st.just(f"title {i}")) for i in order]
    return np.dtype(
        {
            "names": [names[i] for i in order],
            "formats": [fmts[i] for i in order],
            "offsets": [offsets[i] for i in order],
            "titles": titles,
            "itemsize": at + draw(st.integers(0, 9)),
        }
    )


leaf_or_sub = plain_dtypes | st.builds(
    lambda d, s: np.dtype((d, s)),
    plain_dtypes,
    npst.array_shapes(min_dims=1, max_dims=2, max_side=3),
)
any_dtypes = st.recursive(
    plain_dtypes,
    lambda inner: padded_structs(inner | leaf_or_sub) | npst.array_dtypes(inner, max_size=3),
    max_leaves=6,
) | npst.nested_dtypes(plain_dtypes, max_leaves=5)
shapes = npst.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3)
LAYOUTS = ["C", "F", "T", "rev", "step", "bcast"]


def relayout(a, how):
    if how == "F":
        return np.asfortranarray(a)
    if how == "T":
        return a.T
    if how == "rev" and a.ndim:
        return a[::-1]
    if how == "step":
        return np.stack([a, a], axis=-1)[..., 1]
    if how == "bcast":
        return np.broadcast_to(a, (2,) + a.shape)
    return a


# ------------------------------------------------------------------ round trips


@SETTINGS
@given(any_dtypes, shapes, st.sampled_from(LAYOUTS), st.integers(0, 15), st.integers(0, 2**32))
def test_roundtrip_any_dtype_shape_layout(dt, shape, how, lead, seed):
    roundtrip(relayout(filled(dt, shape, seed), how), lead)


@pytest.mark.parametrize(
    "code",
    [
        "?",
        "i1",
        "i2",
        "i4",
        "i8",
        "u1",
        "u2",
        "u4",
        "u8",
        "f2",
        "f4",
        "f8",
        "g",
        "c8",
        "c16",
        "G",
        ">i2",
        ">i8",
        ">u4",
        ">f2",
        ">f8",
        ">c16",
        ">g",
        "M8[ns]",
        "m8[D]",
        "M8",
        "m8",
        ">M8[us]",
        "M8[25s]",
        "S1",
        "S7",
        "U3",
        ">U2",
        "V8",
        "V3",
    ],
)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 0, 2), (2, 3, 4)])
def test_every_plain_dtype(code, shape):
    a = filled(np.dtype(code), shape, 1)
    roundtrip(a)
    roundtrip(np.asfortranarray(a))


STRUCTS = {
    "padded": np.dtype(
        {"names": ["a", "b"], "formats": ["<i2", ">f8"], "offsets": [2, 8], "itemsize": 24}
    ),
    "aligned": np.dtype([("a", "i1"), ("b", "f8"), ("c", "i2")], align=True),
    "subarray": np.dtype([("f", "i4", (2, 3)), ("g", ">f4", (1,))]),
    "nested": np.dtype([("x", [("p", "u1"), ("q", [("r", ">i4", (2,))])]), ("y", "S3")]),
    "nested_aligned": np.dtype(
        [("x", np.dtype([("p", "u1"), ("q", "f8")], align=True)), ("y", "i1")], align=True
    ),
    "titles": np.dtype({"names": ["a", "b"], "formats": ["i4", "f4"], "titles": ["Alpha", None]}),
    "out_of_order": np.dtype(
        {"names": ["b", "a"], "formats": ["f8", "i1"], "offsets": [8, 0], "itemsize": 16}
    ),
    "overlapping": np.dtype(
        {"names": ["whole", "lo"], "formats": ["<u4", "<u2"], "offsets": [0, 0]}
    ),
    "empty": np.dtype([]),
    "void_field": np.dtype([("v", "V5"), ("t", "M8[ms]")]),
}


@pytest.mark.parametrize("name", sorted(STRUCTS))
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3)])
def test_structured(name, shape):
    a = filled(STRUCTS[name], shape, 2)
    roundtrip(a)
    roundtrip(np.asfortranarray(a), lead=3)


def test_equal_dtypes_that_differ_are_not_confused_by_the_cache():
    aligned = np.dtype([("a", "i1"), ("b", "f8")], align=True)
    plain = np.dtype(
        {"names": ["a", "b"], "formats": ["i1", "f8"], "offsets": [0, 8], "itemsize": 16}
    )
    assert aligned == plain and aligned.isalignedstruct != plain.isalignedstruct
    for _ in range(2):
        for dt in (aligned, plain):
            roundtrip(np.zeros(3, dt))
    dt = np.dtype([("a", "i4"), ("b", "i4")])
    roundtrip(np.zeros(2, dt))
    dt.names = ("c", "d")  # renamed in place: same object, new names
    assert decode_array(b"".join(encode_array(np.zeros(2, dt)))).dtype.names == ("c", "d")


def test_max_ndim():
    assert MAX_NDIM == (64 if np.__version__ >= "2" else 32)
    roundtrip(np.zeros((1,) * MAX_NDIM))
    roundtrip(filled(np.dtype("i1"), (2,) * 10 + (1,) * (MAX_NDIM - 10), 3))


def test_fortran_travels_without_copy_and_comes_back_fortran():
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    desc, data, b = roundtrip(a)
    assert np.shares_memory(data, a)
    assert b.flags.f_contiguous and not b.flags.c_contiguous


@pytest.mark.parametrize(
    "a", [np.arange(10), np.arange(12.0).reshape(3, 4), np.array(3.5), np.array([[1, 2]], ">i4")]
)
def test_contiguous_data_is_not_copied(a):
    desc, data = encode_array(a)
    assert np.shares_memory(data, a)


@pytest.mark.parametrize(
    "a",
    [
        np.arange(20.0)[::3],
        np.arange(10)[::-1],
        np.arange(24).reshape(2, 3, 4).transpose(1, 0, 2),
        np.broadcast_to(np.arange(3.0), (4, 3)),
        np.arange(24.0).reshape(4, 6)[1:3, ::2],
    ],
)
def test_noncontiguous_is_copied_to_c(a):
    desc, data, b = roundtrip(a)
    assert not np.shares_memory(data, a)
    assert b.flags.c_contiguous
    assert np.array_equal(a, b)


def test_subclass_travels_as_ndarray():
    m = np.ma.masked_array([1.0, 2.0], mask=[0, 1])
    b = decode_array(b"".join(encode_array(m)))
    assert type(b) is np.ndarray and np.array_equal(b, m.data)


# ------------------------------------------------------------------ copy / view contracts


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "uint8"])
def test_view_is_readonly_and_shares_body(kind):
    a = np.arange(16.0).reshape(4, 4)
    raw = b"".join(encode_array(a, 5))
    body = {
        "bytes": raw,
        "bytearray": bytearray(raw),
        "memoryview": memoryview(bytearray(raw)),
        "uint8": np.frombuffer(bytearray(raw), np.uint8),
    }[kind]
    v = decode_array(body, copy=False)
    assert not v.flags.writeable and np.array_equal(a, v)
    assert np.shares_memory(v, np.frombuffer(body, np.uint8))
    with pytest.raises(ValueError):
        v[0, 0] = 1
    c = decode_array(body)
    assert c.flags.writeable and c.flags.owndata and c.base is None
    assert not np.shares_memory(c, np.frombuffer(body, np.uint8))
    c[0, 0] = 99
    assert v[0, 0] == 0


@pytest.mark.parametrize("lead", range(16))
def test_data_lands_8_aligned_in_the_record(lead):
    for a in (
        np.arange(7, dtype="i1"),
        np.zeros((2, 3), ">f8"),
        np.array(1j),
        np.zeros(2, STRUCTS["nested"]),
    ):
        desc, data = encode_array(a, lead)
        space = np.zeros(16 + lead + len(desc) + data.nbytes + 8, np.uint8)
        record = space[-space.ctypes.data % 8 :]  # a record starts 8-aligned
        body = record[16 + lead : 16 + lead + len(desc) + data.nbytes]
        body[: len(desc)] = np.frombuffer(desc, np.uint8)
        body[len(desc) :] = data
        assert (body.ctypes.data + len(desc)) % 8 == 0
        v = decode_array(body, copy=False)
        assert v.ctypes.data % 8 == 0 and v.flags.aligned
        assert_same_array(a, v)


# ------------------------------------------------------------------ refusals


class WithObject:
    pass


@pytest.mark.parametrize(
    "obj", [[1, 2], b"abc", 3.0, np.float64(1), np.int32(2), memoryview(b"ab")]
)
def test_non_arrays_refused(obj):
    with pytest.raises(TypeError, match="not a numpy.ndarray.*np.asarray"):
        encode_array(obj)
    with pytest.raises(TypeError):
        array_kind_size(obj)


@pytest.mark.parametrize(
    "dt",
    [
        np.dtype(object),
        np.dtype([("a", "i4"), ("o", "O")]),
        np.dtype([("n", [("o", "O")])]),
        np.dtype([("s", "O", (2,))]),
        np.dtype([("n", [("s", "O", (2, 2))], (3,))]),
    ],
)
def test_objects_refused(dt):
    with pytest.raises(TypeError, match="Python objects.*pickle"):
        encode_array(np.empty(2, dt))


def test_string_dtype_and_odd_titles_refused():
    string_dtype = getattr(getattr(np, "dtypes", None), "StringDType", None)  # numpy >= 2
    if string_dtype is not None:
        with pytest.raises(TypeError):
            encode_array(np.array(["a", "bc"], dtype=string_dtype()))
    dt = np.dtype({"names": ["a"], "formats": ["i4"], "titles": [5]})
    with pytest.raises(TypeError, match="title"):
        encode_array(np.zeros(2, dt))


# ------------------------------------------------------------------ corrupt bodies


def corrupt(body, match=None):
    with pytest.raises(QueueCorrupt, match=match) as e:
        decode_array(body)
    assert "corrupt array descriptor" in str(e.value)


def test_queuecorrupt_is_a_pysyncq_runtime_error():
    assert issubclass(QueueCorrupt, PySyncQError) and issubclass(QueueCorrupt, RuntimeError)


def forge(
    shape=(4,),
    text=b"<f8",
    data=32,
    ndim=None,
    flags=0,
    res=0,
    pad=None,
    magic=b"PQA\x01",
    dlen=None,
):
    ndim = len(shape) if ndim is None else ndim
    used = 16 + 8 * len(shape) + len(text)
    pad = -used % 8 if pad is None else pad
    dlen = used + len(pad if isinstance(pad, bytes) else bytes(pad)) if dlen is None else dlen
    head = struct.pack("<4sIIBBH", magic, dlen, len(text), ndim, flags, res)
    return (
        head
        + struct.pack(f"<{len(shape)}q", *shape)
        + text
        + (pad if isinstance(pad, bytes) else bytes(pad))
        + bytes(data)
    )


def test_forge_is_faithful():
    assert np.array_equal(decode_array(forge()), np.zeros(4))


@pytest.mark.parametrize(
    "body,match",
    [
        (b"", "shorter"),
        (b"PQA\x01" + bytes(8), "shorter"),
        (forge(magic=b"NOPE"), "magic"),
        (forge(dlen=10_000), "past"),
        (forge(ndim=200, shape=()), "ndim"),
        (forge(flags=2), "flags"),
        (forge(res=1), "reserved"),
        (forge(pad=b"\x01"), "padding|length"),
        (forge(shape=(-4,), data=0), "negative"),
        (forge(shape=(2**62, 2**62, 2**62)), "overflow|data bytes"),
        (forge(shape=(2**40,)), "data bytes"),
        (forge(data=31), "data bytes"),
        (forge(data=33), "data bytes"),
        (forge(text=b"|O8"), "plain dtype"),
        (forge(text=b"<q8"), "plain dtype"),
        (forge(text=b"\xff\xfe"), "does not parse"),
        (forge(text=b"__import__('os')"), "plain dtype"),
        (forge(text=b"(__import__('os'),)"), "does not parse"),
        (forge(text=b"(" * 5000 + b")" * 5000), "does not parse"),
        (forge(text=b"('R', ('a',), ('O',), (0,), (None,), 8, False)", data=32), "plain dtype"),
        (forge(text=b"('R', ('a',), ('<f8',), (0,), (None,), 2, False)"), "does not parse"),
        (forge(text=b"('R', ('a',), ('<f8',), (-8,), (None,), 8, False)"), "offsets"),
        (forge(text=b"('A', '<f8', (2,))"), "not an array dtype"),
        (forge(text=b"('A', '<f8', (2**40, 2**40))"), "does not parse"),
        (forge(text=b"{'names': ['a']}"), "plain dtype"),
        (forge(text=b"<f8" * 1000), "plain dtype"),
        (forge(text=b"('R',)" + b" " * 10), "neither"),
        (forge(text=b"(9" + b"9" * 5000 + b",)"), "does not parse"),
        (forge(shape=(2**62, 0), data=0), "refuses"),
        (forge(text=b"('R', (), (), (), (), 0, False)", data=1), "data bytes"),
    ],
)
def test_hostile_descriptors(body, match):
    corrupt(body, match)
    corrupt(bytearray(body), match)


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_are_corrupt(raw):
    corrupt(raw)
    corrupt(b"PQA\x01" + raw)


@SETTINGS
@given(any_dtypes, shapes, st.integers(0, 15), st.data())
def test_flipped_and_truncated_bodies(dt, shape, lead, data):
    body = b"".join(encode_array(filled(dt, shape, 4), lead))
    desc_len = len(encode_array(filled(dt, shape, 4), lead)[0])
    i = data.draw(st.integers(0, desc_len - 1))
    flipped = bytearray(body)
    flipped[i] ^= data.draw(st.integers(1, 255))
    try:
        decode_array(bytes(flipped))  # may still be a valid descriptor, for another array
    except QueueCorrupt:
        pass
    corrupt(body[: data.draw(st.integers(0, len(body) - 1))])
    corrupt(body + b"\0")
