"""Entry points: the ``op_*`` kernels that Python calls, one per operation: the
queue lock tried once (``BUSY`` when someone else holds it) around one ring
kernel, then its release and the wakes."""

import numpy as np

from ..layout import (
    BUSY,
    C_CURSOR,
    C_RECORD,
    CODE_MASK,
    CONTENDED,
    CORRUPT,
    EMPTY,
    F_UNLINKED,
    H_CAPACITY,
    H_DATA_SEQ,
    H_FLAGS,
    H_LOCK,
    H_MEMBER_SEQ,
    H_REAPED,
    H_RING_OFFSET,
    H_WRITE_POS,
    META_WRITER_SHIFT,
    NEED_SPACE,
    NO_SLOT,
    NOT_MEMBER,
    OK,
    OPEN_DURABLE,
    OPEN_READER,
    PENDING,
    REC_HEADER,
    S_FLAGS,
    S_PIN,
    S_RECEIVED,
    S_TOKEN,
    SEQ_SHIFT,
    SF_DURABLE,
    WAKE_DATA,
    WAKE_MEMBERS,
)
from ._intrinsics import atomic_add, atomic_cas, atomic_load, atomic_store, copy_bytes
from ._jit import BOOL, BUFFER, BYTES, INT, INT64S, READONLY, SCREEN, SEGMENT, kernel
from .batch import ring_pop_many, ring_put_many
from .check import _SEQ32, _corrupt, header_check, is_member, record_lens, slot_word
from .lock import lock_release
from .read import _next_record, _reader_move, _reader_start, pop_free, ring_commit, ring_peek
from .slots import ring_recover, ring_void, slot_leave, slot_open, slot_set_name
from .wait import store_wait, wake_now
from .write import _NO_DATA, ring_put


@kernel((SEGMENT, INT, INT))
def op_steal(mem, dead, lockval):
    """Take the lock from the dead holder ``dead`` and recover the queue.

    Returns ``BUSY`` if ``dead`` no longer holds the lock (released, or taken
    over by someone else first), else the status of the recovery.
    """
    w = mem.view(np.int64)
    if dead == 0:
        return BUSY  # a free lock is taken with op_*, not stolen
    if atomic_cas(w, H_LOCK, dead, lockval) != dead:
        if atomic_cas(w, H_LOCK, dead | CONTENDED, lockval | CONTENDED) != dead | CONTENDED:
            return BUSY
    status = ring_recover(w)
    return status | lock_release(w)


@kernel(
    (SEGMENT, INT, INT, BYTES, BYTES, BYTES, INT),
    (SEGMENT, INT, INT, BYTES, BYTES, READONLY, INT),
    hot=True,
)
def op_append(mem, lockval, slot, sender, mtype, body, kind):
    """``ring_put`` of one record, the body in one piece, under the lock, or
    ``BUSY``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY
    token = lockval & ~CONTENDED
    status = ring_put(w, mem, slot, token, sender, mtype, body, _NO_DATA, kind, -1)[0]
    return wake_now(mem, status | lock_release(w))


@kernel(
    (SEGMENT, INT, INT, BYTES, BYTES, BYTES, BUFFER, INT),
    (SEGMENT, INT, INT, BYTES, BYTES, BYTES, READONLY, INT),
    hot=True,
)
def op_append_array(mem, lockval, slot, sender, mtype, desc, data, kind):
    """``ring_put`` of an array record under the lock, or ``BUSY``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY
    token = lockval & ~CONTENDED
    status = ring_put(w, mem, slot, token, sender, mtype, desc, data, kind, -1)[0]
    return wake_now(mem, status | lock_release(w))


@kernel((SEGMENT, INT, INT, BYTES, BYTES, BYTES, INT, INT))
def op_reserve(mem, lockval, slot, sender, mtype, head, nbytes, kind):
    """Reserve a record under the lock: sender, type and ``head`` (an array
    descriptor, or nothing) written, ``nbytes`` after them left to fill.
    ``(OK, position)`` or ``(status, 0)`` as ``ring_put``; ``(BUSY, 0)``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY, 0
    status, pos = ring_put(
        w, mem, slot, lockval & ~CONTENDED, sender, mtype, head, _NO_DATA, kind, nbytes
    )
    return status | lock_release(w), pos


@kernel((SEGMENT, INT, INT, SCREEN))
def op_peek(mem, lockval, slot, scr):
    """``ring_peek`` under the lock, or ``BUSY`` (8 values)."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY, 0, 0, 0, 0, 0, 0, 0
    r = ring_peek(w, mem, slot, lockval & ~CONTENDED, scr)
    return r[0] | lock_release(w), r[1], r[2], r[3], r[4], r[5], r[6], r[7]


@kernel((SEGMENT, INT, INT, INT, INT, BOOL))
def op_commit(mem, lockval, slot, pos, size, pin):
    """``ring_commit`` under the lock, or ``BUSY``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY
    status = ring_commit(w, slot, lockval & ~CONTENDED, pos, size, pin)
    return status | lock_release(w)


@kernel((SEGMENT, INT, INT, SCREEN, BUFFER, INT), hot=True)
def op_pop(mem, lockval, slot, scr, out, waits):
    """``pop_free``, then the slot's wait bits and the wakes; never takes the
    lock (``lockval`` is the caller's token, as for the other ``op_*``).

    ``waits`` sets the slot's wait bits in the same step, so that a blocking
    pop that finds nothing needs no other call before it sleeps: its low
    byte is what ``S_WAIT`` must hold after a pop that got a record (the
    bits of the handle's other sleepers), the next byte what it must hold
    after ``EMPTY`` or ``PENDING`` (the same, with ``W_DATA`` for a caller
    about to sleep).  The word is written only when it changes; only its
    owner writes it, holding its handle's thread lock.
    """
    w = mem.view(np.int64)
    status, slen, tlen, blen, kind = pop_free(w, mem, slot, lockval & ~CONTENDED, scr, out)
    code = status & CODE_MASK
    # pop_free checked the header and the membership for these codes.
    if code == OK or code == EMPTY or code == PENDING:
        store_wait(w, slot, waits & 0xFF if code == OK else (waits >> 8) & 0xFF)
    return wake_now(mem, status), slen, tlen, blen, kind


@kernel((SEGMENT, INT, INT, BYTES))
def op_open(mem, lockval, flags, name):
    """``slot_open`` under the lock: ``(OK, slot)``, ``(NO_SLOT, -1)``,
    ``(CORRUPT, -1)`` or ``(BUSY, -1)``.  ``flags``: ``OPEN_READER`` for a
    reader slot.  ``name`` (the sender) is stored in the slot for
    :meth:`stats`.  A queue whose name is already unlinked cannot be joined:
    ``(NOT_MEMBER, -1)``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY, -1
    bad = header_check(w)
    if bad:
        return _corrupt(bad) | lock_release(w), -1
    if w[H_FLAGS] & F_UNLINKED:
        return NOT_MEMBER | lock_release(w), -1
    slot = slot_open(w, lockval & ~CONTENDED, flags & OPEN_READER)
    if slot >= 0:
        slot_set_name(mem, slot, name)
        if flags & OPEN_DURABLE:
            w[slot_word(slot, S_FLAGS)] |= SF_DURABLE
    status = (OK | WAKE_MEMBERS) if slot >= 0 else NO_SLOT
    return status | lock_release(w), slot


@kernel((SEGMENT, INT, INT, INT, BOOL))
def op_leave(mem, lockval, slot, token, creator):
    """``slot_leave`` under the lock, or ``BUSY``.

    ``token`` is the member that leaves: the caller's own for a close, a dead
    process's for a reap.
    """
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY
    status = slot_leave(w, slot, token, creator)
    if token != lockval & ~CONTENDED and status & 0xFF == OK:
        w[H_REAPED] += 1
    return status | lock_release(w)


@kernel((SEGMENT, INT, INT, BYTES, BYTES, BYTES, INT64S, INT64S, INT, INT, INT, INT), hot=True)
def op_extend(mem, lockval, slot, sender, mtype, blob, lens, kinds, kind, first, off, count):
    """``ring_put_many`` under the lock, then the wakes (``wake_now``):
    ``(status, n, off)``, or ``(BUSY, 0, off)``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY, 0, off
    token = lockval & ~CONTENDED
    status, n, off = ring_put_many(
        w, mem, slot, token, sender, mtype, blob, lens, kinds, kind, first, off, count
    )
    return wake_now(mem, status | lock_release(w)), n, off


@kernel((SEGMENT, INT, INT, SCREEN, BUFFER, BUFFER, INT64S, INT), hot=True)
def op_pop_many(mem, lockval, slot, scr, out, fmt, segs, limit):
    """``ring_pop_many`` under the lock, then the wakes (``wake_now``), or
    ``(BUSY, 0, 0, 0, 0)``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY, 0, 0, 0, 0
    r = ring_pop_many(w, mem, slot, lockval & ~CONTENDED, scr, out, fmt, segs, limit)
    return wake_now(mem, r[0] | lock_release(w)), r[1], r[2], r[3], r[4]


@kernel((SEGMENT, INT, INT, INT))
def op_adopt(mem, lockval, slot, dead):
    """Take over durable ``slot`` from its dead owner ``dead`` (judged dead by
    the caller), keeping its cursor; its unpublished reservations are voided.
    ``OK`` (with wake bits), ``NOT_MEMBER`` if the slot is no longer that
    durable member, ``CORRUPT`` or ``BUSY``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY
    bad = header_check(w)
    if bad:
        return _corrupt(bad) | lock_release(w)
    if not is_member(w, slot, dead) or not w[slot_word(slot, S_FLAGS)] & SF_DURABLE:
        return NOT_MEMBER | lock_release(w)
    status = OK | WAKE_MEMBERS
    if ring_void(w, slot):
        status |= WAKE_DATA
    w[slot_word(slot, S_PIN)] = 0
    store_wait(w, slot, 0)
    atomic_store(w, slot_word(slot, S_TOKEN), lockval & ~CONTENDED)
    atomic_add(w, H_MEMBER_SEQ, 1)
    return status | lock_release(w)


@kernel((SEGMENT, INT, INT, SCREEN, BUFFER, INT64S, INT, INT))
def op_read_ahead(mem, lockval, slot, scr, out, lens, limit, start):
    """Copy up to ``limit`` records that ``slot`` does not screen, from
    position ``start`` (its cursor if ``start`` is behind it), into ``out``,
    without moving the cursor: they stay pinned until ``op_commit_to``.

    ``lens`` gets ``(sender_len, type_len, body_len, kind, position)`` per
    record (``kind`` with the writer's slot + 1 above its low byte).  Returns
    ``(status, count, next)``: ``next`` the position after the last record
    copied (or passed: padding, void, screened); status ``OK``, or what ended
    the batch: ``EMPTY``/``PENDING`` with the data sequence above
    ``SEQ_SHIFT``, ``NEED_SPACE`` with the bytes needed above it,
    ``NOT_MEMBER``, ``CORRUPT``; ``BUSY`` with 0 records.
    """
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY, 0, start
    bad = header_check(w)
    if bad:
        return _corrupt(bad) | lock_release(w), 0, start
    cursor = _reader_start(w, slot, lockval & ~CONTENDED)
    end = w[H_WRITE_POS]
    if cursor < 0:
        return (NOT_MEMBER if cursor == -1 else _corrupt(C_CURSOR)) | lock_release(w), 0, start
    # Behind the cursor (or -1): from the cursor.  A writer that pads the end
    # of the ring moves a cursor at the write position past the padding, so a
    # position read ahead to earlier can fall behind it.
    start = max(start, cursor)
    if start > end or start % 8 != 0:
        return NOT_MEMBER | lock_release(w), 0, start
    seq = atomic_load(w, H_DATA_SEQ) & _SEQ32
    cap = w[H_CAPACITY]
    cur = start
    at = 0
    n = 0
    status = OK
    while n < limit:
        code, cur, size, meta = _next_record(w, mem, slot, scr, cur, end)
        if code != OK:
            status = code | (seq << SEQ_SHIFT) if code != CORRUPT else _corrupt(C_RECORD)
            break
        slen, tlen, blen = record_lens(meta, size)
        k = slen + tlen + blen
        if at + k > len(out):
            status = NEED_SPACE | (k << SEQ_SHIFT)
            break
        copy_bytes(out, at, mem, w[H_RING_OFFSET] + cur % cap + REC_HEADER, k)
        lens[5 * n] = slen
        lens[5 * n + 1] = tlen
        lens[5 * n + 2] = blen
        lens[5 * n + 3] = ((meta >> 32) & 0xFF) | (((meta >> META_WRITER_SHIFT) & 0xFFFF) << 8)
        lens[5 * n + 4] = cur
        at += k
        cur += size
        n += 1
    return status | lock_release(w), n, cur


@kernel((SEGMENT, INT, INT, INT, INT))
def op_commit_to(mem, lockval, slot, pos, count):
    """Move reader ``slot``'s cursor forward to ``pos`` (a position that
    ``op_read_ahead`` returned), counting ``count`` records received."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY
    bad = header_check(w)
    if bad:
        return _corrupt(bad) | lock_release(w)
    start = _reader_start(w, slot, lockval & ~CONTENDED)
    if start < 0 or pos > w[H_WRITE_POS] or pos % 8 != 0:
        return NOT_MEMBER | lock_release(w)
    if pos <= start:  # passed already (a writer moved the cursor past padding)
        return OK | lock_release(w)
    w[slot_word(slot, S_RECEIVED)] += count
    return _reader_move(w, slot, start, pos, OK) | lock_release(w)
