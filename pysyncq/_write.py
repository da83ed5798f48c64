"""Writing one message: ``append``, ``append_array`` and the relays' raw append.

The hot path is one kernel call (``op_append``: take the lock, write the
record, publish, release, wake): everything that is not an immediate success
goes to :func:`pysyncq._retry.wait_for_space`.  Bodies of ``copy_outside``
bytes or more go the reservation way (:mod:`pysyncq._outside`): reserved
under the lock, copied outside it.  A message this handle would screen
itself is written with ``APPEND_SKIP``, so that its own cursor passes it at
once and it never pins space for it.
"""

import numpy as np

from . import _handle, _load, _outside, _retry, _status, kernels
from ._args import check_timer, msgtype_bytes
from ._wait import WAKE_BITS, wake
from .codec import encode_array, warn_array_as_text
from .layout import (
    APPEND_SKIP,
    CODE_MASK,
    KIND_ARRAY,
    KIND_BYTES,
    KIND_STR,
    MAX_NAME_BYTES,
)
from .screen import as_bytes

#: Contiguous bytearray and memoryview bodies this large or larger are copied
#: straight from their buffer; smaller ones through ``bytes()``, which costs
#: less than wrapping the buffer in an array and the dispatched kernel call.
BUFFER_DIRECT = 1 << 15

#: ``op_append`` past numba's dispatcher (see ``_load``), found by warm_up.
_op_append = kernels.op_append


def use_entry_points():
    """Call the hot kernels past numba's dispatcher from now on (after
    ``warm_up`` found their entry points)."""
    global _op_append
    _op_append = _load.FAST.get("op_append", kernels.op_append)


def append(q, msgtype="", msg="", block=False, timer=0.5):
    """Append a message: ``(sender, msgtype, msg)`` for every other reader.

    ``msgtype`` and ``msg`` may be str or bytes (written as they are) or any
    object (written as ``str(obj)``).  A ``bytearray`` or ``memoryview``
    body is sent as bytes: its bytes are copied straight into the queue
    when it is C-contiguous (a memoryview of any buffer: an array, an
    ``mmap``...), or in C order, as ``bytes(msg)`` gives them, when not;
    the reader gets ``bytes`` (or str, decoded, as for any body).  When the
    queue is full: raise :class:`QueueFull` (a ``MemoryError``) at once, or
    with ``block=True`` wait up to ``timer`` seconds (None: for ever) for
    space, then raise.  A message too large for even an empty queue raises
    :class:`MessageTooLarge` (also a ``MemoryError``) at once.

    A numpy array given here travels as ``str(arr)``, as in pysyncq 0.0.1
    (with a one-time ``UserWarning``): to send the array itself, use
    :meth:`append_array`.
    """
    m = q._m
    if m is None:
        _status.not_member(q)
    if type(timer) is not float or not timer >= 0:
        timer = check_timer(timer)
    t = msgtype.encode() if type(msgtype) is str else as_bytes(msgtype)
    if type(msg) is str:
        body, kind = msg.encode(), KIND_STR
    elif type(msg) is bytes:
        body, kind = msg, KIND_BYTES
    elif isinstance(msg, (bytes, bytearray, memoryview)):
        body, kind = buffer_body(msg), KIND_BYTES
        if type(body) is not bytes:  # a large buffer: copied straight from it
            return append_buffer(q, m, t, body, block, timer)
    else:
        if isinstance(msg, np.ndarray):
            warn_array_as_text()
        body, kind = str(msg).encode(), KIND_STR
    if len(t) > MAX_NAME_BYTES:
        raise ValueError(f"msgtype is {len(t)} bytes long; the limit is {MAX_NAME_BYTES}")
    # _handle.skips(q, m, t), written out: this is the hot path.
    if q._skip_at != q._changes[0]:
        _handle.skip_refresh(q, m)
    if q._skip_own or (q._skip_types and t in q._skip_types):
        kind |= APPEND_SKIP  # we would screen it: do not pin it either
    if len(body) >= q.copy_outside:
        return _outside.put(q, m, t, body, kind, block, timer)
    status = _op_append(q._mem, m.token, m.slot, m.sender_bytes, t, body, kind)
    if status & CODE_MASK:
        args = (m.slot, m.sender_bytes, t, body, kind)
        need = len(m.sender_bytes) + len(t) + len(body)
        status = _retry.wait_for_space(q, m, status, kernels.op_append, args, need, block, timer)
    if status & WAKE_BITS:
        wake(q._seg, status)


def append_raw(q, sender, mtype, body, kind, block=False, timer=0.5):
    """Append a record as it is: ``sender``, ``mtype`` and ``body`` bytes and
    a ``KIND_*``.  For relays (the Redis bridge), which append in the name of
    the process that wrote the message elsewhere."""
    m = q._m
    if m is None:
        _status.not_member(q)
    timer = check_timer(timer)
    if len(sender) > MAX_NAME_BYTES or len(mtype) > MAX_NAME_BYTES:
        raise ValueError(f"sender and msgtype are limited to {MAX_NAME_BYTES} bytes")
    if sender in q._scrnsend or mtype in q._scrntype:
        kind |= APPEND_SKIP
    _put(q, m, _op_append, sender, mtype, body, kind, block, timer)


def _put(q, m, op, sender, mtype, body, kind, block, timer):
    """One record by ``op`` (``op_append``, or its entry point for bytes
    bodies), waiting for space and the lock as every append does."""
    args = (m.slot, sender, mtype, body, kind)
    status = op(q._mem, m.token, *args)
    if status & CODE_MASK:
        need = len(sender) + len(mtype) + len(body)
        status = _retry.wait_for_space(q, m, status, kernels.op_append, args, need, block, timer)
    if status & WAKE_BITS:
        wake(q._seg, status)


def append_array(q, mtype, arr, block=False, timer=0.5):
    """Append a numpy array as it is: dtype (byte order, structured fields),
    shape, order and values, with no pickle.

    Readers' ``pop()`` returns ``(sender, mtype, ndarray)``: a private,
    writable copy equal to ``arr``.  C- and Fortran-ordered arrays are copied
    straight into the queue (Fortran order comes back Fortran-ordered); any
    other layout is sent as a C-ordered copy.  Every dtype without Python
    objects is accepted; object dtypes and non-arrays raise ``TypeError``
    (use ``np.asarray(obj)``).  Full queue, ``block`` and ``timer``: as
    :meth:`append`.
    """
    m = q._m
    if m is None:
        _status.not_member(q)
    if type(timer) is not float or not timer >= 0:
        timer = check_timer(timer)
    t = msgtype_bytes(mtype)
    desc, data = encode_array(arr, len(m.sender_bytes) + len(t))
    kind = KIND_ARRAY | (APPEND_SKIP if _handle.skips(q, m, t) else 0)
    args = (m.slot, m.sender_bytes, t, desc, data, kind)
    # The entry point past numba's dispatcher takes exactly the warm-up's
    # types: a writable flat uint8 view (a read-only array's is not).
    if data.flags.writeable:
        op = _load.FAST.get("op_append_array") or _load.fast("op_append_array")
    else:
        op = kernels.op_append_array
    status = op(q._mem, m.token, *args)
    if status & CODE_MASK:
        need = len(m.sender_bytes) + len(t) + len(desc) + len(data)
        op = kernels.op_append_array
        status = _retry.wait_for_space(q, m, status, op, args, need, block, timer)
    if status & WAKE_BITS:
        wake(q._seg, status)


def buffer_body(msg):
    """The body of a ``bytes``, ``bytearray`` or ``memoryview`` message for
    ``append``: a read-only uint8 array over the caller's own buffer when it
    is C-contiguous and at least ``BUFFER_DIRECT`` bytes, else ``bytes(msg)``
    (a non-contiguous memoryview's bytes in C order, as ``tobytes()``)."""
    mv = msg if type(msg) is memoryview else memoryview(msg)
    if mv.nbytes < BUFFER_DIRECT or not mv.c_contiguous:
        return bytes(mv)
    return np.frombuffer(mv.toreadonly(), np.uint8)


def append_buffer(q, m, t, body, block, timer):
    """``append`` of a body that ``buffer_body`` left in the caller's buffer:
    copied from it once, into the ring (outside the lock from
    ``q.copy_outside`` bytes on, as every body)."""
    if len(t) > MAX_NAME_BYTES:
        raise ValueError(f"msgtype is {len(t)} bytes long; the limit is {MAX_NAME_BYTES}")
    kind = KIND_BYTES | (APPEND_SKIP if _handle.skips(q, m, t) else 0)
    if len(body) >= q.copy_outside:
        return _outside.put(q, m, t, body, kind, block, timer)
    # The dispatcher, not the entry point: the body is a read-only array.
    _put(q, m, kernels.op_append, m.sender_bytes, t, body, kind, block, timer)
