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

from collections import namedtuple

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
    KIND_MASK,
    KIND_PAD,
    KIND_RESERVED,
    KIND_STR,
    KIND_VOID,
    KIND_WRITER_SHIFT,
    LAYOUT_VERSION,
    LEN_MASK,
    MAGIC,
    MAX_SLOTS,
    META_KIND_SHIFT,
    META_PAD_SHIFT,
    META_TYPE_SHIFT,
    META_WRITER_SHIFT,
    PAD_MASK,
    REC_HEADER,
    S_STATE,
    S_TOKEN,
    SEQ_MASK,
    SEQ_SHIFT,
    SLOT_ACTIVE,
    SLOT_BYTES,
    SLOT_WORDS,
    WRITER_MASK,
)
from ._intrinsics import atomic_load
from ._jit import INT, WORDS, kernel

_SEQ32 = SEQ_MASK
_MAX_SLOTS = MAX_SLOTS
#: ``header_check``'s and ``geometry_check``'s answer for a sound header
#: (every ``C_*`` reason is above it).
SOUND = 0
#: ``record_check``'s size for a record that is not well-formed (no record is
#: smaller than its header).
NOT_A_RECORD = 0

#: ``record_check``'s answer: ``size`` the record's bytes, ``word`` its meta
#: word; or ``size`` NOT_A_RECORD, ``word`` the size or meta word that failed.
Checked = namedtuple("Checked", "size word")
#: A record's field lengths, as ``record_lens`` decodes them.
Lens = namedtuple("Lens", "sender mtype body")


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
    return SOUND


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
    return SOUND


@kernel()
def is_member(w, slot, token):
    """True if ``slot`` is an active slot owned by ``token``."""
    if slot < 0 or slot >= table_slots(w):
        return False
    # Atomic: lock-free pops look at it after their copy (see pop_free).
    state = atomic_load(w, slot_word(slot, S_STATE))
    return state == SLOT_ACTIVE and w[slot_word(slot, S_TOKEN)] == token


@kernel()
def record_check(w, cur, end):
    """Check the record at position ``cur`` (``cur < end``, the write position).

    Returns ``Checked(size, meta)`` with ``size`` > 0 if it is a well-formed
    record or padding, else ``Checked(NOT_A_RECORD, value)`` with the
    offending size or meta word.  A record lies wholly before the ring's end
    and the write position, is at least a header and a multiple of 8, and its
    fields fit in it; a padding record fills exactly the rest of the ring.
    """
    cap = w[H_CAPACITY]
    room = cap - cur % cap
    at = (w[H_RING_OFFSET] + cur % cap) // 8
    size = w[at]  # stored before the write position that the caller loaded
    # Atomic (acquire): a record filled outside the lock is published by a
    # swap of this word, and the caller's loads of the fields come after it.
    meta = atomic_load(w, at + 1)
    if size < REC_HEADER or size % 8 != 0 or size > room or size > end - cur:
        return Checked(NOT_A_RECORD, size)
    kind = meta_kind(meta)
    if kind == KIND_PAD:
        return Checked(size, meta) if size == room else Checked(NOT_A_RECORD, size)
    if not (KIND_STR <= kind <= KIND_ARRAY or kind == KIND_RESERVED or kind == KIND_VOID):
        return Checked(NOT_A_RECORD, meta)
    fields = (meta & LEN_MASK) + ((meta >> META_TYPE_SHIFT) & LEN_MASK)
    pad = (meta >> META_PAD_SHIFT) & PAD_MASK
    if pad > 7 or REC_HEADER + fields + pad > size:
        return Checked(NOT_A_RECORD, meta)
    return Checked(size, meta)


@kernel(inline=True)
def record_lens(meta, size):
    """``Lens(sender, mtype, body)``: the lengths of the fields of a record of
    ``size`` bytes whose meta word is ``meta`` (layout.py: the body is what
    the header, the two names and the padding leave)."""
    slen = meta & LEN_MASK
    tlen = (meta >> META_TYPE_SHIFT) & LEN_MASK
    return Lens(slen, tlen, size - REC_HEADER - slen - tlen - ((meta >> META_PAD_SHIFT) & PAD_MASK))


@kernel(inline=True)
def record_size(payload):
    """Bytes a record of ``payload`` bytes of sender, type and body takes:
    its header, the payload and the zeros up to a multiple of 8."""
    return (REC_HEADER + payload + 7) & ~7


@kernel(inline=True)
def record_meta(slen, tlen, pad, kind, slot):
    """The meta word of a record from ``slot`` (its writer) of ``kind`` with a
    sender and a type of ``slen`` and ``tlen`` bytes, ``pad`` zeros at its end."""
    meta = slen | (tlen << META_TYPE_SHIFT) | (pad << META_PAD_SHIFT)
    return meta | ((kind & KIND_MASK) << META_KIND_SHIFT) | ((slot + 1) << META_WRITER_SHIFT)


@kernel(inline=True)
def meta_kind(meta):
    """The record kind (a ``KIND_*``) in meta word ``meta``."""
    return (meta >> META_KIND_SHIFT) & KIND_MASK


@kernel(inline=True)
def meta_writer(meta):
    """The writer's slot + 1 (0: none) in meta word ``meta``."""
    return (meta >> META_WRITER_SHIFT) & WRITER_MASK


@kernel(inline=True)
def meta_with_kind(meta, kind):
    """Meta word ``meta`` with its kind set to ``kind`` (a publication, a void)."""
    return (meta & ~(KIND_MASK << META_KIND_SHIFT)) | ((kind & KIND_MASK) << META_KIND_SHIFT)


@kernel(inline=True)
def pop_kind(meta):
    """What a pop answers as a record's kind: its kind, and the writer's slot
    + 1 above ``KIND_WRITER_SHIFT``."""
    return meta_kind(meta) | (meta_writer(meta) << KIND_WRITER_SHIFT)
