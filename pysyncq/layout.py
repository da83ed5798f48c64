"""The shared-memory format of a pysyncq queue.

One POSIX shared-memory segment holds a whole queue::

    offset 0                 HEADER_BYTES             ring_offset          ring_offset + capacity
    +------------------------+------------------------+--------------------+
    | header (int64 words)   | reader table           | ring (bytes)       |
    | H_* below              | nslots x SLOT_BYTES    | records, 8-aligned |
    +------------------------+------------------------+--------------------+

Positions
    ``write_pos``, ``head`` and every reader's ``cursor`` are monotonic byte
    counters (int64) that only ever grow.  A position ``p`` lives at ring offset
    ``p % capacity``.  The bytes in use are ``write_pos - head``, where ``head``
    is a cache of the smallest cursor of any open reader (or ``write_pos`` when
    there is none).  The cache may lag behind the true minimum, never run ahead
    of it, so space is never freed early.  Readers move their own cursor
    without the lock (one compare-and-swap, see ``kernels.pop_free``); writers
    refresh ``head`` under the lock when the ring looks full, and move another
    reader's cursor only by compare-and-swap, when it is at ``write_pos``
    (past their own screened record, or the ring's padding).

Records
    Every record starts on an 8-byte boundary with a 16-byte header::

        word 0: size     total bytes of the record, header and padding included
        word 1: meta     sender_len | type_len << 16 | kind << 32 | pad << 40
                         | (writer slot + 1) << 48

    followed by the sender, type and body bytes, back to back, then ``pad``
    zero bytes to reach a multiple of 8.  A record never crosses the end of the
    ring: when it would, the writer fills the rest of the ring with a padding
    record (kind ``KIND_PAD``) and starts the record at offset 0.  When fewer
    than ``REC_HEADER`` bytes are left before the end, there is no room for a
    padding header and readers skip those bytes by rule.

Publication
    A record becomes visible in one of two ways.  Copied under the lock: the
    writer writes it whole and then stores the new write position.  Reserved
    (a loan, or a large message copied outside the lock): under the lock the
    writer writes the record header with kind ``KIND_RESERVED`` (sender, type
    and any array descriptor too) and stores the write position past it;
    outside the lock it fills the body, then publishes by swapping the meta
    word to the real kind (or to ``KIND_VOID`` to discard).  Readers stop at
    the first reserved record (``PENDING``), so messages stay in ring order;
    other writers append after it meanwhile.  The writer's slot pins the
    reservation (``S_PIN``), so its space is never reused before it is
    published, whatever the readers do; when a slot is freed (its process
    closed or was reaped) its reservations are voided and readers go on.
    A ``pop_view`` pins its record the same way until the view is released,
    or until the arrays made from it are collected: past a ``close()`` too,
    when the slot lingers as their pin (``slot_linger``), no longer a reader.

Memory order
    Processes share these words without the lock in three places: pops (which
    never take it), writers filling a reservation, and sleepers watching the
    futex words.  The rules (``kernels._intrinsics`` holds the atomics, all
    sequentially consistent, so each is at least acquire when loading and
    release when storing):

    1. A store that publishes is atomic and comes last: the write position
       after a record copied under the lock, the meta word's swap after a
       reservation's fill, ``S_STATE`` after a slot's fields, a cursor after
       the records it passes were read.
    2. A load that guards later loads is atomic and comes first: the write
       position before the records below it (their ``size`` words, stored
       before it, need no atomic load), a record's meta word (``record_check``)
       before its sender, type and body, since a record filled outside the
       lock may be published by the swap alone.
    3. A reader that copies first and validates second (``pop_free``: copy,
       then check that its slot still owns the records) puts an acquire fence
       between the two, so that no load of the copy is made after the check.
    4. Words a lock holder writes and another lock holder reads need nothing
       more: taking and releasing the lock are atomic swaps.

    x86 keeps loads in order and stores in order by itself, so there rules 2
    and 3 only stop the compiler; ARM and POWER reorder both, and need them.

Reader table
    ``nslots`` slots of 16 int64 words (``S_*``), one per process that opened
    the queue: the words its owner writes on every call in the first cache
    line, its sender name (the first ``SLOT_NAME_BYTES``) in the second.  A
    slot is claimed by writing its fields and then ``S_STATE`` last, and freed
    by clearing ``S_STATE``; both happen with the queue lock held.

Futex words
    ``H_LOCK_SEQ``, ``H_DATA_SEQ``, ``H_SPACE_SEQ`` and ``H_MEMBER_SEQ`` are
    event counters that sleepers wait on (Linux futex on the low 32 bits, which
    come first on a little-endian machine).
"""

import numpy as np

#: "PYSYNCQ" and a format byte, read as a little-endian int64.
MAGIC = int.from_bytes(b"PYSYNCQ\x01", "little")
#: Bumped whenever the meaning of any word below changes.
LAYOUT_VERSION = 5  # 3: pops move their cursor without the lock (see pop_free);
#                     4: H_WAITERS, H_APPENDS beside the write position;
#                     5: H_APPENDS tagged, H_APPEND_JOURNAL

WORD = 8
HEADER_BYTES = 320
HEADER_WORDS = HEADER_BYTES // WORD
SLOT_BYTES = 128
SLOT_WORDS = SLOT_BYTES // WORD
REC_HEADER = 16

# -- Header words.  Grouped so that the words written on every message share a
# -- cache line and the lock word has one of its own.
H_MAGIC = 0  # MAGIC, stored last when the segment is formatted
H_VERSION = 1  # LAYOUT_VERSION
H_CAPACITY = 2  # usable ring bytes, a multiple of 8
H_NSLOTS = 3  # size of the reader table
H_RING_OFFSET = 4  # byte offset of the ring in the segment
H_INSTANCE = 5  # random id of this segment, so that a name reused later is told apart
H_CREATOR = 6  # token of the creating process while it holds the queue, else 0
H_FLAGS = 7  # F_* bits

H_LOCK = 8  # token of the process holding the queue lock (| CONTENDED), 0 when free
H_LOCK_SEQ = 9  # futex: bumped by a release that saw CONTENDED
H_PIDNS = 10  # inode of the creator's pid namespace (0: unknown)
H_TIMENS = 11  # inode of the creator's time namespace (0: unknown)

H_WRITE_POS = 16  # position after the last complete record; stored last by an append
H_HEAD = 17  # a lower bound of the reader cursors and pins, refreshed by writers
H_DATA_SEQ = 18  # futex: bumped by every append
H_SPACE_SEQ = 19  # futex: bumped whenever head moves forward
H_SLOT_HWM = 20  # one past the highest slot ever claimed; scans stop here
H_MEMBER_SEQ = 21  # futex: bumped by every open and close
#: Messages appended since creation, shifted up by ``APPENDS_SHIFT`` above
#: a tag bit (``APPENDS_TAG``): ``appends_count`` reads it.  On the line
#: every append writes.  Each message is counted when its space is taken: a
#: reservation (a loan, a large message copied outside the lock) when it is
#: reserved, so that a reader's S_BASE, taken at open, counts exactly the
#: records before its cursor.  A reservation later discarded or voided stays
#: counted, and every reader that passes the void record counts it in
#: S_SCREENED.  Only a lock holder changes it, in ``kernels.write``'s
#: ``count_and_publish``, with the journal below; so it cannot drift when a
#: holder is killed (see H_APPEND_JOURNAL).
H_APPENDS = 22
#: The append being counted and published, written before its count:
#: ``end | tag``, ``end`` the write position it publishes (8-aligned) and
#: ``tag`` (``APPENDS_TAG``) the tag bit its count stores in H_APPENDS.  An
#: append stores, in this order, the journal, the writer's S_SENT, H_APPENDS
#: (count + 1, with the journal's tag) and the write position.  A holder
#: killed among them leaves: a journal whose ``end`` is past the write
#: position and whose tag H_APPENDS does not carry (not counted, not
#: published: as if it never ran), or one whose tag H_APPENDS carries
#: (counted, not published): then ``appends_recover``, run by whoever takes
#: the lock over, publishes the record, which was complete before the
#: journal was written.  So appended always equals the messages published
#: (and reserved); only the dead writer's own S_SENT may be one too high (a
#: kill between its S_SENT and H_APPENDS), a slot that is reaped anyway.
H_APPEND_JOURNAL = 23
APPENDS_TAG = 1
APPENDS_SHIFT = 1

H_RECOVERIES = 24  # locks taken over from a dead holder
H_REAPED = 25  # slots freed because their process had died

#: Slots whose ``S_WAIT`` is not 0, or more (never fewer): raised before a
#: slot's first bit is stored and lowered after its last is cleared, so that
#: 0 means nobody waits and a writer or pop need not read every slot's line
#: (``kernels.wake_flags``).  Alone on its line, written only by a member
#: that starts or stops waiting: shared and clean while nobody sleeps.  A
#: process killed between raising it and storing its bit leaves it one too
#: high, which costs those scans again, never a lost wake-up.
H_WAITERS = 32

F_UNLINKED = 1  # the segment's name has been (or is being) unlinked
F_FOREIGN_NS = 2  # a member lives in another pid or time namespace: pids and
#                   start times cannot be compared, so nobody is judged dead
OPEN_READER = 1  # op_open flags
OPEN_FOREIGN = 2
OPEN_DURABLE = 4

# -- Reader-table slot words.
S_STATE = 0  # SLOT_FREE or SLOT_ACTIVE, stored last when claiming
S_TOKEN = 1  # token of the owning process
S_CURSOR = 2  # position of the next record this reader will look at
S_FLAGS = 3  # SF_* bits
S_WAIT = 4  # W_* bits: what the owner sleeps on
S_SENT = 5  # messages appended by this slot
S_RECEIVED = 6  # messages popped by this slot
S_SCREENED = 7  # messages skipped by this slot's screens, and void records it passed
S_NAME_LEN = 8  # length of the owner's sender name in bytes (all of it)
S_BASE = 9  # the append count (H_APPENDS >> APPENDS_SHIFT) when the slot was
#             opened: lag in messages is count - S_BASE - S_RECEIVED - S_SCREENED
S_PIN = 10  # 0, or 1 + the lowest position this slot still needs kept: the
#            record of an open pop_view, or an unpublished reservation (a loan)
S_NAME = 11  # words 11..15: the first SLOT_NAME_BYTES bytes of the sender name
SLOT_NAME_BYTES = 8 * (SLOT_WORDS - S_NAME)
#: ``pin_set``'s position when nothing is pinned (``S_PIN`` holds it + 1: 0).
NO_PIN = -1
#: A slot index that names no slot: what slot_open answers when every slot is
#: taken, op_leave's slot when only the creator's hold goes, and the slot of
#: the creator's row in ``kernels.members``.
NOT_A_SLOT = -1

SLOT_FREE = 0
SLOT_ACTIVE = 1
SF_READER = 1  # the slot holds a read cursor that pins unread records
SF_DURABLE = 2  # not reaped when its process dies: a process that opens with
#                 the same sender name and durable=True takes it over, cursor
#                 and all (a relay that must not lose what it has not sent)

W_DATA = 1
W_SPACE = 2
#: With W_DATA or W_SPACE: the owner waits in an asyncio loop, on a datagram
#: socket that ``_wait.wake`` signals (see pysyncq._aiowake), not on the futex.
W_ASYNC = 4
#: op_pop's ``waits`` (see ``pop_waits``): in the low byte (``WAITS_MASK``)
#: what the slot's ``S_WAIT`` must hold after a pop that got a record, above
#: this shift what it must hold after one that found nothing.
WAITS_EMPTY_SHIFT = 8
WAITS_MASK = 0xFF

# -- Record kinds (byte 4 of the meta word).
KIND_STR = 1  # body was given as str (or as an object converted with str())
KIND_BYTES = 2  # body was given as bytes
KIND_ARRAY = 3  # body is a numpy array: a descriptor, then the raw data (codec.py)
KIND_PAD = 255  # filler up to the end of the ring
KIND_RESERVED = 254  # space reserved by a writer, not yet published: readers stop here
KIND_VOID = 253  # a reservation given up (discarded, or its writer died): skipped
#: Given with the kind to an append: the appender would screen this message
#: itself, so if it has read everything its cursor moves past the message.
APPEND_SKIP = 1 << 8

#: Bits of the meta word above the pad byte: the writer's slot + 1 (0: none).
META_WRITER_SHIFT = 48
#: The other fields of the meta word (see Records above), and the widths of all.
META_TYPE_SHIFT = 16
META_KIND_SHIFT = 32
META_PAD_SHIFT = 40
LEN_MASK = 0xFFFF  # a sender's or a type's length
KIND_MASK = 0xFF  # a record kind (also what an append's kind holds below APPEND_SKIP)
PAD_MASK = 0xFF
WRITER_MASK = 0xFFFF  # the writer's slot + 1
#: A pop's ``kind`` (op_pop, op_peek, op_read_ahead): the record's kind in its
#: low byte (``KIND_MASK``), the writer's slot + 1 above this shift.
KIND_WRITER_SHIFT = 8

#: Upper limit of the sender and the type, in bytes (they are stored in 16 bits).
MAX_NAME_BYTES = 0xFFFF

# -- Process tokens: pid in the low 22 bits, process start time above.  The lock
# -- word and each slot hold a token, so that a reused pid is never mistaken for
# -- the process that died.  Bit 62 marks a contended lock.
PID_BITS = 22
PID_MASK = (1 << PID_BITS) - 1
START_MASK = (1 << (62 - PID_BITS)) - 1
CONTENDED = 1 << 62

# -- Status codes returned by the kernels.  The low byte is the code; the next
# -- bits ask the caller to wake sleepers after the lock is released.
OK = 0
EMPTY = 1
FULL = 2
TOO_LARGE = 3
BUSY = 4  # the lock is held by someone else: nothing was done
#: BUSY also answers a kernel that lost a race it may win by trying again:
#: op_steal of a lock its dead holder no longer holds, a pop whose cursor
#: writers kept moving (pop_free).  Nothing was done; the caller looks again.
RETRY = BUSY
NO_SLOT = 5  # every reader slot is taken
NOT_MEMBER = 6  # the slot is not (any more) owned by this token
NEED_SPACE = 7  # the caller's output buffer is too small for the next record
PENDING = 9  # like EMPTY, but the reader stopped at an unpublished reservation
CORRUPT = 8  # a word read from the segment is impossible; the reason (C_*) is
#              above SEQ_SHIFT, and nothing was changed after it was seen
#: A pop that takes only some records (pysyncq.jit's ``take``, see
#: ``kernels.read.pop_free_with``) answers these for one it does not take,
#: and leaves it unread: not the kind it takes, an array of another dtype.
WRONG_KIND = 10
WRONG_DTYPE = 11
#: ... or for a record whose body is malformed (an array descriptor that does
#: not describe its body): passed, as Python's pop passes it before it raises.
BAD_BODY = 12
CODE_MASK = 0xFF
WAKE_DATA = 1 << 8
WAKE_SPACE = 1 << 9
WAKE_LOCK = 1 << 10
WAKE_MEMBERS = 1 << 11
UNLINK = 1 << 12  # leave(): the caller was the last member and must unlink the name
#: With WAKE_* bits: the kernel made those futex calls itself (kernels.wake_now).
WAKE_DONE = 1 << 13
#: With WAKE_DATA / WAKE_SPACE, from kernels that look at the sleepers: one of
#: them waits in an asyncio loop, which ``_wait.wake`` must signal.
WAKE_ASYNC_DATA = 1 << 14
WAKE_ASYNC_SPACE = 1 << 15
SEQ_SHIFT = 16  # FULL: the space sequence the caller must wait on, above this bit
SEQ_MASK = 0xFFFFFFFF  # a futex word's low 32 bits: what a sleeper compares


# -- Why a segment is corrupt: the reason carried by a CORRUPT status.
C_HEADER = 1  # magic or layout version
C_GEOMETRY = 2  # capacity, slot count or ring offset against the mapped size
C_POSITIONS = 3  # write position and head
C_SLOTS = 4  # the slot high-water mark
C_CURSOR = 5  # a reader's cursor outside [head, write position]
C_RECORD = 6  # a record's size, field lengths or kind
#: Most slots a segment may declare (the table must fit in the mapping too).
MAX_SLOTS = 1 << 16

# -- op_read_ahead: from ``start`` (FROM_CURSOR: the reader's cursor), each
# -- record's fields go to ``lens``, AHEAD_WORDS int64 words a record, in this order.
FROM_CURSOR = -1
AHEAD_SENDER_LEN = 0
AHEAD_TYPE_LEN = 1
AHEAD_BODY_LEN = 2
AHEAD_KIND = 3  # a pop's kind: with the writer's slot + 1 above KIND_WRITER_SHIFT
AHEAD_POS = 4
AHEAD_WORDS = 5


def ring_offset(nslots):
    """Byte offset of the ring for a table of ``nslots`` slots."""
    return HEADER_BYTES + nslots * SLOT_BYTES


def segment_bytes(capacity, nslots):
    """Total bytes of a segment whose ring holds ``capacity`` bytes."""
    return ring_offset(nslots) + capacity


def record_bytes(payload):
    """Bytes a record with ``payload`` bytes of sender, type and body occupies."""
    return (REC_HEADER + payload + 7) & ~7


def appends_count(word):
    """The messages appended, from the word ``H_APPENDS`` holds."""
    return word >> APPENDS_SHIFT


def pop_waits(found, empty):
    """op_pop's ``waits``: the wait bits its slot must hold after a pop that
    got a record (``found``) and after one that found nothing (``empty``)."""
    return found | (empty << WAITS_EMPTY_SHIFT)


def max_payload(capacity):
    """The largest sender + type + body that fits in an empty ring."""
    return capacity - REC_HEADER


#: The dtype of the header and slot words.
WORD_DTYPE = np.int64
