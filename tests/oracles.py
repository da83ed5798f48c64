"""Kernels only the tests call: the ring's append and pop under the queue lock,
made of the package's own parts.

``ring_append`` is ``op_append`` without the lock; ``ring_pop`` is the pop
that holds the lock, the simple twin of ``pop_free`` (the package's pop, which
needs none), driven side by side with the reference model (``model.py``).

Compiled in each test session, not cached: numba would judge a cached copy by
this file alone and miss a change in the kernels it is made of.
"""

from numba import njit

from pysyncq.kernels._intrinsics import atomic_load, copy_bytes
from pysyncq.kernels.check import _corrupt, header_check, slot_word
from pysyncq.kernels.read import (
    _next_record,
    _reader_move,
    _reader_start,
    bad_cursor,
    pop_fields,
    reply,
    scan_status,
)
from pysyncq.kernels.write import _NO_DATA, COPY_WHOLE, ring_put
from pysyncq.layout import (
    CODE_MASK,
    CORRUPT,
    H_DATA_SEQ,
    H_WRITE_POS,
    NEED_SPACE,
    NOT_MEMBER,
    OK,
    S_CURSOR,
    S_RECEIVED,
    SEQ_MASK,
)


@njit
def ring_append(w, mem, slot, token, sender, mtype, body, kind):
    """Append one record from ``slot``: ``ring_put`` with the body in one piece."""
    return ring_put(w, mem, slot, token, sender, mtype, body, _NO_DATA, kind, COPY_WHOLE).status


@njit
def ring_pop(w, mem, slot, token, scr, out):
    """Copy the next record that ``slot`` has not read and does not screen.

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
    records before it are passed).  ``WAKE_SPACE`` may be set in ``status``.
    Lock held.
    """
    bad = header_check(w)
    if bad:
        return _corrupt(bad), 0, 0, 0, 0
    start = _reader_start(w, slot, token)
    if start.status == NOT_MEMBER:
        return NOT_MEMBER, 0, 0, 0, 0
    if start.status != OK:
        return start.status, start.pos, 0, start.pos, 0
    # The sequence is read before the scan: a reservation published after the
    # scan saw it changes the sequence, so a sleeper is never left behind.
    seq = atomic_load(w, H_DATA_SEQ) & SEQ_MASK
    found = _next_record(w, mem, slot, scr, start.pos, w[H_WRITE_POS])
    r = reply(found, seq)
    status = scan_status(found)
    cur = found.pos
    if found.code == OK:
        if r.need > len(out):
            status = NEED_SPACE
        else:
            copy_bytes(out, 0, mem, r.offset, r.need)
            cur += found.size
            w[slot_word(slot, S_RECEIVED)] += 1
    moved = _reader_move(w, slot, start.pos, cur, status)
    if moved & CODE_MASK == CORRUPT and status & CODE_MASK != CORRUPT:
        status, r = moved, bad_cursor(w[slot_word(slot, S_CURSOR)])
    sender, mtype, body, kind = pop_fields(status, r)
    return moved, sender, mtype, body, kind
