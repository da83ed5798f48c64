"""Reads: the scan for the next record a reader does not screen, and the pop,
peek and commit of one record, with the lock (``ring_*``) or without it
(``pop_free``)."""

import numpy as np

from ..layout import (
    BUSY,
    C_CURSOR,
    C_RECORD,
    CODE_MASK,
    CORRUPT,
    EMPTY,
    H_CAPACITY,
    H_DATA_SEQ,
    H_HEAD,
    H_RING_OFFSET,
    H_SPACE_SEQ,
    H_WRITE_POS,
    KIND_ARRAY,
    KIND_PAD,
    KIND_RESERVED,
    KIND_STR,
    KIND_VOID,
    META_WRITER_SHIFT,
    NEED_SPACE,
    NOT_MEMBER,
    OK,
    PENDING,
    REC_HEADER,
    S_CURSOR,
    S_FLAGS,
    S_PIN,
    S_RECEIVED,
    S_SCREENED,
    SF_READER,
    W_SPACE,
)
from ._intrinsics import atomic_add, atomic_cas, atomic_load, atomic_store, copy_bytes
from ._jit import kernel
from .check import (
    _SEQ32,
    _corrupt,
    geometry_check,
    header_check,
    is_member,
    record_check,
    record_lens,
    slot_word,
)
from .slots import head_refresh
from .wait import wake_flags


@kernel()
def _screened(mem, p, length, scr, sw, first, stop):
    """True if bytes ``mem[p:p+length]`` equal one of entries first..stop-1 of
    screen table ``scr``, whose int64 view ``sw`` the caller makes once (a
    view per call costs a reference count, twice, per record)."""
    for k in range(first, stop):
        if sw[3 + 2 * k] != length:
            continue
        off = sw[2 + 2 * k]
        same = True
        for j in range(length):
            if mem[p + j] != scr[off + j]:
                same = False
                break
        if same:
            return True
    return False


@kernel()
def _next_record(w, mem, slot, scr, cur, end):
    """Scan from position ``cur`` for the next record ``slot`` does not screen.

    Passes padding, void records and screened records (counting the latter
    in the slot's ``S_SCREENED``).  Returns ``(code, cur, size, meta)``:
    ``OK`` with the record at ``cur``; ``EMPTY`` (``cur == end``) or
    ``PENDING`` (an unpublished reservation at ``cur``); or ``CORRUPT`` with
    the bad word in ``meta``.  Header checked.
    """
    return _next_in_batch(w, mem, slot, scr, scr.view(np.int64), cur, end)


@kernel()
def _next_in_batch(w, mem, slot, scr, sw, cur, end):
    """``_next_record`` with the screen table's view ``sw`` made once by the
    caller (a batch, or a pop that may scan again)."""
    code, cur, size, meta, screened = _scan(w, mem, scr, sw, cur, end)
    if screened:
        atomic_add(w, slot_word(slot, S_SCREENED), screened)
    return code, cur, size, meta


@kernel()
def _scan(w, mem, scr, sw, cur, end):
    """``_next_in_batch`` that returns the count of screened records passed
    as a fifth value instead of adding it to a slot."""
    screened = 0
    cap = w[H_CAPACITY]
    base = w[H_RING_OFFSET]
    ns = sw[0]
    nt = sw[1]
    while cur < end:
        off = cur % cap
        room = cap - off
        if room < REC_HEADER:
            cur += room
            continue
        size, meta = record_check(w, cur, end)
        if size == 0:
            return CORRUPT, cur, 0, meta, screened
        kind = (meta >> 32) & 0xFF
        if kind == KIND_PAD or kind == KIND_VOID:
            cur += size
            continue
        if kind == KIND_RESERVED:
            # Published by a swap of this word: read it again, atomically.
            meta = atomic_load(w, (base + off) // 8 + 1)
            kind = (meta >> 32) & 0xFF
            if kind == KIND_RESERVED:
                return PENDING, cur, size, meta, screened
            if kind == KIND_VOID:
                cur += size
                continue
            if not KIND_STR <= kind <= KIND_ARRAY:
                return CORRUPT, cur, 0, meta, screened
        if ns + nt:
            slen = meta & 0xFFFF
            tlen = (meta >> 16) & 0xFFFF
            p = base + off + REC_HEADER
            if _screened(mem, p, slen, scr, sw, 0, ns) or _screened(
                mem, p + slen, tlen, scr, sw, ns, ns + nt
            ):
                cur += size
                screened += 1
                continue
        return OK, cur, size, meta, screened
    return EMPTY, cur, 0, 0, screened


@kernel()
def _reader_start(w, slot, token):
    """The cursor of reader ``slot``, or -1 (not a reader member) or -2
    (outside ``[head, write position]``).  Header checked."""
    # A writer-only slot's cursor pins nothing, so the records behind it may
    # be overwritten: reading from it could meet garbage.  Refuse.
    if not is_member(w, slot, token) or not w[slot_word(slot, S_FLAGS)] & SF_READER:
        return -1
    start = w[slot_word(slot, S_CURSOR)]
    if start < w[H_HEAD] or start > w[H_WRITE_POS] or start % 8 != 0:
        return -2
    return start


@kernel()
def _reader_move(w, slot, start, cur, status):
    """Store the cursor ``cur`` (from ``start``) and refresh the head if this
    reader held it; returns ``status`` with the wake bits, or ``CORRUPT``."""
    if cur != start:
        atomic_store(w, slot_word(slot, S_CURSOR), cur)  # the records before cur are read
        if start == w[H_HEAD]:
            more = head_refresh(w)
            if more & CODE_MASK:
                return more
            status |= more
    return status


@kernel()
def ring_peek(w, mem, slot, token, scr):
    """Find the next record ``slot`` has not read and does not screen, for a
    zero-copy view: pass what comes before it (padding, screened) but leave
    the cursor at it.  Returns ``(status, sender_len, type_len, body_len,
    kind, offset)`` as ``pop_free`` (``offset`` is the byte offset of the
    sender in ``mem``, the body following the type), plus the record's
    position and size in ``(status, ...)``'s last two places: see
    ``op_peek``.  Lock held.
    """
    bad = header_check(w)
    if bad:
        return _corrupt(bad), 0, 0, 0, 0, 0, 0, 0
    start = _reader_start(w, slot, token)
    if start == -1:
        return NOT_MEMBER, 0, 0, 0, 0, 0, 0, 0
    if start == -2:
        c = w[slot_word(slot, S_CURSOR)]
        return _corrupt(C_CURSOR), c, 0, c, 0, 0, 0, 0
    seq = atomic_load(w, H_DATA_SEQ) & _SEQ32
    code, cur, size, meta = _next_record(w, mem, slot, scr, start, w[H_WRITE_POS])
    slen = tlen = blen = kind = offset = 0
    status = code
    if code == OK:
        slen, tlen, blen = record_lens(meta, size)
        offset = w[H_RING_OFFSET] + cur % w[H_CAPACITY] + REC_HEADER
        kind = ((meta >> 32) & 0xFF) | (((meta >> META_WRITER_SHIFT) & 0xFFFF) << 8)
    elif code == EMPTY or code == PENDING:
        blen = seq
        if code == PENDING:
            kind = (meta >> META_WRITER_SHIFT) & 0xFFFF
    else:
        status = _corrupt(C_RECORD)
        slen, blen = meta, cur
    moved = _reader_move(w, slot, start, cur, status)
    if moved & CODE_MASK == CORRUPT and status & CODE_MASK != CORRUPT:
        c = w[slot_word(slot, S_CURSOR)]
        return moved, c, 0, c, 0, 0, 0, 0
    return moved, slen, tlen, blen, kind, offset, cur, size


@kernel()
def ring_commit(w, slot, token, pos, size, pin):
    """End a view: move reader ``slot``'s cursor from ``pos`` (the viewed
    record) past it (``size`` bytes), counting it received.  With ``pin``
    the record stays pinned (``S_PIN``) because the view is still in use.
    Returns ``OK`` with wake bits, ``NOT_MEMBER`` (the cursor is no longer at
    ``pos``: the slot was freed meanwhile), or ``CORRUPT``.  Lock held.
    """
    bad = header_check(w)
    if bad:
        return _corrupt(bad)
    start = _reader_start(w, slot, token)
    if start == -2:
        return _corrupt(C_CURSOR)
    if start != pos or size < REC_HEADER or pos + size > w[H_WRITE_POS]:
        return NOT_MEMBER
    if pin:
        pw = slot_word(slot, S_PIN)
        if w[pw] == 0 or pos + 1 < w[pw]:
            atomic_store(w, pw, pos + 1)
    w[slot_word(slot, S_RECEIVED)] += 1
    return _reader_move(w, slot, start, pos + size, OK)


#: Tries of a pop without the lock whose cursor was moved meanwhile (by a
#: writer passing this reader over its own message or the ring's padding)
#: before it answers BUSY.
_POP_TRIES = 8


@kernel()
def pop_free(w, mem, slot, token, scr, out):
    """Copy the next record that ``slot`` has not read and does not screen,
    without the lock.

    ``scr`` is the screen table built by ``PySyncQ`` (see ``screen_table``):
    records whose sender or type it lists are passed over, and count as read.
    The sender, type and body are copied back to back into ``out``.

    Returns ``(status, sender_len, type_len, body_len, kind)``: ``OK`` with a
    record, ``kind`` holding the record kind in its low byte and the writer's
    slot + 1 above it; ``EMPTY`` (or ``PENDING``: stopped at a reservation,
    the writer's slot + 1 in place of ``kind``) with the data sequence to wait
    on in place of ``body_len``; ``NEED_SPACE`` with the bytes ``out`` must
    hold in place of ``body_len`` (the record stays unread); ``NOT_MEMBER``
    (also for a writer-only slot); or ``CORRUPT`` with the bad word's value in
    place of ``sender_len`` and its position in place of ``body_len`` (the
    records before it are passed).  ``WAKE_SPACE`` may be set in ``status``;
    ``BUSY`` after ``_POP_TRIES`` scans whose cursor writers kept moving.

    A reader's cursor has one writer, its owner, and the records from it to
    the write position cannot be reused while it is a member (the head never
    passes a member's cursor).  So: load the data sequence, then the write
    position (acquire: the records before it are complete), scan and copy,
    check that the slot is still this token's (a slot revoked meanwhile may
    have had its records reused: answer ``NOT_MEMBER``), then move the cursor
    with one compare-and-swap from where the scan began.  Writers move a
    cursor only when it is at the write position (passing a reader over its
    own screened message, or the ring's padding), also by compare-and-swap;
    a pop that loses that race scans again.  The head is not refreshed here
    (writers refresh it when the ring looks full); a pop that moves the
    cursor bumps the space sequence and asks for a wake of the writers
    waiting for space if it sees one (a writer raises its ``W_SPACE`` bit
    before the look that decides it sleeps, so one of the two sees the
    other).
    """
    bad = geometry_check(w)
    if bad:
        return _corrupt(bad), 0, 0, 0, 0
    cw = slot_word(slot, S_CURSOR)
    cap = w[H_CAPACITY]
    sw = scr.view(np.int64)
    for _ in range(_POP_TRIES):
        if not is_member(w, slot, token) or not w[slot_word(slot, S_FLAGS)] & SF_READER:
            return NOT_MEMBER, 0, 0, 0, 0
        # In this order the words agree whatever writers do meanwhile: the
        # head was at most this cursor, which is at most the write position.
        head = atomic_load(w, H_HEAD)
        start = atomic_load(w, cw)
        # The sequence before the write position: an append after the scan
        # changes it, so a sleeper that saw nothing is never left behind.
        seq = atomic_load(w, H_DATA_SEQ) & _SEQ32
        end = atomic_load(w, H_WRITE_POS)
        bad_pos = head < 0 or start < head or start > end or end - start > cap
        if bad_pos or start % 8 != 0 or end % 8 != 0:
            # Impossible while the cursor stays put (writers never write past
            # it + capacity), so either a writer moved it: look again; or
            # the segment is corrupt.
            if atomic_load(w, cw) != start:
                continue
            if not is_member(w, slot, token):
                return NOT_MEMBER, 0, 0, 0, 0
            return _corrupt(C_CURSOR), start, 0, start, 0
        code, cur, size, meta, screened = _scan(w, mem, scr, sw, start, end)
        if code == CORRUPT and atomic_load(w, cw) != start:
            continue  # the records scanned were passed meanwhile, and may be reused
        slen = tlen = blen = kind = 0
        status = code
        received = 0
        if code == OK:
            slen, tlen, blen = record_lens(meta, size)
            n = slen + tlen + blen
            if n > len(out):
                status = NEED_SPACE
                blen = n
                kind = (meta >> 32) & 0xFF
            else:
                copy_bytes(out, 0, mem, w[H_RING_OFFSET] + cur % cap + REC_HEADER, n)
                cur += size
                received = 1
                kind = ((meta >> 32) & 0xFF) | (((meta >> META_WRITER_SHIFT) & 0xFFFF) << 8)
        elif code == EMPTY or code == PENDING:
            blen = seq
            if code == PENDING:
                kind = (meta >> META_WRITER_SHIFT) & 0xFFFF
        else:  # CORRUPT: the records before it are passed
            status = _corrupt(C_RECORD)
            slen, blen = meta, cur
        if not is_member(w, slot, token):
            return NOT_MEMBER, 0, 0, 0, 0  # what was read may have been reused
        if cur != start:
            if atomic_cas(w, cw, start, cur) != start:
                continue  # a writer moved the cursor: scan again from there
            if screened:
                atomic_add(w, slot_word(slot, S_SCREENED), screened)
            if received:
                atomic_add(w, slot_word(slot, S_RECEIVED), 1)
            space = wake_flags(w, W_SPACE)
            if space:  # a writer waits: the head may move now
                atomic_add(w, H_SPACE_SEQ, 1)
                status |= space
        return status, slen, tlen, blen, kind
    return BUSY, 0, 0, 0, 0
