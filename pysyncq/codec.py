"""Message bodies: numpy arrays as a record kind, str and bytes, the tuple a pop returns.


An array message's body is ``desc + data``.  ``data`` is the array's memory as
it is (C order, or Fortran order for an array that is only F-contiguous), so a
reader can view it in place; no pickle is involved, and dtypes holding Python
objects are refused.  The descriptor (all integers little-endian)::

    offset   size      field
    0        4         magic: b"PQA" + format version byte 0x01
    4        4         desc_len   u32: length of the whole descriptor, padding
                                  included; the data starts at body[desc_len:]
    8        4         dtype_len  u32: length of the dtype text (<= 1 MiB)
    12       1         ndim       u8:  <= numpy's maximum (64, or 32 on numpy 1)
    13       1         flags      u8:  bit 0 = data in Fortran order; others 0
    14       2         reserved, zero
    16       8*ndim    shape      i64 each, >= 0
    16+8*ndim dtype_len dtype text, UTF-8 (see below)
    ...      0..7      zero padding, so that 16 + lead + desc_len is a
                       multiple of 8: the data lands 8-aligned in the record

The dtype text is ``dtype.str`` for a plain dtype (``<f8``, ``>i2``, ``|S5``,
``<M8[ns]``, ``|V8``), else the ``repr`` of a literal, parsed (on a cache miss
only) with :func:`ast.literal_eval` and checked field by field::

    struct:   ("R", names, formats, offsets, titles, itemsize, aligned)
    subarray: ("A", base, shape)          # formats/base nest these forms

Round trips keep the dtype exactly (``==``, byte order of every field, explicit
offsets and padding, overlapping or out-of-order fields, ``isalignedstruct``,
str titles).  Data round-trips bit for bit (NaN payloads, NaT, struct padding
bytes) when the array is C- or F-contiguous; a non-contiguous array is copied
by numpy first, which may not keep struct padding bytes.  Not kept: dtype
``metadata``; ndarray subclasses arrive as plain ndarrays (a MaskedArray loses
its mask).  Zero-itemsize arrays (``np.dtype([])``) round-trip; ``S0``/``U0``
cannot occur in arrays (numpy makes them ``S1``/``U1``).  Refused with TypeError: non-ndarray
objects including numpy scalars (send ``np.asarray(x)``, a 0-d array), object
dtypes anywhere in a dtype, StringDType and other non-buffer dtypes, non-str
field titles.  Known limit: renaming fields of a *nested* dtype in place after
it was sent is not seen by the encoder's cache.
"""

import ast
import re
import struct
import warnings

import numpy as np

from .errors import QueueCorrupt
from .layout import KIND_ARRAY, KIND_BYTES, KIND_STR

__all__ = ["QueueCorrupt", "array_kind_size", "decode_array", "encode_array"]

MAGIC = b"PQA\x01"
HEADER = struct.Struct("<4sIIBBH")  # magic, desc_len, dtype_len, ndim, flags, reserved
MAX_DTYPE_TEXT = 1 << 20
MAX_DEPTH = 32  # nesting of structs / subarrays
CACHE_SIZE = 256


def _max_ndim():
    for n in (64, 32):
        try:
            np.empty((1,) * n)
            return n
        except ValueError:
            pass
    return 32


MAX_NDIM = _max_ndim()
_u32_at = struct.Struct("<I").unpack_from
_ndarray = np.ndarray
_U8 = np.dtype(np.uint8)
_PLAIN = re.compile(r"[<>|](?:[biufcSUV][0-9]{1,10}|[mM]8(?:\[[0-9]{0,10}[a-zA-Z]{1,3}\])?)")
_enc_cache = {}  # (dtype, shape, fortran, lead % 8) -> (dtype, desc, names)
_dec_cache = {}  # desc bytes -> _parse(desc)


def _corrupt(what):
    return QueueCorrupt(f"corrupt array descriptor: {what}")


# ---------------------------------------------------------------- encoding


def _dtype_literal(dt, depth=0):
    """A dtype as a str (plain) or a nested tuple of literals; TypeError if unsendable."""
    if depth > MAX_DEPTH:
        raise TypeError(f"dtype nested deeper than {MAX_DEPTH} levels cannot be sent")
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return ("A", _dtype_literal(base, depth + 1), tuple(shape))
    if dt.names is not None:
        formats, offsets, titles = [], [], []
        for name in dt.names:
            field = dt.fields[name]
            title = field[2] if len(field) > 2 else None
            if title is not None and not isinstance(title, str):
                raise TypeError(f"field title {title!r} is not a str; only str titles can be sent")
            formats.append(_dtype_literal(field[0], depth + 1))
            offsets.append(field[1])
            titles.append(title)
        return (
            "R",
            tuple(dt.names),
            tuple(formats),
            tuple(offsets),
            tuple(titles),
            dt.itemsize,
            bool(dt.isalignedstruct),
        )
    text = dt.str
    if not _PLAIN.fullmatch(text):
        raise TypeError(f"dtype {dt!r} has no fixed-size raw form; it cannot be sent as an array")
    return text


def _make_desc(dt, shape, fortran, lead):
    if dt.hasobject:
        raise TypeError(
            f"dtype {dt!r} holds Python objects; arrays of objects cannot be sent "
            "(pysyncq does not pickle)"
        )
    lit = _dtype_literal(dt)
    text = (lit if isinstance(lit, str) else repr(lit)).encode("utf-8")
    used = HEADER.size + 8 * len(shape) + len(text)
    pad = -(16 + lead + used) % 8
    head = HEADER.pack(MAGIC, used + pad, len(text), len(shape), fortran, 0)
    return b"".join((head, struct.pack(f"<{len(shape)}q", *shape), text, bytes(pad)))


def _desc(dt, shape, fortran, lead, ent=None):
    """The descriptor for these parameters, from the cache entry ``ent`` if it fits."""
    # equal dtypes can differ: structured ones in isalignedstruct, nesting or
    # (renamed in place) names, so a structured entry must be for this very dtype
    names = dt.names
    if ent is not None and (names is None or (ent[0] is dt and ent[2] == names)):
        return ent[1]
    desc = _make_desc(dt, shape, fortran, lead)
    if len(_enc_cache) >= CACHE_SIZE:
        _enc_cache.clear()
    _enc_cache[dt, shape, fortran, lead & 7] = (dt, desc, names)
    return desc


def _plain(arr):
    if not isinstance(arr, np.ndarray):
        raise TypeError(
            f"{type(arr).__name__} is not a numpy.ndarray; send np.asarray(obj) "
            "(a numpy scalar becomes a 0-d array)"
        )
    return arr.view(np.ndarray)  # subclasses travel as plain arrays


def encode_array(arr, lead=0):
    """Split ``arr`` into ``(desc, data)``: descriptor bytes and a flat uint8 array.

    ``lead`` is the number of record bytes between the 16-byte record header and
    the body (sender plus type lengths); ``desc`` is padded so the data starts
    8-aligned in the record.  ``data`` views ``arr``'s memory when ``arr`` is C-
    or F-contiguous (F-only arrays travel in F order); otherwise it views a
    C-ordered copy.  Raises TypeError for non-ndarrays and unsendable dtypes.
    """
    if type(arr) is not np.ndarray:
        arr = _plain(arr)
    if arr.flags.c_contiguous:
        fortran = 0
    elif arr.flags.f_contiguous:
        fortran = 1
    else:
        arr = arr.copy(order="C")
        fortran = 0
    dt = arr.dtype
    ent = _enc_cache.get((dt, arr.shape, fortran, lead & 7))
    if ent is None or ent[0] is not dt or ent[2] is not None:
        desc = _desc(dt, arr.shape, fortran, lead, ent)
    else:
        desc = ent[1]
    if arr.ndim == 1:
        return desc, arr.view(_U8)
    return desc, arr.ravel("K").view(_U8)


def array_kind_size(arr, lead=0):
    """``len(desc) + len(data)`` of ``encode_array(arr, lead)``, copying nothing."""
    arr = _plain(arr)
    fortran = int(arr.flags.f_contiguous and not arr.flags.c_contiguous)
    key = (arr.dtype, arr.shape, fortran, lead & 7)
    return len(_desc(arr.dtype, arr.shape, fortran, lead, _enc_cache.get(key))) + arr.nbytes


# ---------------------------------------------------------------- decoding


def _ints(x, what, lo=0):
    if type(x) is not tuple or not all(type(i) is int and i >= lo for i in x):
        raise _corrupt(f"{what} is not a tuple of ints >= {lo}")
    return x


def _build_dtype(x, depth=0):
    """The dtype that literal ``x`` describes, checking every part of it."""
    if depth > MAX_DEPTH:
        raise _corrupt(f"dtype nested deeper than {MAX_DEPTH} levels")
    if type(x) is str:
        if not _PLAIN.fullmatch(x):
            raise _corrupt(f"unknown plain dtype {x[:40]!r}")
        return np.dtype(x)
    if type(x) is tuple and len(x) == 3 and x[0] == "A":
        shape = _ints(x[2], "subarray shape")
        if not 0 < len(shape) <= MAX_NDIM:
            raise _corrupt(f"subarray of {len(shape)} dimensions")
        return np.dtype((_build_dtype(x[1], depth + 1), shape))
    if type(x) is tuple and len(x) == 7 and x[0] == "R":
        _, names, formats, offsets, titles, itemsize, aligned = x
        n = len(_ints(offsets, "field offsets"))
        if (
            type(names) is not tuple
            or type(formats) is not tuple
            or type(titles) is not tuple
            or not len(names) == len(formats) == len(titles) == n
            or not all(type(s) is str for s in names)
            or not all(t is None or type(t) is str for t in titles)
            or type(itemsize) is not int
            or type(aligned) is not bool
        ):
            raise _corrupt("malformed struct dtype")
        spec = {
            "names": list(names),
            "formats": [_build_dtype(f, depth + 1) for f in formats],
            "offsets": list(offsets),
            "titles": list(titles),
            "itemsize": itemsize,
        }
        return np.dtype(spec, align=aligned)
    raise _corrupt("dtype text is neither a plain dtype nor a struct or subarray")


def _parse(desc):
    """(dtype, shape, nbytes, simple, fortran, void dtype for structs), or QueueCorrupt."""
    if len(desc) < HEADER.size:
        raise _corrupt(f"body of {len(desc)} bytes is shorter than the descriptor header")
    magic, dlen, tlen, ndim, flags, reserved = HEADER.unpack_from(desc)
    if magic != MAGIC:
        raise _corrupt(f"bad magic {magic!r}, expected {MAGIC!r}")
    if dlen != len(desc):
        raise _corrupt(f"descriptor length {dlen} runs past the body's end")
    if ndim > MAX_NDIM:
        raise _corrupt(f"ndim {ndim} exceeds numpy's maximum {MAX_NDIM}")
    if flags & ~1 or reserved:
        raise _corrupt(f"unknown flags {flags:#x} or reserved bits {reserved:#x} set")
    if tlen > MAX_DTYPE_TEXT:
        raise _corrupt(f"dtype text of {tlen} bytes")
    start = HEADER.size + 8 * ndim
    end = start + tlen
    if not end <= dlen <= end + 7:
        raise _corrupt(f"descriptor length {dlen} does not fit ndim {ndim} and dtype text {tlen}")
    if any(desc[end:]):
        raise _corrupt("padding is not zero")
    shape = struct.unpack_from(f"<{ndim}q", desc, HEADER.size)
    if any(d < 0 for d in shape):
        raise _corrupt(f"negative dimension in shape {shape}")
    try:
        text = desc[start:end].decode("utf-8")
        if text.startswith("("):
            dt = _build_dtype(ast.literal_eval(text))
        else:
            dt = _build_dtype(text)
    except QueueCorrupt:
        raise
    except Exception as e:  # literal_eval or np.dtype refusing hostile input, in any way
        raise _corrupt(f"dtype text does not parse ({type(e).__name__}: {str(e)[:80]})") from None
    if dt.hasobject or dt.subdtype is not None:
        raise _corrupt(f"dtype {str(dt)[:80]} is not an array dtype without objects")
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dt.itemsize
    if nbytes >= 1 << 63:
        raise _corrupt(f"shape {shape} of {dt.itemsize}-byte items overflows")
    void = None if dt.names is None else np.dtype((np.void, dt.itemsize))
    return dt, shape, nbytes, not flags and void is None, flags, void


def decode_array(body, copy=True):
    """The array in ``body`` (any buffer holding ``desc + data`` from encode_array).

    ``copy=True``: a private, writable array owning its memory.  ``copy=False``:
    a read-only view over ``body`` itself, which it keeps referenced.  Same
    dtype, shape and order (F stays F) as the array encoded.  A descriptor or
    length that is not exactly right raises QueueCorrupt, never anything else;
    a ``body`` that is no contiguous buffer raises TypeError.
    """
    if type(body) is not bytes:
        body = memoryview(body)
        if body.ndim != 1 or body.itemsize != 1:
            body = body.cast("B")  # TypeError if body is not contiguous
        if not copy:
            body = body.toreadonly()
    size = len(body)
    if size < 16:
        raise _corrupt(f"body of {size} bytes is shorter than the descriptor header")
    dlen = _u32_at(body, 4)[0]
    key = body[:dlen] if type(body) is bytes else body[:dlen].tobytes()
    ent = _dec_cache.get(key)
    if ent is None:
        ent = _parse(key)
        if len(_dec_cache) >= CACHE_SIZE:
            _dec_cache.clear()
        _dec_cache[key] = ent
    dt, shape, nbytes, simple, fortran, void = ent
    if size - dlen != nbytes:
        raise _corrupt(f"{size - dlen} data bytes for shape {shape} of {dt.itemsize}-byte items")
    try:
        if simple:
            arr = _ndarray(shape, dt, body, dlen)
            return arr.copy() if copy else arr
        order = "F" if fortran else "C"
        if not copy:
            return np.ndarray(shape, dt, body, dlen, None, order)
        if void is None:
            return np.ndarray(shape, dt, body, dlen, None, order).copy(order)
        # numpy copies structs field by field; as opaque voids it is one memcpy
        out = np.empty(shape, dt, order)
        out.view(void)[...] = np.ndarray(shape, void, body, dlen, None, order)
        return out
    except (ValueError, TypeError) as e:  # e.g. dimensions numpy will not take
        raise _corrupt(f"numpy refuses shape {shape} of {dt}: {e}") from None


def decode_at(buf, at, size):
    """``decode_array(buf[at:at+size], copy=True)`` for a handle's copy buffer
    (an ``mmap``): the same result and checks, without a memoryview of the
    body; about half the time for a small array (a pop's hot path)."""
    if size < 16:
        raise _corrupt(f"body of {size} bytes is shorter than the descriptor header")
    dlen = _u32_at(buf, at + 4)[0]
    if dlen > size:
        raise _corrupt(f"descriptor length {dlen} runs past the body's end")
    key = buf[at : at + dlen]
    ent = _dec_cache.get(key)
    if ent is None or not ent[3]:  # not cached yet, or not a plain C-ordered array
        return decode_array(memoryview(buf)[at : at + size])
    dt, shape, nbytes = ent[0], ent[1], ent[2]
    if size - dlen != nbytes:
        raise _corrupt(f"{size - dlen} data bytes for shape {shape} of {dt.itemsize}-byte items")
    return _ndarray(shape, dt, buf, at + dlen).copy()


def descriptor(dtype, shape, lead=0):
    """The descriptor of a C-ordered array of ``dtype`` and ``shape`` that is
    not there yet (for a loan), padded for ``lead`` as ``encode_array`` pads.
    Raises ``TypeError`` for unsendable dtypes, ``ValueError`` for bad shapes."""
    dt = np.dtype(dtype)
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = tuple(int(n) for n in shape)
    if len(shape) > MAX_NDIM or any(n < 0 for n in shape):
        raise ValueError(f"shape {shape} is not a valid array shape")
    return _make_desc(dt, shape, 0, lead), shape


# -- Message bodies and the tuple a pop returns ---------------------------------

_warned_array = False


def warn_array_as_text():
    """Warn, once per process, that an array given to ``append`` goes as text."""
    global _warned_array
    if not _warned_array:
        _warned_array = True
        warnings.warn(
            "a numpy array was given to append(), which sends str(obj) as in pysyncq 0.0.1 "
            "(numpy shortens large arrays with '...'); to send the array itself, with its "
            "dtype and shape, use q.append_array(mtype, arr)",
            UserWarning,
            stacklevel=3,
        )


def encode_body(msg):
    """``(bytes, kind)`` of a message body, by ``PySyncQ.append``'s rules:
    str and bytes as they are, other bytes-likes as bytes, anything else as
    ``str(msg)`` (a numpy array with a one-time warning)."""
    if type(msg) is str:
        return msg.encode(), KIND_STR
    if type(msg) is bytes:
        return msg, KIND_BYTES
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return bytes(msg), KIND_BYTES
    if isinstance(msg, np.ndarray):
        warn_array_as_text()
    return str(msg).encode(), KIND_STR


def decode_text(b):
    """``b`` decoded from UTF-8, or ``b`` itself where it is not valid UTF-8
    (raw bytes rather than losing the message)."""
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b


def message(s, t, b, decode):
    """The tuple ``pop`` returns for fields ``s``, ``t`` (bytes) and body ``b``
    (bytes, or an array): decoded from UTF-8 where they are valid UTF-8."""
    if decode:
        if type(b) is not bytes:
            return (decode_text(s), decode_text(t), b)
        try:
            return (s.decode(), t.decode(), b.decode())
        except UnicodeDecodeError:
            return (decode_text(s), decode_text(t), decode_text(b))
    return (s, t, b)


def record_fields(buf, slen, tlen, blen, kind):
    """``(sender, type, body, kind)`` of a record copied to the start of
    ``buf`` (an mmap): bytes, and an array body decoded into a private array."""
    a = slen + tlen
    if kind & 0xFF == KIND_ARRAY:
        body = decode_at(buf, a, blen)
    else:
        body = buf[a : a + blen]
    return buf[:slen], buf[slen:a], body, kind
