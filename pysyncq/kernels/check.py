"""Checks: slot indexing, and the checks of the header and of records that come
before any word read from the segment is used.

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
"""

from ..layout import (
    C_GEOMETRY,
    C_HEADER,
    C_POSITIONS,
    C_SLOTS,
    CORRUPT,
    H_CAPACITY,
    H_HEAD,
    H_MAGIC,
    H_NSLOTS,
    H_RING_OFFSET,
    H_SLOT_HWM,
    H_VERSION,
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
    REC_HEADER,
    S_STATE,
    S_TOKEN,
    SEQ_SHIFT,
    SLOT_ACTIVE,
    SLOT_BYTES,
    SLOT_WORDS,
)
from ._jit import INT, WORDS, kernel

_SEQ32 = 0xFFFFFFFF


_MAX_SLOTS = MAX_SLOTS


@kernel()
def _corrupt(reason):
    return CORRUPT | (reason << SEQ_SHIFT)


@kernel((INT, INT))
def slot_word(slot, field):
    """Index in the int64 view of ``field`` of reader slot ``slot``."""
    return HEADER_WORDS + slot * SLOT_WORDS + field


@kernel()
def table_slots(w):
    """How many slots the table may be scanned for: the header's count, but
    never past the mapping (so this is safe on any header)."""
    n = w[H_NSLOTS]
    room = (len(w) * 8 - HEADER_BYTES) // SLOT_BYTES
    if n > room:
        n = room
    return n if n > 0 else 0


@kernel()
def slot_hwm(w):
    """The slot high-water mark, clamped to the table (safe on any header)."""
    n = w[H_SLOT_HWM]
    limit = table_slots(w)
    if n > limit:
        n = limit
    return n if n > 0 else 0


@kernel((WORDS,))
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


@kernel()
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


@kernel()
def is_member(w, slot, token):
    """True if ``slot`` is an active slot owned by ``token``."""
    if slot < 0 or slot >= table_slots(w):
        return False
    return w[slot_word(slot, S_STATE)] == SLOT_ACTIVE and w[slot_word(slot, S_TOKEN)] == token


@kernel()
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


@kernel()
def record_lens(meta, size):
    """``(sender, type, body)`` lengths of a record of ``size`` bytes whose
    meta word is ``meta`` (layout.py: the body is what the header, the two
    names and the padding leave)."""
    slen = meta & 0xFFFF
    tlen = (meta >> 16) & 0xFFFF
    return slen, tlen, size - REC_HEADER - slen - tlen - ((meta >> 40) & 0xFF)
