"""Entry points: the ``op_*`` kernels that Python calls, one per operation: the
queue lock tried once (``BUSY`` when someone else holds it) around one ring
kernel, then its release and the wakes.

Plain tuples at the boundary
----------------------------
Inside the kernels, results travel as named tuples (``read.Reply``,
``read.Scan``, ``write.Put`` ...), which cost nothing there.  What an entry
point returns to Python is a plain tuple all the same: numba boxes a named
tuple by calling its class, a Python-level ``__new__``, which costs about
0.7 us a call, as much as the rest of an ``op_pop``.  So each entry point
below says what each place of its tuple holds; the places of the longer ones
are named too (``POP_*``, ``PEEK_*``, ``POP_MANY_*``).
"""

import numpy as np

from ..layout import (
    AHEAD_BODY_LEN,
    AHEAD_KIND,
    AHEAD_POS,
    AHEAD_SENDER_LEN,
    AHEAD_TYPE_LEN,
    AHEAD_WORDS,
    BUSY,
    C_RECORD,
    CODE_MASK,
    CONTENDED,
    CORRUPT,
    EMPTY,
    F_UNLINKED,
    H_DATA_SEQ,
    H_FLAGS,
    H_LOCK,
    H_MEMBER_SEQ,
    H_REAPED,
    H_WRITE_POS,
    NEED_SPACE,
    NO_SLOT,
    NOT_A_SLOT,
    NOT_MEMBER,
    OK,
    OPEN_DURABLE,
    OPEN_READER,
    PENDING,
    RETRY,
    S_FLAGS,
    S_PIN,
    S_RECEIVED,
    S_TOKEN,
    SEQ_MASK,
    SEQ_SHIFT,
    SF_DURABLE,
    WAITS_EMPTY_SHIFT,
    WAITS_MASK,
    WAKE_DATA,
    WAKE_MEMBERS,
)
from ._intrinsics import atomic_add, atomic_cas, atomic_load, atomic_store, copy_bytes
from ._jit import BOOL, BUFFER, BYTES, INT, INT64S, READONLY, SCREEN, SEGMENT, kernel
from .batch import ring_pop_many, ring_put_many
from .check import SOUND, _corrupt, header_check, is_member, pop_kind, record_lens, slot_word
from .lock import FREE, lock_release, lock_token, lock_try
from .read import (
    _next_record,
    _reader_move,
    _reader_start,
    pop_fields,
    pop_free,
    ring_commit,
    ring_peek,
)
from .slots import ring_recover, ring_void, slot_leave, slot_linger, slot_open, slot_set_name
from .wait import store_wait, wake_now
from .write import _NO_DATA, COPY_WHOLE, appends_recover, ring_put

#: op_pop's tuple: ``(status, sender_len, type_len, body_len, kind)``, the last
#: four as ``read.pop_fields`` gives them, by status: OK, the record's field
#: lengths (copied to ``out``) and its kind, the writer's slot + 1 above
#: ``KIND_WRITER_SHIFT``; NEED_SPACE, the bytes ``out`` must hold in place of
#: ``body_len``, the kind alone; EMPTY and PENDING, the data sequence to wait on
#: in place of ``body_len`` and (PENDING) the reservation's writer slot + 1 in
#: place of ``kind``; CORRUPT, the value that failed in place of ``sender_len``
#: and its position in place of ``body_len``; otherwise zeros.
POP_STATUS = 0
POP_SENDER_LEN = 1
POP_TYPE_LEN = 2
POP_BODY_LEN = 3
POP_KIND = 4
#: op_peek's tuple: op_pop's five, then the record's offset in ``mem`` (of its
#: sender; OK only), and the position and size of what the scan stopped at.
PEEK_OFFSET = 5
PEEK_POS = 6
PEEK_SIZE = 7
#: op_pop_many's tuple: ``(status, count, fmt_len, runs, arrays)``.
POP_MANY_STATUS = 0
POP_MANY_COUNT = 1
POP_MANY_FMT_LEN = 2
POP_MANY_RUNS = 3
POP_MANY_ARRAYS = 4


@kernel((SEGMENT, INT, INT))
def op_steal(mem, dead, lockval):
    """Take the lock from the dead holder ``dead`` and recover the queue.

    Returns ``RETRY`` (``BUSY``) if ``dead`` no longer holds the lock
    (released, or taken over by someone else first), else the status of the
    recovery.
    """
    w = mem.view(np.int64)
    if dead == FREE:
        return RETRY  # a free lock is taken with op_*, not stolen
    if atomic_cas(w, H_LOCK, dead, lockval) != dead:
        if atomic_cas(w, H_LOCK, dead | CONTENDED, lockval | CONTENDED) != dead | CONTENDED:
            return RETRY
    if header_check(w) == SOUND:
        appends_recover(w)  # before the head is recomputed from the write position
    status = ring_recover(w)
    return status | lock_release(w)


@kernel(
    (SEGMENT, INT, INT, BYTES, BYTES, BYTES, INT),
    (SEGMENT, INT, INT, BYTES, BYTES, READONLY, INT),
    hot=True,
)
def op_append(mem, lockval, slot, sender, mtype, body, kind):
    """``ring_put`` of one record, the body in one piece, under the lock, or
    ``BUSY``: a status."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY
    token = lock_token(lockval)
    status = ring_put(w, mem, slot, token, sender, mtype, body, _NO_DATA, kind, COPY_WHOLE).status
    return wake_now(mem, status | lock_release(w))


@kernel(
    (SEGMENT, INT, INT, BYTES, BYTES, BYTES, BUFFER, INT),
    (SEGMENT, INT, INT, BYTES, BYTES, BYTES, READONLY, INT),
    hot=True,
)
def op_append_array(mem, lockval, slot, sender, mtype, desc, data, kind):
    """``ring_put`` of an array record under the lock, or ``BUSY``: a status."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY
    token = lock_token(lockval)
    status = ring_put(w, mem, slot, token, sender, mtype, desc, data, kind, COPY_WHOLE).status
    return wake_now(mem, status | lock_release(w))


@kernel((SEGMENT, INT, INT, BYTES, BYTES, BYTES, INT, INT))
def op_reserve(mem, lockval, slot, sender, mtype, head, nbytes, kind):
    """Reserve a record under the lock: sender, type and ``head`` (an array
    descriptor, or nothing) written, ``nbytes`` after them left to fill.
    ``(OK, position)`` or ``(status, 0)`` as ``ring_put``; ``(BUSY, 0)``."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY, 0
    put = ring_put(w, mem, slot, lock_token(lockval), sender, mtype, head, _NO_DATA, kind, nbytes)
    return put.status | lock_release(w), put.pos


@kernel((SEGMENT, INT, INT, SCREEN))
def op_peek(mem, lockval, slot, scr):
    """``ring_peek`` under the lock: the eight values of ``PEEK_*``, or
    ``BUSY`` and zeros."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY, 0, 0, 0, 0, 0, 0, 0
    status, r = ring_peek(w, mem, slot, lock_token(lockval), scr)
    sender, mtype, body, kind = pop_fields(status, r)
    return status | lock_release(w), sender, mtype, body, kind, r.offset, r.pos, r.size


@kernel((SEGMENT, INT, INT, INT, INT, BOOL))
def op_commit(mem, lockval, slot, pos, size, pin):
    """``ring_commit`` under the lock, or ``BUSY``: a status."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY
    status = ring_commit(w, slot, lock_token(lockval), pos, size, pin)
    return status | lock_release(w)


@kernel((SEGMENT, INT, INT, SCREEN, BUFFER, INT), hot=True)
def op_pop(mem, lockval, slot, scr, out, waits):
    """``pop_free``, then the slot's wait bits and the wakes; never takes the
    lock (``lockval`` is the caller's token, as for the other ``op_*``).
    Returns the five values of ``POP_*``.

    ``waits`` sets the slot's wait bits in the same step, so that a blocking
    pop that finds nothing needs no other call before it sleeps: its low
    byte is what ``S_WAIT`` must hold after a pop that got a record (the
    bits of the handle's other sleepers), the next byte what it must hold
    after ``EMPTY`` or ``PENDING`` (the same, with ``W_DATA`` for a caller
    about to sleep): ``layout.pop_waits``.  The word is written only when it
    changes; only its owner writes it, holding its handle's thread lock.
    """
    w = mem.view(np.int64)
    status, r = pop_free(w, mem, slot, lock_token(lockval), scr, out)
    code = status & CODE_MASK
    # pop_free checked the header and the membership for these codes.
    if code == OK or code == EMPTY or code == PENDING:
        bits = waits if code == OK else waits >> WAITS_EMPTY_SHIFT
        store_wait(w, slot, bits & WAITS_MASK)
    sender, mtype, body, kind = pop_fields(status, r)
    return wake_now(mem, status), sender, mtype, body, kind


@kernel((SEGMENT, INT, INT, BYTES))
def op_open(mem, lockval, flags, name):
    """``slot_open`` under the lock: ``(OK, slot)``, ``(NO_SLOT, NOT_A_SLOT)``,
    ``(CORRUPT, NOT_A_SLOT)`` or ``(BUSY, NOT_A_SLOT)``.  ``flags``:
    ``OPEN_READER`` for a reader slot.  ``name`` (the sender) is stored in
    the slot for :meth:`stats`.  A queue whose name is already unlinked
    cannot be joined: ``(NOT_MEMBER, NOT_A_SLOT)``."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY, NOT_A_SLOT
    bad = header_check(w)
    if bad:
        return _corrupt(bad) | lock_release(w), NOT_A_SLOT
    if w[H_FLAGS] & F_UNLINKED:
        return NOT_MEMBER | lock_release(w), NOT_A_SLOT
    slot = slot_open(w, lock_token(lockval), flags & OPEN_READER)
    if slot >= 0:
        slot_set_name(mem, slot, name)
        if flags & OPEN_DURABLE:
            w[slot_word(slot, S_FLAGS)] |= SF_DURABLE
    status = (OK | WAKE_MEMBERS) if slot >= 0 else NO_SLOT
    return status | lock_release(w), slot


@kernel((SEGMENT, INT, INT, INT))
def op_linger(mem, lockval, slot, pin):
    """``slot_linger`` of the caller's own slot under the lock, or ``BUSY``:
    a status (``CORRUPT`` on a corrupt header: then the caller leaves)."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY
    bad = header_check(w)
    if bad:
        return _corrupt(bad) | lock_release(w)
    return slot_linger(w, slot, lock_token(lockval), pin) | lock_release(w)


@kernel((SEGMENT, INT, INT, INT, BOOL))
def op_leave(mem, lockval, slot, token, creator):
    """``slot_leave`` under the lock, or ``BUSY``: a status.

    ``token`` is the member that leaves: the caller's own for a close, a dead
    process's for a reap.
    """
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY
    status = slot_leave(w, slot, token, creator)
    if token != lock_token(lockval) and status & CODE_MASK == OK:
        w[H_REAPED] += 1
    return status | lock_release(w)


@kernel((SEGMENT, INT, INT, BYTES, BYTES, BYTES, INT64S, INT64S, INT, INT, INT, INT), hot=True)
def op_extend(mem, lockval, slot, sender, mtype, blob, lens, kinds, kind, first, off, count):
    """``ring_put_many`` under the lock, then the wakes (``wake_now``):
    ``(status, n, off)`` as its ``PutMany``, or ``(BUSY, 0, off)``."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY, 0, off
    token = lock_token(lockval)
    put = ring_put_many(
        w, mem, slot, token, sender, mtype, blob, lens, kinds, kind, first, off, count
    )
    return wake_now(mem, put.status | lock_release(w)), put.count, put.off


@kernel((SEGMENT, INT, INT, SCREEN, BUFFER, BUFFER, INT64S, INT), hot=True)
def op_pop_many(mem, lockval, slot, scr, out, fmt, segs, limit):
    """``ring_pop_many`` under the lock, then the wakes (``wake_now``): the
    five values of ``POP_MANY_*`` as its ``PopMany``, or ``(BUSY, 0, 0, 0, 0)``."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY, 0, 0, 0, 0
    r = ring_pop_many(w, mem, slot, lock_token(lockval), scr, out, fmt, segs, limit)
    return wake_now(mem, r.status | lock_release(w)), r.count, r.fmt_len, r.runs, r.arrays


@kernel((SEGMENT, INT, INT, INT))
def op_adopt(mem, lockval, slot, dead):
    """Take over durable ``slot`` from its dead owner ``dead`` (judged dead by
    the caller), keeping its cursor; its unpublished reservations are voided.
    ``OK`` (with wake bits), ``NOT_MEMBER`` if the slot is no longer that
    durable member, ``CORRUPT`` or ``BUSY``."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
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
    atomic_store(w, slot_word(slot, S_TOKEN), lock_token(lockval))
    atomic_add(w, H_MEMBER_SEQ, 1)
    return status | lock_release(w)


@kernel((SEGMENT, INT, INT, SCREEN, BUFFER, INT64S, INT, INT))
def op_read_ahead(mem, lockval, slot, scr, out, lens, limit, start):
    """Copy up to ``limit`` records that ``slot`` does not screen, from
    position ``start`` (its cursor if ``start`` is behind it, or is
    ``FROM_CURSOR``), into ``out``, without moving the cursor: they stay
    pinned until ``op_commit_to``.

    ``lens`` gets ``AHEAD_WORDS`` words per record: ``(sender_len, type_len,
    body_len, kind, position)`` (``AHEAD_*``; ``kind`` with the writer's
    slot + 1 above ``KIND_WRITER_SHIFT``).  Returns ``(status, count,
    next)``: ``next`` the position after the last record copied (or passed:
    padding, void, screened); status ``OK``, or what ended the batch:
    ``EMPTY``/``PENDING`` with the data sequence above ``SEQ_SHIFT``,
    ``NEED_SPACE`` with the bytes needed above it, ``NOT_MEMBER``,
    ``CORRUPT``; ``BUSY`` with 0 records.
    """
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY, 0, start
    bad = header_check(w)
    if bad:
        return _corrupt(bad) | lock_release(w), 0, start
    cursor = _reader_start(w, slot, lock_token(lockval))
    end = w[H_WRITE_POS]
    if cursor.status != OK:  # NOT_MEMBER, or CORRUPT (C_CURSOR)
        return cursor.status | lock_release(w), 0, start
    # Behind the cursor (or FROM_CURSOR): from the cursor.  A writer that pads
    # the end of the ring moves a cursor at the write position past the
    # padding, so a position read ahead to earlier can fall behind it.
    start = max(start, cursor.pos)
    if start > end or start % 8 != 0:
        return NOT_MEMBER | lock_release(w), 0, start
    seq = atomic_load(w, H_DATA_SEQ) & SEQ_MASK
    cur = start
    at = 0
    n = 0
    status = OK
    while n < limit:
        found = _next_record(w, mem, slot, scr, cur, end)
        cur = found.pos  # what the scan passed is read ahead, whatever it found
        if found.code != OK:
            code = found.code
            status = code | (seq << SEQ_SHIFT) if code != CORRUPT else _corrupt(C_RECORD)
            break
        slen, tlen, blen = record_lens(found.meta, found.size)
        k = slen + tlen + blen
        if at + k > len(out):
            status = NEED_SPACE | (k << SEQ_SHIFT)
            break
        copy_bytes(out, at, mem, found.offset, k)
        row = AHEAD_WORDS * n
        lens[row + AHEAD_SENDER_LEN] = slen
        lens[row + AHEAD_TYPE_LEN] = tlen
        lens[row + AHEAD_BODY_LEN] = blen
        lens[row + AHEAD_KIND] = pop_kind(found.meta)
        lens[row + AHEAD_POS] = cur
        at += k
        cur += found.size
        n += 1
    return status | lock_release(w), n, cur


@kernel((SEGMENT, INT, INT, INT, INT))
def op_commit_to(mem, lockval, slot, pos, count):
    """Move reader ``slot``'s cursor forward to ``pos`` (a position that
    ``op_read_ahead`` returned), counting ``count`` records received: a
    status."""
    w = mem.view(np.int64)
    if not lock_try(w, lockval):
        return BUSY
    bad = header_check(w)
    if bad:
        return _corrupt(bad) | lock_release(w)
    cursor = _reader_start(w, slot, lock_token(lockval))
    if cursor.status != OK or pos > w[H_WRITE_POS] or pos % 8 != 0:
        return NOT_MEMBER | lock_release(w)
    start = cursor.pos
    if pos <= start:  # passed already (a writer moved the cursor past padding)
        return OK | lock_release(w)
    w[slot_word(slot, S_RECEIVED)] += count
    return _reader_move(w, slot, start, pos, OK) | lock_release(w)
