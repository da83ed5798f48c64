"""Reads: the scan for the next record a reader does not screen, and the pop,
peek and commit of one record, with the lock (``ring_*``) or without it
(``pop_free``)."""

from collections import namedtuple

import numpy as np

from ..layout import (
    BAD_BODY,
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
    KIND_PAD,
    KIND_RESERVED,
    KIND_VOID,
    KIND_WRITER_SHIFT,
    NEED_SPACE,
    NOT_MEMBER,
    OK,
    PENDING,
    REC_HEADER,
    RETRY,
    S_CURSOR,
    S_FLAGS,
    S_RECEIVED,
    S_SCREENED,
    SEQ_MASK,
    SF_READER,
    W_SPACE,
)
from ._intrinsics import (
    atomic_add,
    atomic_cas,
    atomic_load,
    atomic_store,
    copy_bytes,
    fence_acquire,
)
from ._jit import kernel
from .check import (
    NOT_A_RECORD,
    _corrupt,
    geometry_check,
    header_check,
    is_member,
    meta_kind,
    meta_writer,
    record_check,
    record_lens,
    slot_word,
)
from .slots import head_refresh, slot_pin
from .wait import wake_flags

# The screen table (screen.screen_table), in int64 words: the counts of
# senders and of types, then an (offset, length) pair per entry.
_SCR_SENDERS = 0
_SCR_TYPES = 1
_SCR_ENTRY_OFFSET = 2  # + 2 * k for entry k
_SCR_ENTRY_LEN = 3


@kernel()
def _screened(mem, p, length, scr, sw, first, stop):
    """True if bytes ``mem[p:p+length]`` equal one of entries first..stop-1 of
    screen table ``scr``, whose int64 view ``sw`` the caller makes once (a
    view per call costs a reference count, twice, per record)."""
    for k in range(first, stop):
        if sw[_SCR_ENTRY_LEN + 2 * k] != length:
            continue
        off = sw[_SCR_ENTRY_OFFSET + 2 * k]
        same = True
        for j in range(length):
            if mem[p + j] != scr[off + j]:
                same = False
                break
        if same:
            return True
    return False


#: What the scan for a reader's next record found (``_scan``): ``code`` OK,
#: the record at ``pos`` (``size`` bytes, meta word ``meta``, its sender at
#: byte ``offset`` of ``mem``); EMPTY, nothing before the write position
#: ``pos``; PENDING, an unpublished reservation at ``pos`` (``size``, ``meta``);
#: CORRUPT, the record at ``pos`` is not well formed (``meta``: the word that
#: failed).  ``screened``: the records passed on the way because the reader
#: screens them, or because they are void (discarded reservations).
Scan = namedtuple("Scan", "code pos size meta offset screened")

#: A reader's cursor (``_reader_start``): ``status`` OK, the cursor at
#: ``pos``; NOT_MEMBER, not a reader member; or CORRUPT (``C_CURSOR``), the
#: cursor ``pos`` lies outside ``[head, write position]``.
Cursor = namedtuple("Cursor", "status pos")

#: What a pop or a peek answers besides its status, a field for each meaning;
#: which ones hold depends on the status (``pop_fields`` gives them to Python
#: in the places of op_pop's tuple):
#:
#: * OK, NEED_SPACE: ``sender_len``, ``type_len``, ``body_len`` and ``kind`` of
#:   the record, ``need`` bytes in all (NEED_SPACE: more than the caller's
#:   buffer holds); OK also ``writer``, the slot + 1 that appended it, and
#:   ``offset``, where its sender starts in ``mem``.
#: * EMPTY, PENDING: ``seq``, the data sequence to wait on; PENDING also
#:   ``writer``, the reservation's.
#: * CORRUPT: ``word``, the value that failed, and ``at``, its position.
#: * Whenever a scan ran: ``pos`` and ``size``, what the scan stopped at (a
#:   peek's record, to commit).
Reply = namedtuple(
    "Reply", "sender_len type_len body_len kind writer need offset seq word at pos size"
)


@kernel(inline=True)
def no_reply():
    """The ``Reply`` of a status that says it all (NOT_MEMBER, a bad header)."""
    return Reply(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


@kernel(inline=True)
def bad_cursor(cursor):
    """The ``Reply`` for a reader's cursor that lies outside ``[head, write
    position]``: its value, and where it was found (the cursor itself)."""
    return Reply(0, 0, 0, 0, 0, 0, 0, 0, cursor, cursor, 0, 0)


@kernel(inline=True)
def reply(found, seq):
    """The ``Reply`` for scan result ``found``, ``seq`` the data sequence read
    before the scan: the one place a found record is decoded."""
    if found.code == OK:
        lens = record_lens(found.meta, found.size)
        need = lens.sender + lens.mtype + lens.body
        kind, writer = meta_kind(found.meta), meta_writer(found.meta)
        return Reply(
            lens.sender, lens.mtype, lens.body, kind, writer, need, found.offset, 0, 0, 0,
            found.pos, found.size,
        )  # fmt: skip
    if found.code == EMPTY or found.code == PENDING:
        writer = meta_writer(found.meta) if found.code == PENDING else 0
        return Reply(0, 0, 0, 0, writer, 0, 0, seq, 0, 0, found.pos, found.size)
    return Reply(0, 0, 0, 0, 0, 0, 0, 0, found.meta, found.pos, found.pos, found.size)


@kernel(inline=True)
def scan_status(found):
    """The status a pop answers for scan result ``found``: its code, with the
    reason ``C_RECORD`` when it is ``CORRUPT``."""
    return _corrupt(C_RECORD) if found.code == CORRUPT else found.code


@kernel(inline=True)
def pop_fields(status, r):
    """The four values after the status that Python reads from a pop's (and
    a peek's) tuple, for ``status`` and ``Reply`` ``r``: ``(sender_len,
    type_len, body_len, kind)`` for OK, ``kind`` with the writer's slot + 1
    above ``KIND_WRITER_SHIFT``; for NEED_SPACE the bytes needed in place of
    ``body_len``; for EMPTY and PENDING ``(0, 0, seq, writer)``; for CORRUPT
    ``(word, 0, at, 0)``; else zeros."""
    code = status & CODE_MASK
    if code == OK:
        return r.sender_len, r.type_len, r.body_len, r.kind | (r.writer << KIND_WRITER_SHIFT)
    if code == NEED_SPACE:
        return r.sender_len, r.type_len, r.need, r.kind
    if code == EMPTY or code == PENDING:
        return 0, 0, r.seq, r.writer
    if code == CORRUPT:
        return r.word, 0, r.at, 0
    return 0, 0, 0, 0


@kernel()
def _next_record(w, mem, slot, scr, cur, end):
    """Scan from position ``cur`` for the next record ``slot`` does not screen.

    Passes padding, void records and screened records (counting the last
    two in the slot's ``S_SCREENED``: a void record was a reservation,
    counted in ``H_APPENDS`` when it was made).  Returns a ``Scan``: ``OK`` with the record
    at ``pos``; ``EMPTY`` (``pos == end``) or ``PENDING`` (an unpublished
    reservation at ``pos``); or ``CORRUPT`` with the bad word in ``meta``.
    Header checked.
    """
    return _next_in_batch(w, mem, slot, scr, scr.view(np.int64), cur, end)


@kernel()
def _next_in_batch(w, mem, slot, scr, sw, cur, end):
    """``_next_record`` with the screen table's view ``sw`` made once by the
    caller (a batch, or a pop that may scan again)."""
    found = _scan(w, mem, scr, sw, cur, end)
    if found.screened:
        atomic_add(w, slot_word(slot, S_SCREENED), found.screened)
    return found


@kernel()
def _scan(w, mem, scr, sw, cur, end):
    """``_next_in_batch`` that leaves the count of screened records passed in
    the ``Scan`` instead of adding it to a slot."""
    screened = 0
    cap = w[H_CAPACITY]
    base = w[H_RING_OFFSET]
    ns = sw[_SCR_SENDERS]
    nt = sw[_SCR_TYPES]
    while cur < end:
        off = cur % cap
        room = cap - off
        if room < REC_HEADER:
            cur += room
            continue
        rec = record_check(w, cur, end)
        size, meta = rec.size, rec.word
        if size == NOT_A_RECORD:
            return Scan(CORRUPT, cur, 0, meta, 0, screened)
        kind = meta_kind(meta)
        if kind == KIND_PAD:
            cur += size
            continue
        if kind == KIND_VOID:  # counted when reserved: passed, as if screened
            cur += size
            screened += 1
            continue
        if kind == KIND_RESERVED:
            return Scan(PENDING, cur, size, meta, 0, screened)
        p = base + off + REC_HEADER
        if ns + nt:
            lens = record_lens(meta, size)
            if _screened(mem, p, lens.sender, scr, sw, 0, ns) or _screened(
                mem, p + lens.sender, lens.mtype, scr, sw, ns, ns + nt
            ):
                cur += size
                screened += 1
                continue
        return Scan(OK, cur, size, meta, p, screened)
    return Scan(EMPTY, cur, 0, 0, 0, screened)


@kernel()
def _reader_start(w, slot, token):
    """The ``Cursor`` of reader ``slot``.  Header checked."""
    # A writer-only slot's cursor pins nothing, so the records behind it may
    # be overwritten: reading from it could meet garbage.  Refuse.
    if not is_member(w, slot, token) or not w[slot_word(slot, S_FLAGS)] & SF_READER:
        return Cursor(NOT_MEMBER, 0)
    start = w[slot_word(slot, S_CURSOR)]
    if start < w[H_HEAD] or start > w[H_WRITE_POS] or start % 8 != 0:
        return Cursor(_corrupt(C_CURSOR), start)
    return Cursor(OK, start)


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
    the cursor at it.  Returns ``(status, Reply)`` as ``pop_free`` does, the
    record's ``offset`` (of its sender in ``mem``, the type and body
    following), ``pos`` and ``size`` in the ``Reply``: see ``op_peek``.  Lock
    held.
    """
    bad = header_check(w)
    if bad:
        return _corrupt(bad), no_reply()
    start = _reader_start(w, slot, token)
    if start.status == NOT_MEMBER:
        return NOT_MEMBER, no_reply()
    if start.status != OK:
        return start.status, bad_cursor(start.pos)
    seq = atomic_load(w, H_DATA_SEQ) & SEQ_MASK
    found = _next_record(w, mem, slot, scr, start.pos, w[H_WRITE_POS])
    status = scan_status(found)
    moved = _reader_move(w, slot, start.pos, found.pos, status)
    if moved & CODE_MASK == CORRUPT and status & CODE_MASK != CORRUPT:
        return moved, bad_cursor(w[slot_word(slot, S_CURSOR)])
    return moved, reply(found, seq)


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
    if start.status & CODE_MASK == CORRUPT:
        return start.status
    if start.status != OK or start.pos != pos:
        return NOT_MEMBER
    if size < REC_HEADER or pos + size > w[H_WRITE_POS]:
        return NOT_MEMBER
    if pin:
        slot_pin(w, slot, pos)
    w[slot_word(slot, S_RECEIVED)] += 1
    return _reader_move(w, slot, pos, pos + size, OK)


#: Tries of a pop without the lock whose cursor was moved meanwhile (by a
#: writer passing this reader over its own message or the ring's padding)
#: before it answers RETRY.
_POP_TRIES = 8


@kernel(inline=True)
def take_copy(mem, r, out, info):
    """``pop_free``'s take: the sender, type and body back to back into
    ``out``, or ``NEED_SPACE`` when ``out`` is too small (``info`` unused)."""
    if r.need > len(out):
        return NEED_SPACE
    copy_bytes(out, 0, mem, r.offset, r.need)
    return OK


@kernel(inline=True)  # into op_pop: its Reply never goes through memory
def pop_free(w, mem, slot, token, scr, out):
    """Copy the next record that ``slot`` has not read and does not screen,
    without the lock.

    ``scr`` is the screen table built by ``PySyncQ`` (see ``screen_table``):
    records whose sender or type it lists are passed over, and count as read.
    The sender, type and body are copied back to back into ``out``.

    Returns ``(status, Reply)``: ``OK`` with a record; ``EMPTY`` (or
    ``PENDING``: stopped at a reservation) with the data sequence to wait on;
    ``NEED_SPACE`` with the bytes ``out`` must hold (the record stays
    unread); ``NOT_MEMBER`` (also for a writer-only slot); or ``CORRUPT``
    with the bad word's value and position (the records before it are
    passed).  ``WAKE_SPACE`` may be set in ``status``; ``RETRY`` after
    ``_POP_TRIES`` scans whose cursor writers kept moving.

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
    return pop_free_with(w, mem, slot, token, scr, take_copy, out, out)


@kernel(inline=True)
def pop_free_with(w, mem, slot, token, scr, take, dst, info):
    """``pop_free``, the record found handed to ``take(mem, r, dst, info)``
    (a kernel; ``r`` the ``Reply``), which copies what it wants of it to
    ``dst`` (and ``info``) and answers ``OK``; ``BAD_BODY`` (the record is
    passed all the same: its body is malformed); or another code, which
    the pop answers, leaving the record unread (``NEED_SPACE``: ``dst`` is
    too small; ``WRONG_KIND``, ``WRONG_DTYPE``: not a record it takes).
    ``take_copy`` is ``pop_free``'s; pysyncq.jit's take arrays and bytes."""
    bad = geometry_check(w)
    if bad:
        return _corrupt(bad), no_reply()
    cw = slot_word(slot, S_CURSOR)
    cap = w[H_CAPACITY]
    sw = scr.view(np.int64)
    for _ in range(_POP_TRIES):
        if not is_member(w, slot, token) or not w[slot_word(slot, S_FLAGS)] & SF_READER:
            return NOT_MEMBER, no_reply()
        # In this order the words agree whatever writers do meanwhile: the
        # head was at most this cursor, which is at most the write position.
        head = atomic_load(w, H_HEAD)
        start = atomic_load(w, cw)
        # The sequence before the write position: an append after the scan
        # changes it, so a sleeper that saw nothing is never left behind.
        seq = atomic_load(w, H_DATA_SEQ) & SEQ_MASK
        end = atomic_load(w, H_WRITE_POS)
        bad_pos = head < 0 or start < head or start > end or end - start > cap
        if bad_pos or start % 8 != 0 or end % 8 != 0:
            # Impossible while the cursor stays put (writers never write past
            # it + capacity), so either a writer moved it: look again; or
            # the segment is corrupt.
            if atomic_load(w, cw) != start:
                continue
            if not is_member(w, slot, token):
                return NOT_MEMBER, no_reply()
            return _corrupt(C_CURSOR), bad_cursor(start)
        found = _scan(w, mem, scr, sw, start, end)
        if found.code == CORRUPT and atomic_load(w, cw) != start:
            continue  # the records scanned were passed meanwhile, and may be reused
        r = reply(found, seq)
        status = scan_status(found)  # CORRUPT: the records before it are passed
        cur = found.pos
        received = False
        if found.code == OK:
            taken = take(mem, r, dst, info)
            if taken == OK or taken == BAD_BODY:
                cur += found.size
                received = True
            if taken != OK:
                status = taken
        # The copy's loads are done before the membership is looked at: a
        # slot revoked after this look had its records pinned until then.
        fence_acquire()
        if not is_member(w, slot, token):
            return NOT_MEMBER, no_reply()  # what was read may have been reused
        if cur != start:
            if atomic_cas(w, cw, start, cur) != start:
                continue  # a writer moved the cursor: scan again from there
            if found.screened:
                atomic_add(w, slot_word(slot, S_SCREENED), found.screened)
            if received:
                atomic_add(w, slot_word(slot, S_RECEIVED), 1)
            space = wake_flags(w, W_SPACE)
            if space:  # a writer waits: the head may move now
                atomic_add(w, H_SPACE_SEQ, 1)
                status |= space
        return status, r
    return RETRY, no_reply()
