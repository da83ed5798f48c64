"""The kernels that a user's own ``@njit`` code calls through ``pysyncq.jit``:
a record's type and array descriptor written from nopython values, and the
``take`` of ``read.pop_free_with`` that copies an array or bytes message
into the caller's array (or leaves it unread, saying why).

Nothing here waits: ``pysyncq.jit`` loops over these, and hands the waits
to Python (the same policy as every Python call).  The record format is
the Python calls' own (``pysyncq.codec``): a Python reader gets the same
ndarray from a record written here, and a record written by Python's
``append_array`` is read here.
"""

import numpy as np
from numba.core import types
from numba.cpython.unicode import _get_code_point
from numba.extending import overload
from numba.np import numpy_support

from ..layout import (
    BAD_BODY,
    KIND_ARRAY,
    KIND_BYTES,
    KIND_STR,
    MAX_NAME_BYTES,
    NEED_SPACE,
    OK,
    WRONG_DTYPE,
    WRONG_KIND,
)
from ._intrinsics import copy_bytes
from ._jit import kernel

#: ``info``'s words after a pop (``pysyncq.jit`` names them for its users):
#: the element count (the body's bytes for bytes), the dimensions, the codes
#: of the sender and the type (``code``), the record's kind, and the shape.
INFO_COUNT = 0
INFO_NDIM = 1
INFO_SENDER = 2
INFO_TYPE = 3
INFO_KIND = 4
INFO_SHAPE = 8
#: numpy's most dimensions (64; 32 on numpy 1): ``info`` holds that many.
MAX_NDIM = 64
#: Then room for an index per dimension (``_from_fortran``: kernels allocate nothing).
INFO_INDEX = INFO_SHAPE + MAX_NDIM
INFO_WORDS = INFO_INDEX + MAX_NDIM

#: The array descriptor's magic (``codec.MAGIC``) and fixed part.
_MAGIC = (80, 81, 65, 1)  # b"PQA\x01"
_DESC_FIXED = 16
_FORTRAN = 1

_FNV_OFFSET = -3750763034362895579  # 0xcbf29ce484222325 as int64
_FNV_PRIME = 1099511628211


@kernel(inline=True)
def fnv(buf, at, n):
    """The 64-bit FNV-1a hash of ``buf[at:at+n]``: a message type's or a
    sender's ``code``, which ``pysyncq.jit.code`` gives for a str."""
    h = np.int64(_FNV_OFFSET)
    for i in range(n):
        h = (h ^ np.int64(buf[at + i])) * np.int64(_FNV_PRIME)
    return h


@kernel(inline=True)
def put_str(buf, at, s):
    """Write str ``s`` as UTF-8 to ``buf[at:]``; its length in bytes, or -1
    when it is longer than ``MAX_NAME_BYTES`` or than ``buf`` holds."""
    n = at
    end = min(len(buf), at + MAX_NAME_BYTES)
    for i in range(len(s)):
        o = _get_code_point(s, i)  # (iterating would make a str per character)
        if o < 0x80:
            k = 1
        elif o < 0x800:
            k = 2
        elif o < 0x10000:
            k = 3
        else:
            k = 4
        if n + k > end:
            return -1
        if k == 1:
            buf[n] = o
        elif k == 2:
            buf[n] = 0xC0 | (o >> 6)
            buf[n + 1] = 0x80 | (o & 0x3F)
        elif k == 3:
            buf[n] = 0xE0 | (o >> 12)
            buf[n + 1] = 0x80 | ((o >> 6) & 0x3F)
            buf[n + 2] = 0x80 | (o & 0x3F)
        else:
            buf[n] = 0xF0 | (o >> 18)
            buf[n + 1] = 0x80 | ((o >> 12) & 0x3F)
            buf[n + 2] = 0x80 | ((o >> 6) & 0x3F)
            buf[n + 3] = 0x80 | (o & 0x3F)
        n += k
    return n - at


def dtype_text(arr):
    """The dtype text of ``arr`` as the array descriptor holds it
    (``dtype.str``, e.g. ``<f8``), as a tuple of byte values: a constant of
    the compiled code (see the overload below)."""
    return tuple(arr.dtype.str.encode())


@overload(dtype_text, inline="always")
def _dtype_text(arr):
    if not isinstance(arr, types.Array):
        return None
    codes = tuple(numpy_support.as_dtype(arr.dtype).str.encode())

    def impl(arr):
        return codes

    return impl


@kernel(inline=True)
def _put_u32(buf, at, v):
    for i in range(4):
        buf[at + i] = (v >> (8 * i)) & 0xFF


@kernel(inline=True)
def _put_i64(buf, at, v):
    for i in range(8):
        buf[at + i] = (v >> (8 * i)) & 0xFF


@kernel(inline=True)
def _get_u32(mem, at):
    v = 0
    for i in range(4):
        v |= np.int64(mem[at + i]) << (8 * i)
    return v


@kernel(inline=True)
def _get_i64(mem, at):
    v = np.int64(0)
    for i in range(8):
        v |= np.int64(mem[at + i]) << np.int64(8 * i)
    return v


@kernel(inline=True)
def put_desc(buf, at, arr, lead):
    """Write the descriptor of C-ordered array ``arr`` to ``buf[at:]`` (the
    layout of ``codec``: magic, lengths, shape, dtype text, then zeros up to
    where the data lands 8-aligned in the record; ``lead``: the sender's and
    the type's bytes).  Returns its length."""
    text = dtype_text(arr)
    ndim = arr.ndim
    used = _DESC_FIXED + 8 * ndim + len(text)
    pad = -(16 + lead + used) % 8
    n = used + pad
    for i in range(4):
        buf[at + i] = _MAGIC[i]
    _put_u32(buf, at + 4, n)
    _put_u32(buf, at + 8, len(text))
    buf[at + 12] = ndim
    buf[at + 13] = 0  # C order
    buf[at + 14] = 0
    buf[at + 15] = 0
    for d in range(ndim):
        _put_i64(buf, at + _DESC_FIXED + 8 * d, arr.shape[d])
    p = at + _DESC_FIXED + 8 * ndim
    for i in range(len(text)):
        buf[p + i] = text[i]
    for i in range(pad):
        buf[p + len(text) + i] = 0
    return n


@kernel(inline=True)
def _names(mem, r, info):
    info[INFO_SENDER] = fnv(mem, r.offset, r.sender_len)
    info[INFO_TYPE] = fnv(mem, r.offset + r.sender_len, r.type_len)
    info[INFO_KIND] = r.kind


@kernel(inline=True)
def take_array(mem, r, out, info):
    """``pop_free_with``'s take for ``pysyncq.jit.pop_array``: an array
    message whose dtype is ``out``'s, its values copied to the C-contiguous
    ``out`` in C order (element count, dimensions and shape to ``info``), or
    ``WRONG_KIND``, ``WRONG_DTYPE``, ``NEED_SPACE`` (more elements than
    ``out`` holds), ``BAD_BODY`` (the descriptor does not describe the body)."""
    if r.kind != KIND_ARRAY:
        return WRONG_KIND
    p = r.offset + r.sender_len + r.type_len
    blen = r.body_len
    if blen < _DESC_FIXED:
        return BAD_BODY
    for i in range(4):
        if mem[p + i] != _MAGIC[i]:
            return BAD_BODY
    desc_len = _get_u32(mem, p + 4)
    tlen = _get_u32(mem, p + 8)
    ndim = np.int64(mem[p + 12])
    flags = mem[p + 13]
    if ndim > MAX_NDIM or _DESC_FIXED + 8 * ndim + tlen > desc_len or desc_len > blen:
        return BAD_BODY
    text = dtype_text(out)
    at = p + _DESC_FIXED + 8 * ndim
    if tlen != len(text):
        return WRONG_DTYPE
    for i in range(len(text)):
        if mem[at + i] != text[i]:
            return WRONG_DTYPE
    count = np.int64(1)
    for d in range(ndim):
        s = _get_i64(mem, p + _DESC_FIXED + 8 * d)
        if s < 0 or (s > 0 and count > (blen // s)):
            return BAD_BODY
        count *= s
    itemsize = out.itemsize
    if desc_len + count * itemsize != blen:
        return BAD_BODY
    if count > out.size:
        return NEED_SPACE
    for d in range(ndim):
        info[INFO_SHAPE + d] = _get_i64(mem, p + _DESC_FIXED + 8 * d)
    info[INFO_COUNT] = count
    info[INFO_NDIM] = ndim
    _names(mem, r, info)
    dst = out.reshape(out.size).view(np.uint8)
    src = p + desc_len
    if flags & _FORTRAN and ndim > 1:
        _from_fortran(dst, mem, src, info, ndim, count, itemsize)
    else:
        copy_bytes(dst, 0, mem, src, count * itemsize)
    return OK


@kernel()
def _from_fortran(dst, mem, src, info, ndim, count, itemsize):
    """Copy ``count`` elements stored in Fortran order at ``mem[src:]`` to
    ``dst`` in C order (the shape in ``info``, its index as it goes too)."""
    idx = info[INFO_INDEX : INFO_INDEX + ndim]
    idx[:] = 0
    for e in range(count):
        f = 0
        stride = 1
        for d in range(ndim):
            f += idx[d] * stride
            stride *= info[INFO_SHAPE + d]
        copy_bytes(dst, e * itemsize, mem, src + f * itemsize, itemsize)
        d = ndim - 1
        while d >= 0:
            idx[d] += 1
            if idx[d] < info[INFO_SHAPE + d]:
                break
            idx[d] = 0
            d -= 1


@kernel(inline=True)
def take_bytes(mem, r, out, info):
    """``pop_free_with``'s take for ``pysyncq.jit.pop_bytes``: the body of a
    bytes or str message copied to the uint8 array ``out`` (its length to
    ``info``), or ``WRONG_KIND``, ``NEED_SPACE``."""
    if r.kind != KIND_BYTES and r.kind != KIND_STR:
        return WRONG_KIND
    n = r.body_len
    if n > len(out):
        return NEED_SPACE
    copy_bytes(out, 0, mem, r.offset + r.sender_len + r.type_len, n)
    info[INFO_COUNT] = n
    info[INFO_NDIM] = 1
    info[INFO_SHAPE] = n
    _names(mem, r, info)
    return OK


@kernel()
def str_code(s):
    """``fnv`` of str ``s``'s UTF-8 bytes, without making them."""
    h = np.int64(_FNV_OFFSET)
    for i in range(len(s)):
        o = _get_code_point(s, i)
        if o < 0x80:
            h = (h ^ np.int64(o)) * np.int64(_FNV_PRIME)
        elif o < 0x800:
            h = (h ^ np.int64(0xC0 | (o >> 6))) * np.int64(_FNV_PRIME)
            h = (h ^ np.int64(0x80 | (o & 0x3F))) * np.int64(_FNV_PRIME)
        elif o < 0x10000:
            h = (h ^ np.int64(0xE0 | (o >> 12))) * np.int64(_FNV_PRIME)
            h = (h ^ np.int64(0x80 | ((o >> 6) & 0x3F))) * np.int64(_FNV_PRIME)
            h = (h ^ np.int64(0x80 | (o & 0x3F))) * np.int64(_FNV_PRIME)
        else:
            h = (h ^ np.int64(0xF0 | (o >> 18))) * np.int64(_FNV_PRIME)
            h = (h ^ np.int64(0x80 | ((o >> 12) & 0x3F))) * np.int64(_FNV_PRIME)
            h = (h ^ np.int64(0x80 | ((o >> 6) & 0x3F))) * np.int64(_FNV_PRIME)
            h = (h ^ np.int64(0x80 | (o & 0x3F))) * np.int64(_FNV_PRIME)
    return h
