"""Member slots: open, name, leave, recover after a dead lock holder, list; and
the head, the lowest cursor or pin of the members."""

import numpy as np

from ..layout import (
    APPENDS_SHIFT,
    C_CURSOR,
    CODE_MASK,
    F_UNLINKED,
    H_APPENDS,
    H_CAPACITY,
    H_CREATOR,
    H_DATA_SEQ,
    H_FLAGS,
    H_HEAD,
    H_MEMBER_SEQ,
    H_RECOVERIES,
    H_RING_OFFSET,
    H_SLOT_HWM,
    H_SPACE_SEQ,
    H_WRITE_POS,
    KIND_RESERVED,
    KIND_VOID,
    META_WRITER_SHIFT,
    NO_PIN,
    NOT_A_SLOT,
    NOT_MEMBER,
    OK,
    REC_HEADER,
    S_BASE,
    S_CURSOR,
    S_FLAGS,
    S_NAME,
    S_NAME_LEN,
    S_PIN,
    S_RECEIVED,
    S_SCREENED,
    S_SENT,
    S_STATE,
    S_TOKEN,
    SF_READER,
    SLOT_ACTIVE,
    SLOT_FREE,
    SLOT_NAME_BYTES,
    UNLINK,
    W_SPACE,
    WAKE_DATA,
    WAKE_MEMBERS,
    WAKE_SPACE,
)
from ._intrinsics import atomic_add, atomic_cas, atomic_load, atomic_store, copy_bytes
from ._jit import SEGMENT, kernel
from .check import (
    NOT_A_RECORD,
    SOUND,
    _corrupt,
    header_check,
    is_member,
    meta_kind,
    meta_with_kind,
    record_check,
    slot_hwm,
    slot_word,
    table_slots,
)
from .wait import store_wait, wake_flags


@kernel()
def head_refresh(w):
    """Set the head to the smallest reader cursor or slot pin (the write
    position if none).

    Returns ``WAKE_SPACE`` if the head moved forward and a writer waits for
    space, else 0; or ``CORRUPT`` (nothing changed) if a reader's cursor or a
    pin lies outside ``[head, write position]``.  Lock held, header checked.
    """
    end = w[H_WRITE_POS]
    old = w[H_HEAD]
    low = end
    for i in range(slot_hwm(w)):
        if w[slot_word(i, S_STATE)] != SLOT_ACTIVE:
            continue
        if w[slot_word(i, S_FLAGS)] & SF_READER:
            c = atomic_load(w, slot_word(i, S_CURSOR))  # moved by pops without the lock
            if c < old or c > end or c % 8 != 0:
                return _corrupt(C_CURSOR)
            if c < low:
                low = c
        pin = atomic_load(w, slot_word(i, S_PIN)) - 1  # stored + 1: 0 is "none"
        if pin != NO_PIN:
            if pin < old or pin > end or pin % 8 != 0:
                return _corrupt(C_CURSOR)
            if pin < low:
                low = pin
    if low == old:
        return 0
    w[H_HEAD] = low
    atomic_add(w, H_SPACE_SEQ, 1)
    return wake_flags(w, W_SPACE)


@kernel(inline=True)
def slot_pin(w, slot, pos):
    """Pin position ``pos`` for ``slot`` (a reservation, a viewed record):
    its pin comes down to ``pos`` unless it is already at or below it.  Lock
    held."""
    pw = slot_word(slot, S_PIN)
    if w[pw] == 0 or pos + 1 < w[pw]:  # stored + 1: 0 is "none"
        atomic_store(w, pw, pos + 1)


@kernel()
def slot_open(w, token, reader):
    """Claim the lowest free slot for ``token``; return its index, or
    ``NOT_A_SLOT`` if every slot is taken.

    A reader's cursor starts at the write position: it sees only records
    appended after it opened.  Lock held, header checked.
    """
    for i in range(table_slots(w)):
        if w[slot_word(i, S_STATE)] == SLOT_FREE:
            w[slot_word(i, S_TOKEN)] = token
            w[slot_word(i, S_CURSOR)] = w[H_WRITE_POS]
            w[slot_word(i, S_FLAGS)] = SF_READER if reader else 0
            store_wait(w, i, 0)
            w[slot_word(i, S_SENT)] = 0
            w[slot_word(i, S_RECEIVED)] = 0
            w[slot_word(i, S_SCREENED)] = 0
            w[slot_word(i, S_BASE)] = w[H_APPENDS] >> APPENDS_SHIFT
            w[slot_word(i, S_PIN)] = 0
            w[slot_word(i, S_NAME_LEN)] = 0
            if i >= w[H_SLOT_HWM]:
                w[H_SLOT_HWM] = i + 1
            atomic_store(w, slot_word(i, S_STATE), SLOT_ACTIVE)
            atomic_add(w, H_MEMBER_SEQ, 1)
            return i
    return NOT_A_SLOT


@kernel()
def slot_set_name(mem, slot, name):
    """Store the first ``SLOT_NAME_BYTES`` of ``name`` and its length in ``slot``."""
    w = mem.view(np.int64)
    at = slot_word(slot, S_NAME) * 8
    n = min(len(name), SLOT_NAME_BYTES)
    mem[at : at + SLOT_NAME_BYTES] = 0
    copy_bytes(mem, at, name, 0, n)
    w[slot_word(slot, S_NAME_LEN)] = len(name)


@kernel()
def ring_void(w, slot):
    """Void every unpublished reservation of ``slot`` (which is being freed),
    or, with ``slot`` = ``NOT_A_SLOT``, of every slot that is not active (the
    orphans a member that died while freeing a slot may have left): readers
    then pass them.  Returns how many.  Stops quietly at a corrupt record.
    Lock held, header checked."""
    cap = w[H_CAPACITY]
    end = w[H_WRITE_POS]
    cur = w[H_HEAD]
    n = 0
    while cur < end:
        room = cap - cur % cap
        if room < REC_HEADER:
            cur += room
            continue
        rec = record_check(w, cur, end)
        if rec.size == NOT_A_RECORD:
            break
        meta = rec.word
        if meta_kind(meta) == KIND_RESERVED and _voids(w, slot, (meta >> META_WRITER_SHIFT) - 1):
            at = (w[H_RING_OFFSET] + cur % cap) // 8
            if atomic_cas(w, at + 1, meta, meta_with_kind(meta, KIND_VOID)) == meta:
                n += 1
        cur += rec.size
    if n:
        atomic_add(w, H_DATA_SEQ, 1)
    return n


@kernel(inline=True)
def _voids(w, slot, writer):
    """Whether ``ring_void(w, slot)`` voids a reservation of slot ``writer``."""
    if slot != NOT_A_SLOT:
        return writer == slot
    if writer < 0 or writer >= table_slots(w):
        return True  # no slot of this table wrote it: nobody will publish it
    return atomic_load(w, slot_word(writer, S_STATE)) != SLOT_ACTIVE


@kernel()
def count_members(w):
    """Active slots, plus one while the creator holds the queue."""
    n = 1 if w[H_CREATOR] != 0 else 0
    for i in range(slot_hwm(w)):
        if atomic_load(w, slot_word(i, S_STATE)) == SLOT_ACTIVE:
            n += 1
    return n


@kernel()
def slot_leave(w, slot, token, creator):
    """Free ``slot`` if ``token`` owns it; drop the creator's hold if ``creator``.

    ``slot`` < 0 (``NOT_A_SLOT``) frees no slot.  The slot's unread records
    are released.  Its reservations are voided BEFORE the slot is marked
    free: a process killed between the two then leaves an active slot of a
    dead process, which the next reap frees again, never a reservation that
    no active slot owns (which every reader would wait at for ever).
    Returns ``OK`` or ``NOT_MEMBER`` with ``WAKE_*`` bits, and ``UNLINK`` when
    no member is left and the name has not been unlinked yet: the caller must
    unlink it.  Works on a corrupt segment too (every index is checked), so
    that a handle can always leave.  Lock held.
    """
    status = OK | WAKE_MEMBERS
    if slot >= 0:
        if is_member(w, slot, token):
            store_wait(w, slot, 0)
            sound = header_check(w) == SOUND
            if sound and ring_void(w, slot):
                status |= WAKE_DATA  # readers stopped at its reservations go on
            atomic_store(w, slot_word(slot, S_STATE), SLOT_FREE)
            w[slot_word(slot, S_PIN)] = 0
            if sound:
                more = head_refresh(w)
                if not more & CODE_MASK:
                    status |= more
        else:
            status = NOT_MEMBER | WAKE_MEMBERS
    if creator and w[H_CREATOR] == token:
        w[H_CREATOR] = 0
    atomic_add(w, H_MEMBER_SEQ, 1)
    if count_members(w) == 0 and not (w[H_FLAGS] & F_UNLINKED):
        w[H_FLAGS] |= F_UNLINKED
        status |= UNLINK
    return status


@kernel()
def slot_linger(w, slot, token, pin):
    """Leave as a reader but keep ``slot`` to pin position ``pin``: what a
    handle closed while arrays of its views are alive keeps (they show the
    shared memory itself, which must not be reused under them).

    The slot stops being a reader (its cursor pins nothing, it reads
    nothing, it is not counted as one), its reservations are voided, and its
    pin is set to ``pin``.  ``slot_leave`` frees it later, when the arrays
    are gone, or a reap when its process is.  Returns ``OK`` or
    ``NOT_MEMBER``, with ``WAKE_*`` bits.  Lock held, header checked.
    """
    if not is_member(w, slot, token):
        return NOT_MEMBER
    status = OK | WAKE_MEMBERS
    store_wait(w, slot, 0)
    if ring_void(w, slot):
        status |= WAKE_DATA
    atomic_store(w, slot_word(slot, S_FLAGS), w[slot_word(slot, S_FLAGS)] & ~SF_READER)
    atomic_store(w, slot_word(slot, S_PIN), pin + 1)  # stored + 1: 0 is "none"
    atomic_add(w, H_MEMBER_SEQ, 1)
    more = head_refresh(w)
    if not more & CODE_MASK:
        status |= more
    return status


@kernel()
def ring_recover(w):
    """Make the queue consistent after its lock holder died.  Lock held.

    Every kernel publishes with one final store, so the ring needs no repair
    but for one case: reservations whose writer's slot is no longer active
    (left by a member that died while freeing a slot, before ``slot_leave``
    voided first) are voided, since nobody will ever publish them.  The
    cached head is recomputed (unless the segment is corrupt).  All sleepers
    are woken to look again.
    """
    w[H_RECOVERIES] += 1
    if header_check(w) == SOUND:
        ring_void(w, NOT_A_SLOT)
        head_refresh(w)
    atomic_add(w, H_DATA_SEQ, 1)
    atomic_add(w, H_SPACE_SEQ, 1)
    return WAKE_DATA | WAKE_SPACE | WAKE_MEMBERS


@kernel((SEGMENT,), allocates=True)
def members(mem):
    """``(slot, token, is_reader)`` rows for every active slot, and a row
    ``(NOT_A_SLOT, creator_token, 0)`` while the creator holds the queue.  Safe on any
    header (the table is scanned only as far as the mapping goes)."""
    w = mem.view(np.int64)
    hwm = slot_hwm(w)
    rows = np.empty((hwm + 1, 3), np.int64)
    n = 0
    creator = w[H_CREATOR]
    if creator != 0:
        rows[0, 0] = NOT_A_SLOT
        rows[0, 1] = creator
        rows[0, 2] = 0
        n = 1
    for i in range(hwm):
        if atomic_load(w, slot_word(i, S_STATE)) == SLOT_ACTIVE:
            rows[n, 0] = i
            rows[n, 1] = w[slot_word(i, S_TOKEN)]
            rows[n, 2] = 1 if w[slot_word(i, S_FLAGS)] & SF_READER else 0
            n += 1
    return rows[:n]
