"""Writes: formatting a segment, appending records (making room, padding the
ring's end), publishing reservations, pins and header flags."""

from collections import namedtuple

import numpy as np

from ..layout import (
    APPEND_SKIP,
    APPENDS_SHIFT,
    APPENDS_TAG,
    CODE_MASK,
    FULL,
    H_APPEND_JOURNAL,
    H_APPENDS,
    H_CAPACITY,
    H_CREATOR,
    H_DATA_SEQ,
    H_FLAGS,
    H_HEAD,
    H_INSTANCE,
    H_MAGIC,
    H_NSLOTS,
    H_PIDNS,
    H_RING_OFFSET,
    H_SPACE_SEQ,
    H_TIMENS,
    H_VERSION,
    H_WRITE_POS,
    KIND_MASK,
    KIND_PAD,
    KIND_RESERVED,
    KIND_VOID,
    LAYOUT_VERSION,
    MAGIC,
    META_KIND_SHIFT,
    META_WRITER_SHIFT,
    NOT_MEMBER,
    OK,
    REC_HEADER,
    S_CURSOR,
    S_FLAGS,
    S_PIN,
    S_SCREENED,
    S_SENT,
    S_STATE,
    SEQ_MASK,
    SEQ_SHIFT,
    SF_READER,
    SLOT_ACTIVE,
    TOO_LARGE,
    W_DATA,
    W_SPACE,
)
from ._intrinsics import atomic_add, atomic_cas, atomic_load, atomic_store, copy_bytes
from ._jit import INT, SEGMENT, kernel
from .check import (
    _corrupt,
    geometry_check,
    header_check,
    is_member,
    meta_kind,
    meta_with_kind,
    record_meta,
    record_size,
    slot_hwm,
    slot_word,
    table_slots,
)
from .slots import head_refresh, slot_pin
from .wait import wake_flags, wake_now


@kernel((SEGMENT, INT, INT, INT, INT, INT, INT, INT, INT))
def ring_format(
    mem, capacity, nslots, ring_offset, instance, creator, start_pos, pidns=0, timens=0
):
    """Write an empty queue into ``mem``; the magic word is stored last.

    Only for a segment no other process can use yet.  ``start_pos`` is the
    initial value of every position (0 in use; tests start near 2**62).
    ``pidns``/``timens`` name the creator's namespaces.
    """
    w = mem.view(np.int64)
    w[: ring_offset // 8] = 0
    w[H_VERSION] = LAYOUT_VERSION
    w[H_CAPACITY] = capacity
    w[H_NSLOTS] = nslots
    w[H_RING_OFFSET] = ring_offset
    w[H_INSTANCE] = instance
    w[H_CREATOR] = creator
    w[H_PIDNS] = pidns
    w[H_TIMENS] = timens
    w[H_WRITE_POS] = start_pos
    w[H_HEAD] = start_pos
    w[H_APPEND_JOURNAL] = start_pos  # tag 0, as H_APPENDS: nothing in flight
    atomic_store(w, H_MAGIC, MAGIC)


#: Compare-and-swaps ``flags_set`` tries against other setters before it gives up.
_FLAG_TRIES = 1000


@kernel((SEGMENT, INT))
def flags_set(mem, bits):
    """Set ``bits`` in ``H_FLAGS`` without the lock (compare-and-swap)."""
    w = mem.view(np.int64)
    for _ in range(_FLAG_TRIES):
        old = atomic_load(w, H_FLAGS)
        if old & bits == bits or atomic_cas(w, H_FLAGS, old, old | bits) == old:
            return True
    return False


@kernel()
def _copy_in(mem, p, src):
    copy_bytes(mem, p, src, 0, len(src))
    return p + len(src)


_NO_DATA = np.zeros(0, np.uint8)
#: ``ring_put``'s ``reserve`` for a record copied whole (none reserved to fill).
COPY_WHOLE = -1

#: ``_make_room``'s answer: ``status``, the wake bits ``flags`` of the head's
#: moves, the position ``pos`` the record goes to and the cached ``head``.
Room = namedtuple("Room", "status flags pos head")
#: ``ring_put``'s answer: ``status`` and, when reserved, the record's ``pos``.
Put = namedtuple("Put", "status pos")


@kernel()
def _make_room(w, pos, head, size, cap):
    """Make room for a record of ``size`` bytes at write position ``pos``,
    the head cached as ``head``; lock held, header checked.

    If the ring looks full, refresh the head (the space sequence is read
    first: a pop without the lock that moves a cursor after the refresh
    looked at it bumps the sequence after this read, so a writer that sleeps
    on it is woken).  If the record would cross the ring's end, publish the
    padding up to it on its own and move the readers at its start past it
    (by compare-and-swap: owners pop without the lock), so they never pin it.
    Readers that have read everything pass the padding at once, so in an
    empty ring a record needs only its own size.

    Returns a ``Room``: ``OK`` with the position the record goes to; ``FULL``
    with the space sequence above ``SEQ_SHIFT``; or ``CORRUPT``.
    """
    room = cap - pos % cap
    pad = room if room < size else 0
    flags = 0
    if not (head == pos or pos + pad + size - head <= cap):
        sseq = atomic_load(w, H_SPACE_SEQ) & SEQ_MASK
        more = head_refresh(w)
        if more & CODE_MASK:
            return Room(more, 0, pos, head)
        flags |= more
        head = w[H_HEAD]
        if not (head == pos or pos + pad + size - head <= cap):
            return Room(FULL | (sseq << SEQ_SHIFT), flags, pos, head)
    if pad:
        if pad >= REC_HEADER:
            at = (w[H_RING_OFFSET] + pos % cap) // 8
            w[at] = pad
            w[at + 1] = KIND_PAD << META_KIND_SHIFT
        atomic_store(w, H_WRITE_POS, pos + pad)
        for i in range(slot_hwm(w)):
            if w[slot_word(i, S_STATE)] == SLOT_ACTIVE:
                atomic_cas(w, slot_word(i, S_CURSOR), pos, pos + pad)
        if head == pos:
            more = head_refresh(w)
            if more & CODE_MASK:
                return Room(more, flags, pos, head)
            flags |= more
            head = w[H_HEAD]
        pos += pad
    return Room(OK, flags, pos, head)


@kernel(inline=True)
def count_and_publish(w, slot, end):
    """Count one record of ``slot`` (complete in the ring) and publish it, the
    write position becoming ``end``; lock held.  The journal first, then the
    counts, then the write position: ``appends_recover`` can tell from the
    tag whether a holder killed here had counted it (see
    ``layout.H_APPEND_JOURNAL``).  Readers never see a record before it is
    counted (``stats`` relies on it)."""
    appends = w[H_APPENDS]
    tag = APPENDS_TAG - (appends & APPENDS_TAG)  # the other tag bit
    atomic_store(w, H_APPEND_JOURNAL, end | tag)
    sw = slot_word(slot, S_SENT)
    w[sw] = w[sw] + 1
    atomic_store(w, H_APPENDS, ((appends >> APPENDS_SHIFT) + 1) << APPENDS_SHIFT | tag)
    atomic_store(w, H_WRITE_POS, end)  # the record becomes visible here


@kernel()
def appends_recover(w):
    """After a lock holder died: publish the record it had counted but not
    published (``count_and_publish`` cut short), so that the count and the
    records agree.  Returns True if it did.  Lock held, header checked."""
    journal = w[H_APPEND_JOURNAL]
    end = journal & ~7
    pos = w[H_WRITE_POS]
    if not pos < end <= pos + w[H_CAPACITY]:
        return False  # published (or idle); a journal out of range is ignored
    if (w[H_APPENDS] ^ journal) & APPENDS_TAG:
        return False  # not counted either: as if that append never ran
    atomic_store(w, H_WRITE_POS, end)
    return True


@kernel()
def ring_put(w, mem, slot, token, sender, mtype, body, data, kind, reserve):
    """Append one record from ``slot`` whose body is ``body`` then ``data``
    (an array record: its descriptor, then its raw bytes).  Lock held.

    With ``reserve`` >= 0 the record is only reserved, ``reserve`` bytes
    after ``body`` left for the writer to fill outside the lock: its kind is
    ``KIND_RESERVED`` (the real one is kept for ``record_publish``), readers
    stop at it, and the slot's pin holds it.  ``COPY_WHOLE`` (-1) reserves
    nothing.  Returns ``Put(status, position)``.

    ``kind`` is a ``KIND_*``, with ``APPEND_SKIP`` if the appender screens
    this message itself: then, if its cursor is at the record (it has read
    everything), the cursor moves past it, as a pop would, so a process never
    pins the messages it writes and would skip anyway.

    Returns ``OK`` (with ``WAKE_*`` bits), ``FULL`` (with the space sequence
    to wait on above ``SEQ_SHIFT``), ``TOO_LARGE`` if the record could not fit
    even in an empty ring, ``NOT_MEMBER`` or ``CORRUPT``.  No record is
    written unless the result is ``OK``; a ``FULL`` may still have refreshed
    the cached head (and bumped the space sequence if it moved).
    """
    bad = header_check(w)
    if bad:
        return Put(_corrupt(bad), 0)
    if not is_member(w, slot, token):
        return Put(NOT_MEMBER, 0)
    skip = kind & APPEND_SKIP and reserve < 0
    kind &= KIND_MASK
    cap = w[H_CAPACITY]
    payload = len(sender) + len(mtype) + len(body) + len(data) + max(reserve, 0)
    size = record_size(payload)
    if size > cap:
        return Put(TOO_LARGE, 0)
    room = _make_room(w, w[H_WRITE_POS], w[H_HEAD], size, cap)
    if room.status & CODE_MASK == FULL:
        return Put(room.status | room.flags, 0)
    if room.status & CODE_MASK:
        return Put(room.status, 0)
    flags, pos = room.flags, room.pos
    base = w[H_RING_OFFSET]
    at = base + pos % cap
    shown = KIND_RESERVED if reserve >= 0 else kind
    w[at // 8] = size
    w[at // 8 + 1] = record_meta(len(sender), len(mtype), size - REC_HEADER - payload, shown, slot)
    p = _copy_in(mem, at + REC_HEADER, sender)
    p = _copy_in(mem, p, mtype)
    p = _copy_in(mem, p, body)
    p = _copy_in(mem, p, data)
    if reserve >= 0:
        p += reserve
        slot_pin(w, slot, pos)  # before the write position: never unpinned
    for q in range(p, at + size):
        mem[q] = 0
    # A reservation is counted here, not when it is published: a reader
    # that opens meanwhile takes the count as its base (S_BASE) and never
    # sees the record, which lies before its cursor.
    count_and_publish(w, slot, pos + size)
    if reserve >= 0:
        return Put(OK | flags, pos)
    if skip and w[slot_word(slot, S_FLAGS)] & SF_READER:
        if atomic_cas(w, slot_word(slot, S_CURSOR), pos, pos + size) == pos:
            atomic_add(w, slot_word(slot, S_SCREENED), 1)
    atomic_add(w, H_DATA_SEQ, 1)
    return Put(OK | flags | wake_flags(w, W_DATA), pos)


@kernel((SEGMENT, INT, INT, INT))
def record_publish(mem, slot, pos, kind):
    """Publish (``kind`` a ``KIND_*``, with ``APPEND_SKIP`` as for an append)
    or discard (``KIND_VOID``) the record that ``slot`` reserved at ``pos``.
    Without the lock: one swap of the meta word, which only the reserving
    writer (or the reaper voiding it) makes.  Nothing is counted here: the
    record was counted when it was reserved (``ring_put``), and a void one
    counts as screened for every reader that passes it (``read._scan``).
    Returns ``OK`` with ``WAKE_DATA`` if a reader sleeps, or ``NOT_MEMBER``
    if the reservation was voided meanwhile (its slot was freed)."""
    w = mem.view(np.int64)
    if geometry_check(w):  # no lock: the positions are checked against pos only
        return NOT_MEMBER
    cap = w[H_CAPACITY]
    if pos < w[H_HEAD] or pos >= w[H_WRITE_POS] or pos % 8 != 0 or cap - pos % cap < REC_HEADER:
        return NOT_MEMBER
    at = (w[H_RING_OFFSET] + pos % cap) // 8
    meta = atomic_load(w, at + 1)
    if meta_kind(meta) != KIND_RESERVED or (meta >> META_WRITER_SHIFT) != slot + 1:
        return NOT_MEMBER
    if atomic_cas(w, at + 1, meta, meta_with_kind(meta, kind)) != meta:
        return NOT_MEMBER
    void = kind & KIND_MASK == KIND_VOID
    if (void or kind & APPEND_SKIP) and w[slot_word(slot, S_FLAGS)] & SF_READER:
        # As ring_put does for a copied record: a writer that has read
        # everything passes its own record (one it screens, or a void one).
        size = w[at]
        if atomic_cas(w, slot_word(slot, S_CURSOR), pos, pos + size) == pos:
            atomic_add(w, slot_word(slot, S_SCREENED), 1)
    atomic_add(w, H_DATA_SEQ, 1)
    return wake_now(mem, OK | wake_flags(w, W_DATA))


@kernel((SEGMENT, INT, INT))
def pin_set(mem, slot, pos):
    """Set ``slot``'s pin to ``pos`` (``NO_PIN``: none); only its owner calls this,
    holding its handle's thread lock, with a value no lower than the pin it
    replaces.  The word holds the position + 1, so that 0 means none.
    Returns ``WAKE_SPACE`` if a writer waits for space."""
    w = mem.view(np.int64)
    if 0 <= slot < table_slots(w):
        atomic_store(w, slot_word(slot, S_PIN), pos + 1)
        # A writer waiting for space may now find it: it refreshes the head
        # itself (under the lock) when it looks again.
        atomic_add(w, H_SPACE_SEQ, 1)
        return wake_now(mem, wake_flags(w, W_SPACE))
    return 0
