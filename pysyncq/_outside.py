"""Records copied outside the queue lock: reservations and large pops.

Both rest on the publication protocol described in :mod:`pysyncq.layout`:

* A **reservation** (``op_reserve``, under the lock) writes a record's header,
  sender, type and any array descriptor, and leaves the body's bytes for the
  writer, who fills them outside the lock and then publishes the record (one
  swap of its meta word) or voids it (``KIND_VOID``: no reader ever sees it).
  Readers stop at an unpublished reservation; other writers go on after it.
  The slot pins the reservation (``S_PIN``), so its space is never reused
  before then; if the process dies, its slot is reaped and its reservations
  voided.  Loans (:mod:`pysyncq.views`) and every large write (``append``,
  ``aappend``, ``extend`` of a body of ``copy_outside`` bytes or more) use it,
  so that writers never queue behind each other's memcpy.
* A **large pop** (``pop_outside``) finds the record under the lock with the
  read cursor left at it (the cursor pins it: the head, and so the space
  writers may reuse, never passes a cursor), copies it once outside the lock
  straight into the object ``pop`` returns, then commits under the lock.  A
  reader that dies while copying pins the record until it is reaped.

Pin bookkeeping: each handle keeps the positions it pins in ``m.pins`` and
stores their minimum in its slot's ``S_PIN``; every change happens with the
handle's thread lock held.
"""

import time

import numpy as np

from . import _handle, _retry, _status, _wait, kernels
from ._wait import WAKE_BITS, LockBusy, locked, wake
from .codec import decode_array
from .errors import QueueClosed, QueueCorrupt
from .layout import (
    CODE_MASK,
    CORRUPT,
    KIND_ARRAY,
    KIND_MASK,
    KIND_VOID,
    NO_PIN,
    NOT_MEMBER,
    OK,
    REC_HEADER,
)

#: Bodies at least this large are copied outside the queue lock.
COPY_OUTSIDE = 1 << 17


def unpin(q, m, pos):
    """Forget one pin of ``pos``; store the new lowest pin, and wake writers
    waiting for space.  With ``m.lock``."""
    m.pins.remove(pos)
    status = kernels.pin_set(q._seg.mem, m.slot, min(m.pins) if m.pins else NO_PIN)
    if status:
        wake(q._seg, status)


def drain_unpins(q, m):
    """Drop the pins of views whose arrays have been garbage-collected since
    (their finalizers only note the position: they may run at any moment,
    even inside this handle's own locked sections)."""
    if not m.unpins:
        return
    with m.lock:
        while m.unpins:
            pos = m.unpins.pop()
            if pos in m.pins and q._seg.mem is not None and q._m is m:
                unpin(q, m, pos)


def reserve_attempt(m):
    """``op_reserve`` noting the pin of a reservation that succeeds: an op
    for :func:`pysyncq._retry.wait_for_space` and the async writers."""

    def attempt(mem, lockval, *args):
        with m.lock:
            r = kernels.op_reserve(mem, lockval, *args)
            if r[0] & CODE_MASK == OK:
                m.pins.append(r[1])
        return r

    return attempt


def reserve(q, m, sender, mtype, head, nbytes, kind, block, timer):
    """Reserve a record (see the module docstring) and return its position.

    Waits for space and for the lock as ``append`` does; raises as it does.
    """
    args = (m.slot, sender, mtype, head, nbytes, kind)
    attempt = reserve_attempt(m)
    result = attempt(q._mem, m.token, *args)
    if result[0] & CODE_MASK != OK:
        need = len(sender) + len(mtype) + len(head) + nbytes
        result = _retry.wait_for_space(q, m, result, attempt, args, need, block, timer)
    status, pos = result
    if status & WAKE_BITS:
        wake(q._seg, status)
    return pos


def publish(q, m, pos, kind):
    """Publish (or, with ``KIND_VOID``, discard) the reservation at ``pos``."""
    with m.lock:
        mem = q._seg.mem
        if mem is None:
            m.pins.clear()
            raise QueueClosed(f"queue {q.name!r} was closed while a message was being written")
        status = kernels.record_publish(mem, m.slot, pos, kind)
        unpin(q, m, pos)
    if status & CODE_MASK == NOT_MEMBER and kind & KIND_MASK != KIND_VOID:
        _status.revoked(q)
    if status & WAKE_BITS:
        wake(q._seg, status)


def data_offset(seg, pos, lead):
    """Offset in the segment of the bytes ``lead`` bytes into the payload of
    the record at position ``pos``."""
    return seg.ring_offset + pos % seg.capacity + REC_HEADER + lead


def fill(q, m, pos, t, body, kind):
    """Copy ``body`` into the reservation at ``pos`` (made for sender and
    type ``t``), outside the lock, and publish it; void it if the copy fails.
    ``kind`` may carry ``APPEND_SKIP``, applied when the record is published."""
    seg = q._seg
    off = data_offset(seg, pos, len(m.sender_bytes) + len(t))
    try:
        src = body if type(body) is np.ndarray else np.frombuffer(body, np.uint8)
        seg.mem[off : off + len(body)] = src
    except BaseException:
        publish(q, m, pos, KIND_VOID)
        raise
    publish(q, m, pos, kind)


def put(q, m, t, body, kind, block, timer):
    """Append a large body: reserve, copy outside the lock, publish."""
    pos = reserve(q, m, m.sender_bytes, t, b"", len(body), kind & KIND_MASK, block, timer)
    fill(q, m, pos, t, body, kind)


def pop(q, m, decode, lock_deadline):
    """Pop the next record, copying it outside the queue lock: for records
    too large for the handle's copy buffer (``pop``'s ``NEED_SPACE``) of at
    least ``q.copy_outside`` bytes.

    Under the lock, ``op_peek`` passes what comes before the record and leaves
    the cursor at it; outside, the body is copied once, straight from the ring
    into what ``pop`` returns (an array with its dtype, shape and order; str
    when ``decode`` and the body is valid UTF-8; else bytes); under the lock
    again ``op_commit`` moves the cursor past it.  The handle's thread lock is
    held throughout, so another thread's pop neither reads the same record nor
    passes it.  Returns ``(status, fields, a, b)``: fields ``(sender, type,
    body, kind)``, or None with what the peek answered (``EMPTY``,
    ``PENDING``, ``CORRUPT``, ``NOT_MEMBER``) for the caller to handle.  If
    the copy is interrupted (KeyboardInterrupt, a ``MemoryError`` making the
    result) the message stays unread; an array descriptor found corrupt
    raises ``QueueCorrupt`` with the record passed, as ``pop`` does.
    """
    seg = q._seg
    with m.lock:
        scr = _handle.screens(q)
        try:
            found = locked(seg, m.token, kernels.op_peek, (m.slot, scr), lock_deadline)
        except LockBusy as e:
            raise _status.locked_error(q, e, _wait.LOCK_PATIENCE) from None
        status, slen, tlen, blen, kind, offset, pos, size = found
        if status & WAKE_BITS:  # now, not after the copy
            wake(seg, status)
            status &= ~WAKE_BITS
        if status & CODE_MASK != OK:
            return status, None, slen, blen
        mem = seg.mem
        a = offset + slen + tlen
        sender, mtype = mem[offset : offset + slen].tobytes(), mem[offset + slen : a].tobytes()
        error = None
        try:
            body = copy_body(memoryview(mem)[a : a + blen], kind, decode)
        except QueueCorrupt as e:
            body, error = None, e  # as pop does: the record is passed, the error raised
        deadline = time.monotonic() + _wait.LOCK_PATIENCE
        try:
            done = locked(seg, m.token, kernels.op_commit, (m.slot, pos, size, False), deadline)
        except LockBusy as e:
            raise _status.locked_error(q, e, _wait.LOCK_PATIENCE) from None
    if done & WAKE_BITS:
        wake(seg, done)
    if done & CODE_MASK == CORRUPT:
        _status.corrupt(q, done)
    if done & CODE_MASK == NOT_MEMBER:
        _status.revoked(q)  # the slot was freed meanwhile: the copy may be of reused bytes
    if error is not None:
        raise error
    return status, (sender, mtype, body, kind), slen, blen


def copy_body(buf, kind, decode):
    """The one copy of a body out of the ring (``buf``, a memoryview over it):
    a private array for an array record, else str (``decode`` and valid
    UTF-8) or bytes."""
    if kind & KIND_MASK == KIND_ARRAY:
        return decode_array(buf)
    if decode:
        try:
            return str(buf, "utf-8")
        except UnicodeDecodeError:
            pass
    return buf.tobytes()
