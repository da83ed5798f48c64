"""Batches: ``PySyncQ.extend`` and ``PySyncQ.pop_many``, many messages per
kernel call (and so per queue lock).

The methods of :class:`pysyncq.PySyncQ` keep the public API and docstrings and
call the functions here with the handle as the first argument.
"""

import time

import numpy as np

from . import kernels, views
from . import queue as _queue
from ._lifecycle import check_int
from ._wait import WAKE_BITS, check_timer, wake
from .codec import decode_array
from .errors import MessageTooLarge, QueueFull
from .layout import (
    APPEND_SKIP,
    CODE_MASK,
    KIND_ARRAY,
    KIND_BYTES,
    KIND_STR,
    NEED_SPACE,
    SEQ_SHIFT,
)

#: Bytes of the buffer a handle's pop_many copies into (at most the capacity).
_BATCH_BUFFER = 1 << 18
_SAME_HEAD = kernels.SAME_HEAD


def _encode_bodies(bodies):
    """``(list of bytes, int64 array of kinds)`` for :meth:`PySyncQ.extend`;
    all-str and all-bytes batches (the common ones) without a call per body."""
    if type(bodies) not in (list, tuple):
        bodies = list(bodies)
    n = len(bodies)
    types = set(map(type, bodies))
    if types <= {str}:
        return [b.encode() for b in bodies], np.full(n, KIND_STR, np.int64)
    if types <= {bytes}:
        return list(bodies), np.full(n, KIND_BYTES, np.int64)
    pieces, kinds = [], np.empty(n, np.int64)
    for i, msg in enumerate(bodies):
        body, kinds[i] = _queue._encode_body(msg)
        pieces.append(body)
    return pieces, kinds


def _batch_fields(m, count, decode):
    """The ``(sender, type, body)`` of ``count`` records that ``op_pop_many``
    copied into ``m.out``.  With ``m.lock``.  One copy out of the buffer, then
    slices of it; a sender and type equal to the previous message's
    (``SAME_HEAD``) are the same objects, sliced and decoded once."""
    _decode = _queue._decode
    lens = m.lens[: 4 * count].reshape(count, 4)
    ends = np.cumsum(lens[:, :3]).tolist()
    kinds = lens[:, 3].tolist()
    data = m.out_mm[: ends[-1]]
    msgs = []
    append = msgs.append
    at = 0
    s = t = None
    for k in range(count):
        a, b, end = ends[3 * k], ends[3 * k + 1], ends[3 * k + 2]
        kind = kinds[k]
        if not kind & _SAME_HEAD or s is None:
            s, t = data[at:a], data[a:b]
            if decode:
                s, t = _decode(s), _decode(t)
        if kind & 0xFF == KIND_ARRAY:
            body = decode_array(m.out[b:end])
        else:
            body = data[b:end]
            if decode:
                try:
                    body = body.decode()
                except UnicodeDecodeError:
                    pass
        append((s, t, body))
        at = end
    return msgs


def extend(q, mtype, bodies, block=False, timer=0.5):
    """:meth:`PySyncQ.extend` of handle ``q``."""
    m = q._m
    if m is None:
        q._member()
    timer = check_timer(timer)
    t = _queue.msgtype_bytes(mtype)
    pieces, kinds = _encode_bodies(bodies)
    if not pieces:
        return 0
    if q._skips(m, t):
        kinds |= APPEND_SKIP
    blob = np.frombuffer(b"".join(pieces), np.uint8)
    ends = np.cumsum(np.fromiter(map(len, pieces), np.int64, len(pieces)))
    total = len(pieces)
    written = 0
    seg = q._seg
    start = time.monotonic()
    deadline = start + timer if block else start
    while True:
        status, n = kernels.op_extend(
            q._mem, m.token, m.slot, m.sender_bytes, t, blob, ends, kinds, written
        )
        written += n
        if status & WAKE_BITS:
            wake(seg, status)
        if written == total:
            return written
        # The next body by the single-message path, from the batch's
        # status: it waits for the lock or space, reaps and raises as
        # append() does; then the batch goes on.
        body = blob[ends[written - 1] if written else 0 : ends[written]]
        args = (m.slot, m.sender_bytes, t, body, int(kinds[written]))
        left = max(0.0, deadline - time.monotonic())
        need = len(m.sender_bytes) + len(t) + len(body)
        try:
            status = q._append_slow(status, m, kernels.op_append, args, need, block, left)
        except (QueueFull, MessageTooLarge) as e:
            e.written = written
            raise
        if status & WAKE_BITS:
            wake(seg, status)
        written += 1
        if written == total:
            return written


def pop_many(q, n, block=False, timer=0.5, decode=True):
    """:meth:`PySyncQ.pop_many` of handle ``q``."""
    m = q._m
    if m is None or not m.reader:
        q._not_reader(m)
    n = check_int(n, "n", 0, 1 << 30)
    timer = check_timer(timer)
    got = _pop_batch(q, m, n, decode)
    if got or n == 0:
        return got
    first = q.pop(block, timer, decode)  # waits, grows, raises as pop does
    if first is None:
        return []
    return [first] + _pop_batch(q, m, n - 1, decode)


def _pop_batch(q, m, n, decode):
    """At most ``n`` messages that are there now, one kernel call per
    buffer-full; [] when the batch kernel could not start (empty, busy
    lock, an error), leaving that to :meth:`PySyncQ.pop`."""
    msgs = []
    if m.unpins:
        views.drain_unpins(q, m)
    if len(m.out) < _BATCH_BUFFER and n > 1:
        with m.lock:
            m.grow(min(_BATCH_BUFFER, q._seg.capacity))
    while len(msgs) < n:
        want = n - len(msgs)
        if len(m.lens) < 4 * want:
            m.lens = np.zeros(4 * want, np.int64)
        with m.lock:
            scr = q._scr if q._scr_at == q._changes[0] else q._screens()
            status, count = kernels.op_pop_many(q._mem, m.token, m.slot, scr, m.out, m.lens, want)
            if count:
                msgs += _batch_fields(m, count, decode)
        if status & WAKE_BITS:
            wake(q._seg, status)
        if status & CODE_MASK != NEED_SPACE:
            break
        if not count:  # the next record alone does not fit: grow for it
            with m.lock:
                m.grow(status >> SEQ_SHIFT)
    return msgs
