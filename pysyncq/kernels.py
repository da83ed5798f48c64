"""Numba kernels: every read and write of the shared memory happens here.

Each kernel takes the segment as a 1-d uint8 array ``mem`` (plus ints, bytes
and small private arrays), returns a status code from :mod:`pysyncq.layout`
(or a tuple led by one), never raises, never blocks and never allocates on the
hot path.  The Python class turns codes into exceptions and does all waiting.

There are two layers:

``ring_*`` / ``slot_*`` / ``head_*``
    The ring itself.  Only called with the queue lock held, by the ``op_*``
    kernels below or directly by single-process tests, where ``w`` is the
    segment seen as int64 words (``mem.view(np.int64)``).

``op_*``
    What the class calls, one per public operation: try the lock once, run one
    ring kernel, release the lock.  The lock word holds the caller's process
    token, so a process that died holding it can be identified and the lock
    taken over (``op_steal``).  When the lock is held by someone else an
    ``op_*`` returns ``BUSY`` having done nothing.  The exception is
    ``op_pop``, which takes no lock at all (``pop_free`` says why that is
    safe): a reader's cursor has one writer, its owner.

Nothing read from the segment is trusted.  Any process that maps it can
scribble on it, so every word is checked before it is used as a size, an
offset, a count or a loop bound: the header's geometry against the length of
``mem`` (``header_check``), positions against each other, every reader's
cursor against ``[head, write position]`` and every record against the ring
and the write position.  A failed check returns ``CORRUPT`` with a reason
(``C_*``) and the position and value that failed, having changed nothing
since; no loop runs on an unchecked bound (every record is at least 16 bytes,
so a scan of a ring of ``cap`` bytes ends within ``cap / 8`` steps).  Only
``slot_leave`` goes on through a corrupt ring, so that a handle can always
close: it frees its own slot by a checked index and nothing else.

Crash safety.  A process can die at any instruction.  Every ring kernel makes
its change visible with one final store (``H_WRITE_POS`` for an append, the
cursor for a pop, ``S_STATE`` for an open or a close), so a kernel cut short
leaves the ring as it was before, or as it is after a smaller complete step
(an append that wrapped publishes its padding first).  The only derived state
is ``H_HEAD``, which ``ring_recover`` recomputes.
"""

import numpy as np
from numba import njit

from ._intrinsics import (
    HAVE_FUTEX,
    atomic_add,
    atomic_cas,
    atomic_load,
    atomic_store,
    atomic_xchg,
    copy_bytes,
    futex,
)
from .layout import (
    APPEND_SKIP,
    BUSY,
    C_CURSOR,
    C_GEOMETRY,
    C_HEADER,
    C_POSITIONS,
    C_RECORD,
    C_SLOTS,
    CODE_MASK,
    CONTENDED,
    CORRUPT,
    EMPTY,
    F_UNLINKED,
    FULL,
    H_APPENDS,
    H_CAPACITY,
    H_CREATOR,
    H_DATA_SEQ,
    H_FLAGS,
    H_HEAD,
    H_INSTANCE,
    H_LOCK,
    H_LOCK_SEQ,
    H_MAGIC,
    H_MEMBER_SEQ,
    H_NSLOTS,
    H_PIDNS,
    H_REAPED,
    H_RECOVERIES,
    H_RING_OFFSET,
    H_SLOT_HWM,
    H_SPACE_SEQ,
    H_TIMENS,
    H_VERSION,
    H_WAITERS,
    H_WRITE_POS,
    HEADER_BYTES,
    HEADER_WORDS,
    KIND_ARRAY,
    KIND_PAD,
    KIND_RESERVED,
    KIND_STR,
    KIND_VOID,
    LAYOUT_VERSION,
    MAGIC,
    MAX_SLOTS,
    META_WRITER_SHIFT,
    NEED_SPACE,
    NO_SLOT,
    NOT_MEMBER,
    OK,
    OPEN_DURABLE,
    OPEN_READER,
    PENDING,
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
    S_WAIT,
    SEQ_SHIFT,
    SF_DURABLE,
    SF_READER,
    SLOT_ACTIVE,
    SLOT_BYTES,
    SLOT_FREE,
    SLOT_NAME_BYTES,
    SLOT_WORDS,
    TOO_LARGE,
    UNLINK,
    W_ASYNC,
    W_DATA,
    W_SPACE,
    WAKE_ASYNC_DATA,
    WAKE_ASYNC_SPACE,
    WAKE_DATA,
    WAKE_DONE,
    WAKE_LOCK,
    WAKE_MEMBERS,
    WAKE_SPACE,
)

_JIT = {"cache": True}
_SEQ32 = 0xFFFFFFFF
_MAX_SLOTS = MAX_SLOTS


@njit(**_JIT)
def _corrupt(reason):
    return CORRUPT | (reason << SEQ_SHIFT)


@njit(**_JIT)
def slot_word(slot, field):
    """Index in the int64 view of ``field`` of reader slot ``slot``."""
    return HEADER_WORDS + slot * SLOT_WORDS + field


@njit(**_JIT)
def table_slots(w):
    """How many slots the table may be scanned for: the header's count, but
    never past the mapping (so this is safe on any header)."""
    n = w[H_NSLOTS]
    room = (len(w) * 8 - HEADER_BYTES) // SLOT_BYTES
    if n > room:
        n = room
    return n if n > 0 else 0


@njit(**_JIT)
def slot_hwm(w):
    """The slot high-water mark, clamped to the table (safe on any header)."""
    n = w[H_SLOT_HWM]
    limit = table_slots(w)
    if n > limit:
        n = limit
    return n if n > 0 else 0


@njit(**_JIT)
def header_check(w):
    """0 if the header describes a queue that fits the mapping, else a ``C_*``.

    Checks the magic and version, the capacity, slot count and ring offset
    against ``len(w)``, the slot high-water mark, and the write position and
    head against each other (both multiples of 8, ``0 <= head <= write
    position <= head + capacity``).  The last holds only with the lock held:
    without it, use ``geometry_check`` and check positions read in an order
    that keeps them consistent (see ``pop_free``).
    """
    bad = geometry_check(w)
    if bad:
        return bad
    end = w[H_WRITE_POS]
    head = w[H_HEAD]
    if head < 0 or end < head or end - head > w[H_CAPACITY] or end % 8 != 0 or head % 8 != 0:
        return C_POSITIONS
    return 0


@njit(**_JIT)
def geometry_check(w):
    """``header_check`` but for the write position and head, which move."""
    if w[H_MAGIC] != MAGIC or w[H_VERSION] != LAYOUT_VERSION:
        return C_HEADER
    nbytes = len(w) * 8
    cap = w[H_CAPACITY]
    ns = w[H_NSLOTS]
    off = w[H_RING_OFFSET]
    if ns < 1 or ns > _MAX_SLOTS or off != HEADER_BYTES + ns * SLOT_BYTES:
        return C_GEOMETRY
    if cap < REC_HEADER or cap % 8 != 0 or cap > nbytes or off + cap > nbytes:
        return C_GEOMETRY
    hwm = w[H_SLOT_HWM]
    if hwm < 0 or hwm > ns:
        return C_SLOTS
    return 0


@njit(**_JIT)
def is_member(w, slot, token):
    """True if ``slot`` is an active slot owned by ``token``."""
    if slot < 0 or slot >= table_slots(w):
        return False
    return w[slot_word(slot, S_STATE)] == SLOT_ACTIVE and w[slot_word(slot, S_TOKEN)] == token


@njit(**_JIT)
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
    atomic_store(w, H_MAGIC, MAGIC)


@njit(**_JIT)
def store_wait(w, slot, bits):
    """Store ``bits`` in ``slot``'s ``S_WAIT`` and keep ``H_WAITERS`` (see
    layout.py): raised before the first bit is stored, lowered after the
    last is cleared.  The owner calls this (holding its handle's thread
    lock), or whoever frees the slot, holding the queue lock."""
    sw = slot_word(slot, S_WAIT)
    old = w[sw]
    if old == bits:
        return
    if old == 0:
        atomic_add(w, H_WAITERS, 1)
    atomic_store(w, sw, bits)
    if bits == 0:
        atomic_add(w, H_WAITERS, -1)


@njit(**_JIT)
def wake_flags(w, bit):
    """The wake bits for the sleepers on ``bit`` (``W_DATA`` or ``W_SPACE``):
    ``WAKE_DATA`` / ``WAKE_SPACE`` if some slot's owner sleeps on it, with
    ``WAKE_ASYNC_*`` too if one of them waits in an asyncio loop; else 0.
    One load of ``H_WAITERS`` when nobody waits, else a look at every slot."""
    if atomic_load(w, H_WAITERS) == 0:
        return 0
    found = 0
    for i in range(slot_hwm(w)):
        b = atomic_load(w, slot_word(i, S_WAIT))
        if b & bit:
            found |= 1
            if b & W_ASYNC:
                found |= 2
    if found == 0:
        return 0
    if bit == W_DATA:
        return WAKE_DATA | (WAKE_ASYNC_DATA if found & 2 else 0)
    return WAKE_SPACE | (WAKE_ASYNC_SPACE if found & 2 else 0)


_INT_MAX = 0x7FFFFFFF
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1


@njit(**_JIT)
def wake_now(mem, status):
    """Make the futex wakes that ``status`` asks for (after the lock is
    released) and add ``WAKE_DONE`` to it, so that ``_wait.wake`` only
    signals the asyncio waiters (``WAKE_ASYNC_*``).  Where there is no futex
    ``status`` is returned as it is."""
    if HAVE_FUTEX and status & (WAKE_DATA | WAKE_SPACE | WAKE_LOCK | WAKE_MEMBERS):
        w = mem.view(np.int64)
        if status & WAKE_DATA:
            futex(w, H_DATA_SEQ, _FUTEX_WAKE, _INT_MAX, -1)
        if status & WAKE_SPACE:
            futex(w, H_SPACE_SEQ, _FUTEX_WAKE, _INT_MAX, -1)
        if status & WAKE_LOCK:
            futex(w, H_LOCK_SEQ, _FUTEX_WAKE, 1, -1)
        if status & WAKE_MEMBERS:
            futex(w, H_MEMBER_SEQ, _FUTEX_WAKE, _INT_MAX, -1)
        status |= WAKE_DONE
    return status


@njit(nogil=True, **_JIT)
def spin_for(mem, index, expected, cpus, rounds):
    """Before a sleep: watch the low 32 bits of header word ``index`` for up
    to ``rounds`` loads while they equal ``expected``, without the GIL, but
    only if the queue has at most ``cpus`` active slots (more members than
    CPUs: a spinner would hold a CPU that a writer needs).  Returns the
    rounds left plus one (>= 1) if the word changed, so that a caller can go
    on watching with what is left; 0 if it did not change; -1 if it did not
    spin."""
    w = mem.view(np.int64)
    if geometry_check(w):
        return -1
    n = 0
    for i in range(slot_hwm(w)):
        if atomic_load(w, slot_word(i, S_STATE)) == SLOT_ACTIVE:
            n += 1
    if n > cpus:
        return -1
    for i in range(rounds):
        if atomic_load(w, index) & _SEQ32 != expected:
            return rounds - i
    return 0


@njit(nogil=True, **_JIT)
def futex_wait(mem, index, expected, timeout_ns):
    """Sleep while the low 32 bits of header word ``index`` equal
    ``expected``, at most ``timeout_ns``; without the GIL.  May return early
    (a wake, a signal, a changed word): the caller looks again."""
    if HAVE_FUTEX:
        futex(mem.view(np.int64), index, _FUTEX_WAIT, expected, timeout_ns)


@njit(**_JIT)
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
        if pin != -1:
            if pin < old or pin > end or pin % 8 != 0:
                return _corrupt(C_CURSOR)
            if pin < low:
                low = pin
    if low == old:
        return 0
    w[H_HEAD] = low
    atomic_add(w, H_SPACE_SEQ, 1)
    return wake_flags(w, W_SPACE)


@njit(**_JIT)
def _copy_in(mem, p, src):
    copy_bytes(mem, p, src, 0, len(src))
    return p + len(src)


_NO_DATA = np.zeros(0, np.uint8)


@njit(**_JIT)
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

    Returns ``(status, flags, pos, head)``: ``OK`` with the position the
    record goes to; ``FULL`` with the space sequence above ``SEQ_SHIFT``; or
    ``CORRUPT``.  ``flags`` are the wake bits of the head's moves.
    """
    room = cap - pos % cap
    pad = room if room < size else 0
    flags = 0
    if not (head == pos or pos + pad + size - head <= cap):
        sseq = atomic_load(w, H_SPACE_SEQ) & _SEQ32
        more = head_refresh(w)
        if more & CODE_MASK:
            return more, 0, pos, head
        flags |= more
        head = w[H_HEAD]
        if not (head == pos or pos + pad + size - head <= cap):
            return FULL | (sseq << SEQ_SHIFT), flags, pos, head
    if pad:
        if pad >= REC_HEADER:
            at = (w[H_RING_OFFSET] + pos % cap) // 8
            w[at] = pad
            w[at + 1] = KIND_PAD << 32
        atomic_store(w, H_WRITE_POS, pos + pad)
        for i in range(slot_hwm(w)):
            if w[slot_word(i, S_STATE)] == SLOT_ACTIVE:
                atomic_cas(w, slot_word(i, S_CURSOR), pos, pos + pad)
        if head == pos:
            more = head_refresh(w)
            if more & CODE_MASK:
                return more, flags, pos, head
            flags |= more
            head = w[H_HEAD]
        pos += pad
    return OK, flags, pos, head


@njit(**_JIT)
def ring_append(w, mem, slot, token, sender, mtype, body, kind):
    """Append one record from ``slot``: ``ring_put`` with the body in one piece."""
    return ring_put(w, mem, slot, token, sender, mtype, body, _NO_DATA, kind, -1)[0]


@njit(**_JIT)
def ring_put(w, mem, slot, token, sender, mtype, body, data, kind, reserve):
    """Append one record from ``slot`` whose body is ``body`` then ``data``
    (an array record: its descriptor, then its raw bytes).  Lock held.

    With ``reserve`` >= 0 the record is only reserved, ``reserve`` bytes
    after ``body`` left for the writer to fill outside the lock: its kind is
    ``KIND_RESERVED`` (the real one is kept for ``record_publish``), readers
    stop at it, and the slot's pin holds it.  Returns ``(status, position)``.

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
        return _corrupt(bad), 0
    if not is_member(w, slot, token):
        return NOT_MEMBER, 0
    skip = kind & APPEND_SKIP and reserve < 0
    kind &= 0xFF
    cap = w[H_CAPACITY]
    payload = len(sender) + len(mtype) + len(body) + len(data) + max(reserve, 0)
    size = (REC_HEADER + payload + 7) & ~7
    if size > cap:
        return TOO_LARGE, 0
    status, flags, pos, _ = _make_room(w, w[H_WRITE_POS], w[H_HEAD], size, cap)
    if status & CODE_MASK == FULL:
        return status | flags, 0
    if status & CODE_MASK:
        return status, 0
    base = w[H_RING_OFFSET]
    at = base + pos % cap
    shown = KIND_RESERVED if reserve >= 0 else kind
    meta = len(sender) | (len(mtype) << 16) | ((size - REC_HEADER - payload) << 40)
    meta |= (slot + 1) << META_WRITER_SHIFT
    w[at // 8] = size
    w[at // 8 + 1] = meta | (shown << 32)
    p = _copy_in(mem, at + REC_HEADER, sender)
    p = _copy_in(mem, p, mtype)
    p = _copy_in(mem, p, body)
    p = _copy_in(mem, p, data)
    if reserve >= 0:
        p += reserve
        pw = slot_word(slot, S_PIN)
        if w[pw] == 0 or pos + 1 < w[pw]:
            atomic_store(w, pw, pos + 1)  # before the write position: never unpinned
    for q in range(p, at + size):
        mem[q] = 0
    atomic_store(w, H_WRITE_POS, pos + size)  # the record becomes visible here
    if reserve >= 0:
        return OK | flags, pos  # counted when published: record_publish
    # Atomic: record_publish counts without the lock.
    atomic_add(w, H_APPENDS, 1)
    atomic_add(w, slot_word(slot, S_SENT), 1)
    if skip and w[slot_word(slot, S_FLAGS)] & SF_READER:
        if atomic_cas(w, slot_word(slot, S_CURSOR), pos, pos + size) == pos:
            atomic_add(w, slot_word(slot, S_SCREENED), 1)
    atomic_add(w, H_DATA_SEQ, 1)
    return OK | flags | wake_flags(w, W_DATA), pos


@njit(**_JIT)
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


@njit(**_JIT)
def record_check(w, cur, end):
    """Check the record at position ``cur`` (``cur < end``, the write position).

    Returns ``(size, meta)`` with ``size`` > 0 if it is a well-formed record
    or padding, else ``(0, value)`` with the offending size or meta word.
    A record lies wholly before the ring's end and the write position, is at
    least a header and a multiple of 8, and its fields fit in it; a padding
    record fills exactly the rest of the ring.
    """
    cap = w[H_CAPACITY]
    room = cap - cur % cap
    at = (w[H_RING_OFFSET] + cur % cap) // 8
    size = w[at]
    meta = w[at + 1]
    if size < REC_HEADER or size % 8 != 0 or size > room or size > end - cur:
        return 0, size
    kind = (meta >> 32) & 0xFF
    if kind == KIND_PAD:
        return (size, meta) if size == room else (0, size)
    if not (KIND_STR <= kind <= KIND_ARRAY or kind == KIND_RESERVED or kind == KIND_VOID):
        return 0, meta
    fields = (meta & 0xFFFF) + ((meta >> 16) & 0xFFFF)
    pad = (meta >> 40) & 0xFF
    if pad > 7 or REC_HEADER + fields + pad > size:
        return 0, meta
    return size, meta


@njit(**_JIT)
def _next_record(w, mem, slot, scr, cur, end):
    """Scan from position ``cur`` for the next record ``slot`` does not screen.

    Passes padding, void records and screened records (counting the latter
    in the slot's ``S_SCREENED``).  Returns ``(code, cur, size, meta)``:
    ``OK`` with the record at ``cur``; ``EMPTY`` (``cur == end``) or
    ``PENDING`` (an unpublished reservation at ``cur``); or ``CORRUPT`` with
    the bad word in ``meta``.  Header checked.
    """
    return _next_in_batch(w, mem, slot, scr, scr.view(np.int64), cur, end)


@njit(**_JIT)
def _next_in_batch(w, mem, slot, scr, sw, cur, end):
    """``_next_record`` with the screen table's view ``sw`` made once by the
    caller (a batch, or a pop that may scan again)."""
    code, cur, size, meta, screened = _scan(w, mem, scr, sw, cur, end)
    if screened:
        atomic_add(w, slot_word(slot, S_SCREENED), screened)
    return code, cur, size, meta


@njit(**_JIT)
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


@njit(**_JIT)
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


@njit(**_JIT)
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


@njit(**_JIT)
def record_lens(meta, size):
    """``(sender, type, body)`` lengths of a record of ``size`` bytes whose
    meta word is ``meta`` (layout.py: the body is what the header, the two
    names and the padding leave)."""
    slen = meta & 0xFFFF
    tlen = (meta >> 16) & 0xFFFF
    return slen, tlen, size - REC_HEADER - slen - tlen - ((meta >> 40) & 0xFF)


@njit(**_JIT)
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
    if start == -1:
        return NOT_MEMBER, 0, 0, 0, 0
    if start == -2:
        c = w[slot_word(slot, S_CURSOR)]
        return _corrupt(C_CURSOR), c, 0, c, 0
    # The sequence is read before the scan: a reservation published after the
    # scan saw it changes the sequence, so a sleeper is never left behind.
    seq = atomic_load(w, H_DATA_SEQ) & _SEQ32
    code, cur, size, meta = _next_record(w, mem, slot, scr, start, w[H_WRITE_POS])
    slen = tlen = blen = kind = 0
    status = code
    if code == OK:
        slen, tlen, blen = record_lens(meta, size)
        n = slen + tlen + blen
        if n > len(out):
            status = NEED_SPACE
            blen = n
            kind = (meta >> 32) & 0xFF
        else:
            p = w[H_RING_OFFSET] + cur % w[H_CAPACITY] + REC_HEADER
            copy_bytes(out, 0, mem, p, n)
            cur += size
            w[slot_word(slot, S_RECEIVED)] += 1
            kind = ((meta >> 32) & 0xFF) | (((meta >> META_WRITER_SHIFT) & 0xFFFF) << 8)
    elif code == EMPTY or code == PENDING:
        blen = seq
        if code == PENDING:
            kind = (meta >> META_WRITER_SHIFT) & 0xFFFF
    else:  # CORRUPT
        status = _corrupt(C_RECORD)
        slen, blen = meta, cur
    moved = _reader_move(w, slot, start, cur, status)
    if moved & CODE_MASK == CORRUPT and status & CODE_MASK != CORRUPT:
        c = w[slot_word(slot, S_CURSOR)]
        return moved, c, 0, c, 0
    return moved, slen, tlen, blen, kind


@njit(**_JIT)
def ring_peek(w, mem, slot, token, scr):
    """Find the next record ``slot`` has not read and does not screen, for a
    zero-copy view: pass what comes before it (padding, screened) but leave
    the cursor at it.  Returns ``(status, sender_len, type_len, body_len,
    kind, offset)`` as ``ring_pop`` (``offset`` is the byte offset of the
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


@njit(**_JIT)
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


@njit(**_JIT)
def slot_open(w, token, reader):
    """Claim the lowest free slot for ``token``; return its index or -1.

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
            w[slot_word(i, S_BASE)] = w[H_APPENDS]
            w[slot_word(i, S_PIN)] = 0
            w[slot_word(i, S_NAME_LEN)] = 0
            if i >= w[H_SLOT_HWM]:
                w[H_SLOT_HWM] = i + 1
            atomic_store(w, slot_word(i, S_STATE), SLOT_ACTIVE)
            atomic_add(w, H_MEMBER_SEQ, 1)
            return i
    return -1


@njit(**_JIT)
def slot_set_name(mem, slot, name):
    """Store the first ``SLOT_NAME_BYTES`` of ``name`` and its length in ``slot``."""
    w = mem.view(np.int64)
    at = slot_word(slot, S_NAME) * 8
    n = min(len(name), SLOT_NAME_BYTES)
    mem[at : at + SLOT_NAME_BYTES] = 0
    copy_bytes(mem, at, name, 0, n)
    w[slot_word(slot, S_NAME_LEN)] = len(name)


@njit(**_JIT)
def ring_void(w, slot):
    """Void every unpublished reservation of ``slot`` (which is being freed):
    readers then pass them.  Returns how many.  Stops quietly at a corrupt
    record.  Lock held, header checked."""
    cap = w[H_CAPACITY]
    end = w[H_WRITE_POS]
    cur = w[H_HEAD]
    n = 0
    while cur < end:
        room = cap - cur % cap
        if room < REC_HEADER:
            cur += room
            continue
        size, meta = record_check(w, cur, end)
        if size == 0:
            break
        if (meta >> 32) & 0xFF == KIND_RESERVED and (meta >> META_WRITER_SHIFT) == slot + 1:
            at = (w[H_RING_OFFSET] + cur % cap) // 8
            void = (meta & ~(0xFF << 32)) | (KIND_VOID << 32)
            if atomic_cas(w, at + 1, meta, void) == meta:
                n += 1
        cur += size
    if n:
        atomic_add(w, H_DATA_SEQ, 1)
    return n


@njit(**_JIT)
def count_members(w):
    """Active slots, plus one while the creator holds the queue."""
    n = 1 if w[H_CREATOR] != 0 else 0
    for i in range(slot_hwm(w)):
        if atomic_load(w, slot_word(i, S_STATE)) == SLOT_ACTIVE:
            n += 1
    return n


@njit(**_JIT)
def slot_leave(w, slot, token, creator):
    """Free ``slot`` if ``token`` owns it; drop the creator's hold if ``creator``.

    ``slot`` < 0 frees no slot.  The slot's unread records are released.
    Returns ``OK`` or ``NOT_MEMBER`` with ``WAKE_*`` bits, and ``UNLINK`` when
    no member is left and the name has not been unlinked yet: the caller must
    unlink it.  Works on a corrupt segment too (every index is checked), so
    that a handle can always leave.  Lock held.
    """
    status = OK | WAKE_MEMBERS
    if slot >= 0:
        if is_member(w, slot, token):
            store_wait(w, slot, 0)
            atomic_store(w, slot_word(slot, S_STATE), SLOT_FREE)
            w[slot_word(slot, S_PIN)] = 0
            if header_check(w) == 0:
                if ring_void(w, slot):
                    status |= WAKE_DATA  # readers stopped at its reservations go on
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


@njit(**_JIT)
def ring_recover(w):
    """Make the queue consistent after its lock holder died.  Lock held.

    Every kernel publishes with one final store, so the ring needs no repair;
    only the cached head is recomputed (unless the segment is corrupt).  All
    sleepers are woken to look again.
    """
    w[H_RECOVERIES] += 1
    if header_check(w) == 0:
        head_refresh(w)
    atomic_add(w, H_DATA_SEQ, 1)
    atomic_add(w, H_SPACE_SEQ, 1)
    return WAKE_DATA | WAKE_SPACE | WAKE_MEMBERS


# -- The lock.  The word holds the holder's token; CONTENDED tells the holder
# -- that someone sleeps on H_LOCK_SEQ and must be woken at release.


@njit(**_JIT)
def lock_release(w):
    """Release the lock; return ``WAKE_LOCK`` if a waiter must be woken."""
    old = atomic_xchg(w, H_LOCK, 0)
    if old & CONTENDED:
        atomic_add(w, H_LOCK_SEQ, 1)
        return WAKE_LOCK
    return 0


@njit(**_JIT)
def lock_prepare_wait(mem):
    """Before sleeping on a busy lock: mark it contended.

    Returns ``(seq, holder)``: sleep on ``H_LOCK_SEQ`` while it equals
    ``seq``.  ``holder`` is the holder's token, or 0 if the lock is free now
    (do not sleep, try again).
    """
    w = mem.view(np.int64)
    seq = atomic_load(w, H_LOCK_SEQ) & _SEQ32
    holder = atomic_load(w, H_LOCK)
    if holder == 0:
        return seq, 0
    if not holder & CONTENDED and atomic_cas(w, H_LOCK, holder, holder | CONTENDED) != holder:
        return seq, 0
    owner = holder & ~CONTENDED
    # CONTENDED alone names no process (a corrupt lock word): report the word
    # itself, whose pid 0 is judged dead and taken over, instead of 0 ("free"),
    # on which the waiter would retry for ever.
    return seq, owner if owner != 0 else holder


@njit(**_JIT)
def flags_set(mem, bits):
    """Set ``bits`` in ``H_FLAGS`` without the lock (compare-and-swap)."""
    w = mem.view(np.int64)
    for _ in range(1000):
        old = atomic_load(w, H_FLAGS)
        if old & bits == bits or atomic_cas(w, H_FLAGS, old, old | bits) == old:
            return True
    return False


@njit(**_JIT)
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


@njit(**_JIT)
def op_append(mem, lockval, slot, sender, mtype, body, kind):
    """``ring_append`` under the lock, or ``BUSY``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY
    status = ring_append(w, mem, slot, lockval & ~CONTENDED, sender, mtype, body, kind)
    return wake_now(mem, status | lock_release(w))


@njit(**_JIT)
def op_append_array(mem, lockval, slot, sender, mtype, desc, data, kind):
    """``ring_put`` of an array record under the lock, or ``BUSY``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY
    token = lockval & ~CONTENDED
    status = ring_put(w, mem, slot, token, sender, mtype, desc, data, kind, -1)[0]
    return wake_now(mem, status | lock_release(w))


@njit(**_JIT)
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


@njit(**_JIT)
def record_publish(mem, slot, pos, kind):
    """Publish (``kind`` a ``KIND_*``, with ``APPEND_SKIP`` as for an append)
    or discard (``KIND_VOID``) the record that ``slot`` reserved at ``pos``.
    Without the lock: one swap of the meta word, which only the reserving
    writer (or the reaper voiding it) makes.
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
    if (meta >> 32) & 0xFF != KIND_RESERVED or (meta >> META_WRITER_SHIFT) != slot + 1:
        return NOT_MEMBER
    new = (meta & ~(0xFF << 32)) | ((kind & 0xFF) << 32)
    if atomic_cas(w, at + 1, meta, new) != meta:
        return NOT_MEMBER
    void = kind & 0xFF == KIND_VOID
    if not void:
        atomic_add(w, H_APPENDS, 1)
        atomic_add(w, slot_word(slot, S_SENT), 1)
    if (void or kind & APPEND_SKIP) and w[slot_word(slot, S_FLAGS)] & SF_READER:
        # As ring_put does for a copied record: a writer that has read
        # everything passes its own record (one it screens, or a void one).
        size = w[at]
        if atomic_cas(w, slot_word(slot, S_CURSOR), pos, pos + size) == pos and not void:
            atomic_add(w, slot_word(slot, S_SCREENED), 1)
    atomic_add(w, H_DATA_SEQ, 1)
    return wake_now(mem, OK | wake_flags(w, W_DATA))


@njit(**_JIT)
def pin_set(mem, slot, pos):
    """Set ``slot``'s pin to ``pos`` (-1: none); only its owner calls this,
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


@njit(**_JIT)
def op_peek(mem, lockval, slot, scr):
    """``ring_peek`` under the lock, or ``BUSY`` (8 values)."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY, 0, 0, 0, 0, 0, 0, 0
    r = ring_peek(w, mem, slot, lockval & ~CONTENDED, scr)
    return r[0] | lock_release(w), r[1], r[2], r[3], r[4], r[5], r[6], r[7]


@njit(**_JIT)
def op_commit(mem, lockval, slot, pos, size, pin):
    """``ring_commit`` under the lock, or ``BUSY``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY
    status = ring_commit(w, slot, lockval & ~CONTENDED, pos, size, pin)
    return status | lock_release(w)


#: Tries of a pop without the lock whose cursor was moved meanwhile (by a
#: writer passing this reader over its own message or the ring's padding)
#: before it answers BUSY.
_POP_TRIES = 8


@njit(**_JIT)
def pop_free(w, mem, slot, token, scr, out):
    """``ring_pop`` without the lock: what it returns, the same way.

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


@njit(**_JIT)
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


@njit(**_JIT)
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


@njit(**_JIT)
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


# -- Batches (pysyncq.batch): many records per kernel call and per lock.


@njit(**_JIT)
def ring_put_many(w, mem, slot, token, sender, mtype, blob, lens, kinds, kind, first, off, count):
    """Append bodies ``first .. count-1`` from ``slot`` while they fit, as
    ``ring_put`` would one by one, with the checks made once.  Lock held.

    The bodies lie back to back in ``blob``, body ``first`` at byte ``off``.
    Body ``i`` is ``lens[i]`` bytes long, or ``lens[0]`` for every body when
    ``lens`` has one entry; its kind is ``kinds[i]``, or ``kind`` for every
    body when ``kinds`` is empty (each a ``KIND_*``, with ``APPEND_SKIP`` as
    for ``ring_put``).  Each record is published (``H_WRITE_POS``) as soon as
    it is written, so a writer killed here leaves whole records only.

    Returns ``(status, n, off)``: ``n`` records went in and ``off`` is the
    byte of ``blob`` where the next body starts.  ``status`` is ``OK`` (with
    the ``WAKE_*`` bits of all) when all went in, else that of the first that
    did not, as ``ring_put`` gives it (``FULL`` with the space sequence above
    ``SEQ_SHIFT``, ``TOO_LARGE``, ``NOT_MEMBER``, ``CORRUPT``), with the
    ``WAKE_*`` bits of those before.  A body that lies outside ``blob`` (a bad
    call, never a message) is ``TOO_LARGE``.
    """
    bad = header_check(w)
    if bad:
        return _corrupt(bad), 0, off
    if not is_member(w, slot, token):
        return NOT_MEMBER, 0, off
    cap = w[H_CAPACITY]
    base = w[H_RING_OFFSET]
    heads = len(sender) + len(mtype)
    meta0 = len(sender) | (len(mtype) << 16) | ((slot + 1) << META_WRITER_SHIFT)
    reader = w[slot_word(slot, S_FLAGS)] & SF_READER
    cw = slot_word(slot, S_CURSOR)
    uniform = len(lens) == 1
    pos = w[H_WRITE_POS]
    head = w[H_HEAD]
    flags = 0
    status = OK
    n = 0
    screened = 0
    for i in range(first, count):
        if not uniform and i >= len(lens):
            status = TOO_LARGE
            break
        blen = lens[0] if uniform else lens[i]
        k = kinds[i] if len(kinds) > i else kind
        if blen < 0 or off < 0 or off + blen > len(blob):
            status = TOO_LARGE
            break
        payload = heads + blen
        size = (REC_HEADER + payload + 7) & ~7
        if size > cap:
            status = TOO_LARGE
            break
        status, more, pos, head = _make_room(w, pos, head, size, cap)
        flags |= more
        if status & CODE_MASK:
            break
        at = base + pos % cap
        w[at // 8] = size
        w[at // 8 + 1] = meta0 | ((size - REC_HEADER - payload) << 40) | ((k & 0xFF) << 32)
        p = _copy_in(mem, at + REC_HEADER, sender)
        p = _copy_in(mem, p, mtype)
        copy_bytes(mem, p, blob, off, blen)
        for q in range(p + blen, at + size):
            mem[q] = 0
        atomic_store(w, H_WRITE_POS, pos + size)  # this record becomes visible here
        if k & APPEND_SKIP and reader and atomic_cas(w, cw, pos, pos + size) == pos:
            screened += 1
        pos += size
        off += blen
        n += 1
    if n:
        atomic_add(w, H_APPENDS, n)
        atomic_add(w, slot_word(slot, S_SENT), n)
        atomic_add(w, slot_word(slot, S_SCREENED), screened)
        atomic_add(w, H_DATA_SEQ, n)  # one bump per record, as n appends make
        flags |= wake_flags(w, W_DATA)
    return status | flags, n, off


@njit(**_JIT)
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


#: Bytes of ``fmt`` that ``ring_pop_many`` needs free for one more message:
#: three struct codes of at most 15 digits and a letter.
FMT_PER_MESSAGE = 48
#: int64 words of ``segs`` per run of messages (see ``ring_pop_many``).
SEG_WORDS = 4


@njit(**_JIT)
def _fmt_code(fmt, fp, value, letter):
    """Write struct code ``<value><letter>`` (e.g. ``64s``) at ``fmt[fp]``;
    return the position after it.  ``value`` >= 0."""
    digits = 1
    v = value
    while v >= 10:
        v //= 10
        digits += 1
    v = value
    for d in range(digits - 1, -1, -1):
        fmt[fp + d] = 48 + v % 10
        v //= 10
    fmt[fp + digits] = letter
    return fp + digits + 1


@njit(**_JIT)
def _head_equal(mem, p, out, q, n):
    for i in range(n):
        if mem[p + i] != out[q + i]:
            return False
    return True


@njit(**_JIT)
def ring_pop_many(w, mem, slot, token, scr, out, fmt, segs, limit):
    """Pop up to ``limit`` records that ``slot`` does not screen, for
    ``pysyncq.batch``, with one move of the cursor at the end.  Lock held.

    Into ``out`` go, back to back, each body, preceded by the sender and type
    when they differ from the previous message's (the usual batch has one
    sender and one type: they are copied, compared and decoded once).  Into
    ``fmt`` goes a ``struct`` format that unpacks ``out``: ``<n>s`` for each
    sender, type and body, ``<n>x`` for the body of an array record (which
    the caller decodes from ``out`` itself).  Into ``segs`` go runs of
    messages, ``SEG_WORDS`` words each: ``(count, new_head, offset,
    length)``, where ``new_head`` says the run starts with a sender and type,
    and ``length`` is -1 for a run of ``count`` str or bytes bodies, or for
    an array record (``count`` 1) the length of its body at ``offset`` in
    ``out``.  A run holds one sender and type and no array.  It stops when
    ``fmt`` or ``segs`` has no room for one more message (``OK``).

    Returns ``(status, count, fmt_len, nsegs, arrays)``, ``arrays`` the number
    of array records; ``status`` is ``OK`` (``limit`` popped, or no room
    left), or what ended the batch: ``EMPTY``/``PENDING`` with the data
    sequence above ``SEQ_SHIFT``, ``NEED_SPACE`` with the bytes ``out`` must
    hold for the next record (alone) above it, ``NOT_MEMBER``, ``CORRUPT``;
    with the ``WAKE_*`` bits of the cursor move.
    """
    bad = header_check(w)
    if bad:
        return _corrupt(bad), 0, 0, 0, 0
    start = _reader_start(w, slot, token)
    if start == -1:
        return NOT_MEMBER, 0, 0, 0, 0
    if start == -2:
        return _corrupt(C_CURSOR), 0, 0, 0, 0
    seq = atomic_load(w, H_DATA_SEQ) & _SEQ32
    end = w[H_WRITE_POS]
    cap = w[H_CAPACITY]
    base = w[H_RING_OFFSET]
    cur = start
    at = 0  # bytes used in out
    fp = 0  # bytes used in fmt
    ns = 0  # runs in segs
    n = 0
    prev = -1  # offset in out of the last sender and type copied
    prev_s = prev_t = 0
    last_array = False
    arrays = 0
    sw = scr.view(np.int64)
    status = OK
    while n < limit:
        if fp + FMT_PER_MESSAGE > len(fmt) or SEG_WORDS * (ns + 1) > len(segs):
            break
        code, cur, size, meta = _next_in_batch(w, mem, slot, scr, sw, cur, end)
        if code != OK:
            status = code | (seq << SEQ_SHIFT) if code != CORRUPT else _corrupt(C_RECORD)
            break
        slen, tlen, blen = record_lens(meta, size)
        is_array = (meta >> 32) & 0xFF == KIND_ARRAY
        p = base + cur % cap + REC_HEADER
        hl = slen + tlen
        same = (
            prev >= 0 and slen == prev_s and tlen == prev_t and _head_equal(mem, p, out, prev, hl)
        )
        need = blen if same else hl + blen
        if at + need > len(out):
            status = NEED_SPACE | ((hl + blen) << SEQ_SHIFT)
            break
        if not same:
            copy_bytes(out, at, mem, p, hl)
            prev, prev_s, prev_t = at, slen, tlen
            at += hl
            fp = _fmt_code(fmt, fp, slen, 115)  # 's'
            fp = _fmt_code(fmt, fp, tlen, 115)
        if ns == 0 or not same or is_array or last_array:
            segs[SEG_WORDS * ns] = 1
            segs[SEG_WORDS * ns + 1] = 0 if same else 1
            segs[SEG_WORDS * ns + 2] = at if is_array else 0
            segs[SEG_WORDS * ns + 3] = blen if is_array else -1
            ns += 1
        else:
            segs[SEG_WORDS * (ns - 1)] += 1
        last_array = is_array
        if is_array:
            arrays += 1
        copy_bytes(out, at, mem, p + hl, blen)
        at += blen
        fp = _fmt_code(fmt, fp, blen, 120 if is_array else 115)  # 'x' or 's'
        cur += size
        n += 1
    if n:
        w[slot_word(slot, S_RECEIVED)] += n
    moved = _reader_move(w, slot, start, cur, status)
    return moved, n, fp, ns, arrays


@njit(**_JIT)
def op_pop_many(mem, lockval, slot, scr, out, fmt, segs, limit):
    """``ring_pop_many`` under the lock, then the wakes (``wake_now``), or
    ``(BUSY, 0, 0, 0, 0)``."""
    w = mem.view(np.int64)
    if atomic_cas(w, H_LOCK, 0, lockval) != 0:
        return BUSY, 0, 0, 0, 0
    r = ring_pop_many(w, mem, slot, lockval & ~CONTENDED, scr, out, fmt, segs, limit)
    return wake_now(mem, r[0] | lock_release(w)), r[1], r[2], r[3], r[4]


@njit(**_JIT)
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


@njit(**_JIT)
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


@njit(**_JIT)
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


# -- Lock-free reads and the owner's own wait bits.


@njit(**_JIT)
def seq_load(mem, index):
    """The low 32 bits of header word ``index`` (a futex word)."""
    return atomic_load(mem.view(np.int64), index) & _SEQ32


@njit(**_JIT)
def set_waiting(mem, slot, bits):
    """Set the owner's wait bits (only the slot's owner calls this)."""
    w = mem.view(np.int64)
    if 0 <= slot < table_slots(w):
        store_wait(w, slot, bits)


@njit(**_JIT)
def members(mem):
    """``(slot, token, is_reader)`` rows for every active slot, and a row
    ``(-1, creator_token, 0)`` while the creator holds the queue.  Safe on any
    header (the table is scanned only as far as the mapping goes)."""
    w = mem.view(np.int64)
    hwm = slot_hwm(w)
    rows = np.empty((hwm + 1, 3), np.int64)
    n = 0
    creator = w[H_CREATOR]
    if creator != 0:
        rows[0, 0] = -1
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
