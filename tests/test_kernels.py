"""The numba kernels of pysyncq.kernels, in one process, on a plain numpy array.

Hand-picked edge cases first (each with the numbers worked out by hand), then
the status and flag details, the lock, a Hypothesis state machine that drives
the kernels and the reference model (``model.py``) side by side, and a
crash-consistency property.  No shared memory and no other process is used.
"""

import numpy as np
import oracles
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule
from introspect import as_bytes, screen_table
from model import RingModel, align8

from pysyncq import kernels as K
from pysyncq import layout as L

SEQ32 = 0xFFFFFFFF
FLAGS = L.WAKE_DATA | L.WAKE_SPACE | L.WAKE_LOCK | L.WAKE_MEMBERS | L.UNLINK
NO_SCREEN = screen_table([], [])
#: Header words that may change on an operation that otherwise changes nothing:
#: the cached head (and its sequence) and the lock sequence.
DERIVED = (L.H_HEAD, L.H_SPACE_SEQ, L.H_LOCK_SEQ)
_FUTEX_BITS = L.WAKE_DATA | L.WAKE_SPACE | L.WAKE_LOCK | L.WAKE_MEMBERS


def woken(status):
    """The status of a kernel that makes its own futex wakes (``wake_now``),
    less ``WAKE_DONE``, which it must carry exactly when it asked for one."""
    if isinstance(status, tuple):
        return (woken(status[0]),) + status[1:]
    assert bool(status & L.WAKE_DONE) == (K.HAVE_FUTEX and bool(status & _FUTEX_BITS)), status
    return status & ~L.WAKE_DONE


def starts(cap):
    """Start positions: 16 and 8 bytes before a ring boundary, near 2**62 or
    not, and at a boundary."""
    return [2**62 + cap - 16, cap - 8, 2**62 - 3 * cap + 8, 0, 2**62]


def code(status):
    return status & L.CODE_MASK


def sized(size, tag=b""):
    """A message (sender, type, body) that takes exactly ``size`` ring bytes."""
    assert size % 8 == 0 and size >= 16 + len(tag)
    return (b"", tag, b"." * (size - 16 - len(tag)))


def ok(msg, kind=L.KIND_BYTES):
    """What ``Rig.pop`` returns for ``msg``."""
    return L.OK, (*msg, kind)


class Rig:
    """A queue in a plain numpy array, driven through the ring kernels."""

    def __init__(self, cap=256, nslots=4, start=0, creator=0, fill=0):
        self.cap, self.nslots, self.start = cap, nslots, start
        self.off = L.ring_offset(nslots)
        self.mem = np.full(L.segment_bytes(cap, nslots), fill, np.uint8)
        K.ring_format(self.mem, cap, nslots, self.off, 1234, creator, start)
        self.w = self.mem.view(np.int64)
        self.out = np.zeros(4096, np.uint8)
        self.tokens = {}  # slot -> token of its owner
        self._tokens = 0

    def new_token(self):
        self._tokens += 1
        return (self._tokens << L.PID_BITS) | 4321

    def open(self, reader=True, token=None):
        token = self.new_token() if token is None else token
        slot = K.slot_open(self.w, token, 1 if reader else 0)
        if slot >= 0:
            self.tokens[slot] = token
        return slot

    def _tok(self, slot, token):
        return self.tokens.get(slot, 1) if token is None else token

    def append(self, slot, sender=b"", mtype=b"", body=b"", kind=L.KIND_BYTES, token=None):
        token = self._tok(slot, token)
        return oracles.ring_append(self.w, self.mem, slot, token, sender, mtype, body, kind)

    def pop(self, slot, senders=(), types=(), out=None, token=None):
        """``(status, (sender, type, body, kind))`` on OK, else ``(status, (slen,
        tlen, blen, kind))`` as the kernel returned them."""
        out = self.out if out is None else out
        scr = screen_table(list(senders), list(types)) if senders or types else NO_SCREEN
        status, slen, tlen, blen, kind = oracles.ring_pop(
            self.w, self.mem, slot, self._tok(slot, token), scr, out
        )
        if code(status) == L.OK:
            raw = bytes(out[: slen + tlen + blen])
            self.writer = (kind >> 8) - 1  # the slot that appended it
            kind &= 0xFF
            return status, (raw[:slen], raw[slen : slen + tlen], raw[slen + tlen :], kind)
        return status, (slen, tlen, blen, kind)

    def leave(self, slot, token=None, creator=False):
        return K.slot_leave(self.w, slot, self._tok(slot, token), creator)

    def word(self, index):
        return int(self.w[index])

    def slot(self, slot, field):
        return int(self.w[K.slot_word(slot, field)])

    def cursor(self, slot):
        return self.slot(slot, L.S_CURSOR)

    @property
    def write_pos(self):
        return self.word(L.H_WRITE_POS)

    @property
    def head(self):
        return self.word(L.H_HEAD)

    def empty(self):
        """What ``pop`` returns on an empty ring."""
        return L.EMPTY, (0, 0, self.word(L.H_DATA_SEQ) & SEQ32, 0)

    def used(self):
        """Bytes some reader has not passed, from the raw cursors (as ``stats``)."""
        end = self.write_pos
        cursors = [self.cursor(s) for s, _, r in K.members(self.mem) if s >= 0 and r]
        return end - min([end, *cursors])

    def free(self):
        return self.cap - self.used()

    def ring(self):
        return self.mem[self.off :]


def walk(rig, frm, to):
    """Decode the ring between positions ``frm`` and ``to`` by the layout's rules:
    ``(pos, size, (sender, type, body, kind))`` per record, ``(pos, size, None)``
    per padding (with a header or, under 16 bytes, without)."""
    entries = []
    p = frm
    while p < to:
        room = rig.cap - p % rig.cap
        at = rig.off + p % rig.cap
        if room < L.REC_HEADER:
            entries.append((p, room, None))
            p += room
            continue
        size, meta = int(rig.w[at // 8]), int(rig.w[at // 8 + 1])
        if (meta >> 32) & 0xFF == L.KIND_PAD:
            assert size == room and meta == L.KIND_PAD << 32
            entries.append((p, size, None))
        else:
            slen, tlen, pad = meta & 0xFFFF, (meta >> 16) & 0xFFFF, (meta >> 40) & 0xFF
            n = size - L.REC_HEADER - pad
            assert 1 <= meta >> 48 <= rig.nslots and pad < 8  # the writer's slot + 1
            assert pad < 8 and size == align8(L.REC_HEADER + n) <= room
            assert n >= slen + tlen
            raw = bytes(rig.mem[at + L.REC_HEADER : at + L.REC_HEADER + n])
            assert not rig.mem[at + L.REC_HEADER + n : at + size].any(), "padding not zero"
            msg = (raw[:slen], raw[slen : slen + tlen], raw[slen + tlen :], (meta >> 32) & 0xFF)
            entries.append((p, size, msg))
        p += size
    assert p == to
    return entries


# -- Sizes and the ring end ------------------------------------------------------


@pytest.mark.parametrize("start", starts(256))
def test_a_record_of_exactly_cap_bytes_fits_an_empty_ring(start):
    rig = Rig(256, 2, start)
    r = rig.open()
    msg = (b"snd", b"typ", b"b" * (256 - 16 - 6))
    assert rig.append(r, *msg) == L.OK
    first = start + (-start) % 256  # the next ring boundary: padding before it
    assert rig.write_pos == first + 256
    assert rig.cursor(r) == first  # moved past the padding, which pins nothing
    assert rig.used() == 256 and rig.free() == 0
    assert code(rig.append(r)) == L.FULL
    assert rig.pop(r) == ok(msg)
    assert rig.free() == 256
    assert rig.pop(r) == rig.empty()


@pytest.mark.parametrize("start", [0, 2**62])
def test_a_record_that_exactly_fills_the_free_space(start):
    rig = Rig(256, 2, start)
    slow, fast = rig.open(), rig.open()
    a, b, c = sized(64, b"A"), sized(192, b"B"), sized(64, b"C")
    assert rig.append(fast, *a) == L.OK
    assert rig.pop(fast) == ok(a)
    assert rig.append(fast, *b) == L.OK  # 64 + 192: the ring is exactly full
    assert rig.used() == 256 and rig.free() == 0
    assert code(rig.append(fast)) == L.FULL  # not even an empty record fits
    assert rig.pop(slow) == ok(a)
    assert rig.free() == 64
    assert code(rig.append(fast, *sized(72))) == L.FULL  # 8 bytes too many
    assert rig.append(fast, *c) == L.OK
    assert rig.write_pos == start + 320 and rig.free() == 0
    for r in (slow, fast):
        assert rig.pop(r) == ok(b)
        assert rig.pop(r) == ok(c)
        assert rig.pop(r) == rig.empty()
    assert rig.free() == 256


@pytest.mark.parametrize("start", [0, 2**62])
def test_a_record_ending_at_the_ring_end_and_the_next_one_wrapping(start):
    rig = Rig(256, 2, start)
    r = rig.open()
    a, b, c = sized(128, b"A"), sized(128, b"B"), sized(64, b"C")
    assert rig.append(r, *a) == L.OK
    assert rig.append(r, *b) == L.OK  # ends on the last byte of the ring
    assert rig.write_pos == start + 256 and rig.free() == 0
    assert rig.pop(r) == ok(a)
    assert rig.append(r, *c) == L.OK  # starts at ring offset 0, no padding
    assert rig.write_pos == start + 320
    assert rig.ring()[:8].view(np.int64)[0] == 64  # C's size word at offset 0
    assert rig.pop(r) == ok(b)
    assert rig.pop(r) == ok(c)
    assert rig.pop(r) == rig.empty()


def _wrap_with_room(room):
    """A ring (ring bytes 0xAB before formatting) with ``room`` bytes left at
    its end, a reader ``lag`` that has read one record of two, and a reader
    ``now`` at the write position; then a record C that does not fit the room."""
    rig = Rig(256, 2, 0, fill=0xAB)
    lag = rig.open()
    a, b, c = sized(128, b"A"), sized(128 - room, b"B"), sized(room + 16, b"C")
    assert rig.append(lag, *a) == L.OK
    assert rig.append(lag, *b) == L.OK
    assert rig.pop(lag) == ok(a)
    now = rig.open()
    assert rig.write_pos == 256 - room and rig.cursor(now) == 256 - room
    assert rig.append(lag, *c) == L.OK
    assert rig.write_pos == 256 + room + 16  # C starts at 256, after `room` bytes of padding
    assert rig.cursor(now) == 256  # the reader at the write position is moved past it
    assert rig.cursor(lag) == 128 and rig.used() == 256 + room + 16 - 128
    assert rig.pop(lag) == ok(b)
    assert rig.cursor(lag) == 256 - room  # at the padding: it still pins it
    assert rig.pop(lag) == ok(c)
    assert rig.pop(now) == ok(c)
    assert rig.pop(lag) == rig.empty() and rig.pop(now) == rig.empty()
    return rig


def test_less_than_16_bytes_left_at_the_end_are_skipped_without_a_header():
    rig = _wrap_with_room(8)
    assert (rig.ring()[248:256] == 0xAB).all()  # never written: readers skip by rule


@pytest.mark.parametrize("room", [16, 24, 40])
def test_16_or_more_bytes_left_at_the_end_get_a_padding_record(room):
    rig = _wrap_with_room(room)
    size, meta = rig.ring()[256 - room : 256 - room + 16].view(np.int64)
    assert size == room and meta == L.KIND_PAD << 32
    assert (rig.ring()[256 - room + 16 : 256] == 0xAB).all()


def test_padding_counts_against_the_free_space_of_a_pinned_ring():
    rig = Rig(256, 2, 0)
    r = rig.open()
    a, b = sized(64, b"A"), sized(160, b"B")
    assert rig.append(r, *a) == L.OK
    assert rig.append(r, *b) == L.OK  # 32 bytes left at the end
    assert rig.pop(r) == ok(a)  # B (64..224) is still unread
    # 32 of padding + 72 would end at 224 + 104 - 64 = 264 > 256 bytes past the
    # reader's cursor (the record alone would fit): FULL, and nothing written.
    before = rig.mem.copy()
    assert code(rig.append(r, *sized(72))) == L.FULL
    assert (rig.mem == before).all()
    c = sized(64, b"C")
    assert rig.append(r, *c) == L.OK  # 32 of padding + 64: exactly full
    assert rig.write_pos == 320 and rig.used() == 256
    assert rig.pop(r) == ok(b)
    assert rig.pop(r) == ok(c)


def test_a_record_that_ends_exactly_at_the_ring_end_needs_no_padding():
    rig = Rig(256, 2, 0)
    r = rig.open()
    assert rig.append(r, *sized(240, b"A")) == L.OK  # 16 bytes left at the end
    assert code(rig.append(r, *sized(32))) == L.FULL  # 16 of padding + 32 + 240 > 256
    assert rig.append(r, *sized(16)) == L.OK  # 240 + 16 = 256: no padding
    assert rig.write_pos == 256
    assert rig.pop(r) == ok(sized(240, b"A"))
    assert rig.pop(r) == ok(sized(16))


def test_an_exact_fit_is_not_refused_after_unread_records_were_freed():
    """Space is freed lazily (the head is a cache); an append that only fits
    once everything freed is counted must still succeed."""
    rig = Rig(256, 2, 0)
    writer = rig.open(reader=False)
    assert rig.append(writer, *sized(128, b"X")) == L.OK  # nobody reads it
    r = rig.open()
    a1, a2, b = sized(64, b"A1"), sized(64, b"A2"), sized(192, b"B")
    assert rig.append(writer, *a1) == L.OK
    assert rig.append(writer, *a2) == L.OK
    assert rig.pop(r) == ok(a1)
    assert rig.used() == 64
    assert rig.append(writer, *b) == L.OK  # 64 + 192 = 256
    assert rig.used() == 256
    assert rig.pop(r) == ok(a2)
    assert rig.pop(r) == ok(b)


@pytest.mark.parametrize(
    "msg",
    [(b"", b"", b""), (b"", b"t", b"body"), (b"s", b"", b"body"), (b"s", b"t", b"")],
)
def test_empty_sender_type_and_body(msg):
    rig = Rig(64, 1, 0)
    r = rig.open()
    assert rig.append(r, *msg) == L.OK
    assert rig.write_pos == align8(16 + sum(map(len, msg)))
    n = sum(map(len, msg))
    assert rig.pop(r, out=np.zeros(n, np.uint8)) == ok(msg)  # an out of exactly n bytes
    assert rig.pop(r, out=np.zeros(0, np.uint8)) == rig.empty()


@pytest.mark.parametrize("cap", [16, 64, 256])
def test_a_message_of_exactly_max_payload(cap):
    assert L.max_payload(cap) == cap - 16
    rig = Rig(cap, 1, 0)
    r = rig.open()
    payload = b"".join(bytes([i % 251]) for i in range(cap - 16))
    msg = (payload[:3], payload[3:5], payload[5:]) if cap > 16 else (b"", b"", b"")
    assert rig.append(r, *msg, kind=L.KIND_STR) == L.OK
    assert rig.used() == cap
    assert rig.pop(r, out=np.zeros(cap - 16, np.uint8)) == ok(msg, L.KIND_STR)


@pytest.mark.parametrize("field", [0, 1, 2])
def test_one_byte_over_max_payload_is_too_large(field):
    rig = Rig(256, 2, 0)
    r = rig.open()
    assert rig.append(r, b"x", b"y", b"z") == L.OK
    K.set_waiting(rig.mem, r, L.W_DATA | L.W_SPACE)
    msg = [b"", b"", b""]
    msg[field] = b"o" * (256 - 15)
    before = rig.mem.copy()
    assert rig.append(r, *msg) == L.TOO_LARGE  # no flags, nothing changed
    assert (rig.mem == before).all()
    msg[field] = b"o" * (256 - 16)
    assert code(rig.append(r, *msg)) == L.FULL  # fits an empty ring, just not now


# -- Readers ---------------------------------------------------------------------


def test_many_readers_with_different_lags():
    rig = Rig(512, 16, 2**62 + 512 - 16)
    readers = [rig.open() for _ in range(16)]
    assert readers == list(range(16))
    msgs = [sized(40, b"%02d" % k) for k in range(12)]  # 480 bytes in all
    for m in msgs:
        assert rig.append(readers[0], *m) == L.OK
    base = rig.write_pos - 480  # the first record went past the initial padding
    for i in readers:  # reader i has read min(i, 12) messages
        for k in range(min(i, 12)):
            assert rig.pop(i) == ok(msgs[k])
    for i in readers:
        assert rig.cursor(i) == base + 40 * min(i, 12)
    assert rig.free() == 512 - 480  # pinned by reader 0
    assert code(rig.append(5, *sized(40))) == L.FULL
    assert rig.pop(0) == ok(msgs[0])
    assert rig.free() == 72
    msgs.append(sized(40, b"12"))
    assert rig.append(5, *msgs[12]) == L.OK  # after 32 bytes of padding: exactly full
    assert rig.write_pos == base + 512 + 40 and rig.free() == 0
    assert rig.pop(1) == ok(msgs[1])  # reader 1 overtakes reader 0: nothing freed
    assert rig.free() == 0
    assert rig.leave(0) == L.OK | L.WAKE_MEMBERS  # now readers 1 and 2 pin the most
    assert rig.free() == 40 and rig.head == base + 80
    for i in readers[1:]:
        got = []
        while True:
            status, m = rig.pop(i)
            if code(status) != L.OK:
                break
            got.append(m)
        assert got == [(*m, L.KIND_BYTES) for m in msgs[min(i, 12) if i > 1 else 2 :]]
    assert rig.free() == 512


def test_a_slow_reader_pins_space_then_popping_frees_it():
    rig = Rig(128, 2, 0)
    slow, fast = rig.open(), rig.open()
    msgs = [sized(32, b"%d" % k) for k in range(6)]
    for m in msgs[:4]:
        assert rig.append(fast, *m) == L.OK
        assert rig.pop(fast) == ok(m)
    assert rig.free() == 0
    assert code(rig.append(fast, *msgs[4])) == L.FULL
    assert rig.pop(slow) == ok(msgs[0])
    assert rig.free() == 32 and rig.head == 32
    assert rig.append(fast, *msgs[4]) == L.OK
    assert code(rig.append(fast, *msgs[5])) == L.FULL
    for m in msgs[1:5]:
        assert rig.pop(slow) == ok(m)
    assert rig.free() == 128 - 32  # the fast reader has not read msgs[4]
    assert rig.pop(fast) == ok(msgs[4])
    assert rig.free() == 128 and rig.head == rig.write_pos == 160


def test_a_reader_that_closes_releases_its_unread_records_and_moves_the_head():
    rig = Rig(128, 3, 2**62 - 3 * 128 + 8)
    slow, fast, writer = rig.open(), rig.open(), rig.open(reader=False)
    first = rig.write_pos
    assert first % 128 == 8
    assert rig.append(writer, *sized(48, b"A")) == L.OK
    assert rig.append(writer, *sized(48, b"B")) == L.OK  # 24 bytes left at the end
    assert rig.pop(fast) == ok(sized(48, b"A"))
    assert rig.used() == 96 and rig.head == first
    assert code(rig.append(writer, *sized(48))) == L.FULL  # 96 + 24 of padding + 48 > 128
    assert rig.leave(slow) == L.OK | L.WAKE_MEMBERS
    assert rig.head == first + 48 and rig.used() == 48
    assert rig.append(writer, *sized(48, b"C")) == L.OK  # 48 + 24 + 48 <= 128
    assert rig.leave(fast) == L.OK | L.WAKE_MEMBERS
    assert rig.used() == 0 and rig.head == rig.write_pos
    assert rig.append(writer, *sized(128)) == L.OK  # no reader: the whole ring is free


def test_a_writer_only_slot_pins_nothing():
    rig = Rig(64, 2, 0)
    writer = rig.open(reader=False)
    for k in range(20):
        assert rig.append(writer, *sized(40, b"%d" % k)) == L.OK
    assert rig.used() == 0
    r = rig.open()
    assert rig.append(writer, *sized(64)) == L.OK
    assert code(rig.append(writer)) == L.FULL
    assert rig.pop(r) == ok(sized(64))


def test_a_writer_only_slot_cannot_pop_even_where_its_records_were_overwritten():
    """Its cursor pins nothing, so the bytes behind it may be garbage by now:
    the kernel refuses rather than read them (found by review: it used to
    return a negative body length and corrupt the heap)."""
    rig = Rig(64, 2, 0)
    a = rig.open(reader=False)
    assert rig.append(a, b"", b"A", b"." * 23) == L.OK  # positions 0..40
    b = rig.open(reader=False)  # cursor 40
    assert rig.append(b, b"", b"B", b"." * 7) == L.OK
    assert rig.append(b, b"", b"", b"\0" * 32) == L.OK  # overwrites the ring over 40
    assert rig.pop(b)[0] == L.NOT_MEMBER
    assert rig.cursor(b) == 40


def test_a_free_lock_cannot_be_stolen():
    rig = Rig(64, 2, 0)
    assert K.op_steal(rig.mem, 0, rig.new_token()) == L.BUSY
    assert rig.word(L.H_LOCK) == 0 and rig.word(L.H_RECOVERIES) == 0


def test_a_late_joiner_sees_only_later_messages():
    rig = Rig(128, 2, 128 - 8)
    early = rig.open()
    a, b, c = (b"w", b"t", b"a"), (b"w", b"t", b"b"), (b"w", b"t", b"c")
    assert rig.append(early, *a) == L.OK
    assert rig.append(early, *b) == L.OK
    late = rig.open()
    assert rig.pop(late) == rig.empty()
    assert rig.append(early, *c) == L.OK
    assert rig.pop(late) == ok(c)
    assert rig.pop(late) == rig.empty()
    assert [rig.pop(early) for _ in range(3)] == [ok(a), ok(b), ok(c)]


def test_screening_by_sender_and_by_type_compares_bytes():
    rig = Rig(256, 2, 0)
    r, w = rig.open(), rig.open(reader=False)
    msgs = [
        ("jürgen".encode(), b"x", b"1"),
        (b"alice", b"x", b"2"),
        (b"alice", "größe".encode(), b"3"),
        (b"alic", b"y", b"4"),
        (b"alice2", b"x", b"5"),
        (b"bob", b"y", b"6"),
    ]
    for m in msgs:
        assert rig.append(w, *m) == L.OK
    senders = [as_bytes("jürgen"), as_bytes(b"alice")]  # str and bytes give the same entry
    types = [as_bytes("größe"), as_bytes(b"y")]
    assert rig.pop(r, senders, types) == ok(msgs[4])  # 4 passed over: screened
    assert rig.slot(r, L.S_SCREENED) == 4 and rig.slot(r, L.S_RECEIVED) == 1
    assert rig.used() == sum(align8(16 + sum(map(len, m))) for m in msgs[5:])
    # The last one is screened too: EMPTY, but it is passed and its space freed.
    assert rig.pop(r, senders, types) == rig.empty()
    assert rig.used() == 0 and rig.slot(r, L.S_SCREENED) == 5
    assert rig.append(w, b"bob", b"z", b"7") == L.OK
    assert rig.pop(r, senders, types) == ok((b"bob", b"z", b"7"))


def test_screening_by_the_empty_name():
    rig = Rig(128, 1, 0)
    r = rig.open()
    for m in [(b"", b"t", b"1"), (b"s", b"", b"2"), (b"s", b"t", b"3")]:
        assert rig.append(r, *m) == L.OK
    assert rig.pop(r, [b""], []) == ok((b"s", b"", b"2"))
    assert rig.pop(r, [], [b""]) == ok((b"s", b"t", b"3"))


def test_need_space_with_a_small_out_then_success_with_a_big_one():
    rig = Rig(256, 2, 0)
    r, w = rig.open(), rig.open(reader=False)
    skip, big = (b"skip", b"t", b"0"), (b"sender", b"type", b"x" * 20)
    assert rig.append(w, *skip) == L.OK
    assert rig.append(w, *big, kind=L.KIND_STR) == L.OK
    small = np.zeros(29, np.uint8)
    status, rest = rig.pop(r, [b"skip"], (), out=small)
    assert status == L.NEED_SPACE and rest == (6, 4, 30, L.KIND_STR)
    assert rig.cursor(r) == 24  # past the screened record, not past the big one
    assert rig.pop(r, [b"skip"], (), out=small) == (L.NEED_SPACE, (6, 4, 30, L.KIND_STR))
    assert rig.pop(r, out=np.zeros(30, np.uint8)) == ok(big, L.KIND_STR)
    assert rig.pop(r) == rig.empty()


def test_not_member_for_a_wrong_token_a_freed_slot_or_a_bad_index():
    rig = Rig(128, 2, 0)
    r = rig.open()
    token = rig.tokens[r]
    assert rig.append(r, b"s", b"t", b"b") == L.OK
    before = rig.mem.copy()
    not_member = (L.NOT_MEMBER, (0, 0, 0, 0))
    for slot, tok in [(r, token + 1), (1, token), (-1, token), (2, token), (10**6, token)]:
        assert rig.pop(slot, token=tok) == not_member
        assert rig.append(slot, b"s", token=tok) == L.NOT_MEMBER
    assert (rig.mem == before).all()
    assert rig.leave(r, token=token + 1) == L.NOT_MEMBER | L.WAKE_MEMBERS
    assert K.members(rig.mem).tolist() == [[r, token, 1]]
    assert rig.leave(r) == L.OK | L.WAKE_MEMBERS | L.UNLINK
    assert rig.pop(r, token=token) == not_member
    assert rig.append(r, token=token) == L.NOT_MEMBER
    assert rig.leave(r, token=token) == L.NOT_MEMBER | L.WAKE_MEMBERS
    again = rig.open()
    assert again == r and rig.tokens[r] != token
    assert rig.pop(r, token=token) == not_member  # the old token does not own it


def test_no_slot_when_all_slots_are_taken():
    rig = Rig(64, 3, 0)
    assert [rig.open(), rig.open(reader=False), rig.open()] == [0, 1, 2]
    assert rig.open() == -1
    assert K.op_open(rig.mem, rig.new_token(), 1, b"n") == (L.NO_SLOT, -1)
    assert rig.word(L.H_LOCK) == 0
    assert rig.leave(1) == L.OK | L.WAKE_MEMBERS
    assert rig.open() == 1  # the lowest free slot
    assert rig.open() == -1


def test_unlink_exactly_once_when_the_last_member_leaves():
    creator = 99 << L.PID_BITS | 7
    rig = Rig(64, 2, 0, creator=creator)
    assert K.members(rig.mem).tolist() == [[-1, creator, 0]]
    a, b = rig.open(), rig.open(reader=False)
    rows = [[-1, creator, 0], [a, rig.tokens[a], 1], [b, rig.tokens[b], 0]]
    assert K.members(rig.mem).tolist() == rows
    assert rig.leave(a) == L.OK | L.WAKE_MEMBERS
    assert rig.leave(-1, token=creator + 1, creator=True) == L.OK | L.WAKE_MEMBERS  # not its hold
    assert rig.leave(-1, token=creator, creator=True) == L.OK | L.WAKE_MEMBERS
    assert K.members(rig.mem).tolist() == [[b, rig.tokens[b], 0]]
    assert rig.leave(b) == L.OK | L.WAKE_MEMBERS | L.UNLINK
    assert rig.word(L.H_FLAGS) & L.F_UNLINKED
    assert rig.leave(-1, token=creator, creator=True) == L.OK | L.WAKE_MEMBERS
    assert rig.leave(b) == L.NOT_MEMBER | L.WAKE_MEMBERS
    assert K.op_open(rig.mem, rig.new_token(), 1, b"n") == (L.NOT_MEMBER, -1)  # cannot be joined
    assert rig.word(L.H_LOCK) == 0


def test_unlink_when_the_creator_leaves_last():
    creator = 5 << L.PID_BITS | 1
    rig = Rig(64, 2, 0, creator=creator)
    r = rig.open()
    assert rig.leave(r) == L.OK | L.WAKE_MEMBERS
    status = K.op_leave(rig.mem, creator, -1, creator, True)
    assert status == L.OK | L.WAKE_MEMBERS | L.UNLINK
    assert K.members(rig.mem).tolist() == []
    assert rig.word(L.H_REAPED) == 0


# -- Status words and wake-up flags ----------------------------------------------


def test_full_carries_the_space_sequence():
    rig = Rig(64, 2, 0)
    slow, fast = rig.open(), rig.open()
    assert rig.append(fast, *sized(32, b"A")) == L.OK
    assert rig.append(fast, *sized(32, b"B")) == L.OK
    seq = rig.word(L.H_SPACE_SEQ)
    status = rig.append(fast)
    assert code(status) == L.FULL and status & FLAGS == 0
    assert status >> L.SEQ_SHIFT == seq & SEQ32
    assert rig.pop(fast) == ok(sized(32, b"A"))  # head does not move: same sequence
    assert rig.append(fast) == L.FULL | (seq & SEQ32) << L.SEQ_SHIFT
    assert rig.pop(slow) == ok(sized(32, b"A"))  # head moves: the sequence is bumped
    assert rig.word(L.H_SPACE_SEQ) == seq + 1
    assert rig.append(fast, *sized(40)) == L.FULL | ((seq + 1) & SEQ32) << L.SEQ_SHIFT
    rig.w[L.H_SPACE_SEQ] = (3 << 32) + 7  # only the low 32 bits are carried
    assert rig.append(fast, *sized(40)) == L.FULL | 7 << L.SEQ_SHIFT


def test_empty_carries_the_data_sequence():
    rig = Rig(256, 2, 0)
    r = rig.open()
    assert rig.pop(r) == (L.EMPTY, (0, 0, 0, 0))
    for k in range(5):
        assert rig.append(r, b"", b"", b"%d" % k) == L.OK
    assert rig.word(L.H_DATA_SEQ) == 5
    for k in range(5):
        assert rig.pop(r) == ok((b"", b"", b"%d" % k))
    assert rig.pop(r) == (L.EMPTY, (0, 0, 5, 0))
    rig.w[L.H_DATA_SEQ] = SEQ32
    assert rig.append(r, b"me") == L.OK
    assert rig.pop(r, [b"me"]) == (L.EMPTY, (0, 0, 0, 0))  # 2**32 & SEQ32


def test_wake_data_only_when_some_slot_waits_for_data():
    rig = Rig(256, 3, 0)
    r, other, writer = rig.open(), rig.open(), rig.open(reader=False)
    assert rig.append(writer, b"1") == L.OK
    K.set_waiting(rig.mem, other, L.W_SPACE)
    assert rig.append(writer, b"2") == L.OK
    K.set_waiting(rig.mem, other, L.W_DATA)
    assert rig.append(writer, b"3") == L.OK | L.WAKE_DATA
    assert rig.pop(r)[0] == L.OK  # a pop wakes no reader
    status = rig.append(writer, *sized(256))
    assert code(status) == L.FULL and status & FLAGS == 0  # nor does a FULL append
    K.set_waiting(rig.mem, other, 0)
    K.set_waiting(rig.mem, writer, L.W_DATA | L.W_SPACE)  # a writer-only slot may wait too
    assert rig.append(writer, b"4") == L.OK | L.WAKE_DATA
    assert rig.leave(writer) == L.OK | L.WAKE_MEMBERS
    assert rig.append(r, b"5") == L.OK  # its wait bits went with it


def test_wake_space_only_when_the_head_moves_and_some_slot_waits_for_space():
    rig = Rig(256, 4, 0)
    slow, fast, writer = rig.open(), rig.open(), rig.open(reader=False)
    for k in range(4):
        assert rig.append(writer, b"%d" % k) == L.OK
    K.set_waiting(rig.mem, writer, L.W_SPACE)
    seq = rig.word(L.H_SPACE_SEQ)
    assert rig.pop(fast)[0] == L.OK  # the head stays with the slow reader
    assert rig.word(L.H_SPACE_SEQ) == seq
    assert rig.pop(slow)[0] == L.OK | L.WAKE_SPACE
    assert rig.word(L.H_SPACE_SEQ) == seq + 1 and rig.head == 24
    assert rig.pop(slow)[0] == L.OK  # now ahead of the fast one: no move
    assert rig.pop(fast)[0] == L.OK | L.WAKE_SPACE
    K.set_waiting(rig.mem, writer, L.W_DATA)
    assert rig.pop(fast)[0] == L.OK  # ahead again
    assert rig.pop(slow)[0] == L.OK  # head moves, nobody waits for space
    assert rig.word(L.H_SPACE_SEQ) == seq + 3
    assert rig.pop(fast)[0] == L.OK  # ahead again, at the end
    assert rig.pop(fast) == rig.empty()  # nothing passed: no move
    K.set_waiting(rig.mem, writer, 0)
    K.set_waiting(rig.mem, fast, L.W_SPACE)
    assert rig.leave(slow) == L.OK | L.WAKE_MEMBERS | L.WAKE_SPACE  # the head goes to fast
    assert rig.head == rig.cursor(fast) == 96
    assert rig.append(writer, b"4") == L.OK
    assert rig.leave(fast) == L.OK | L.WAKE_MEMBERS  # the head moves, but the only waiter
    assert rig.head == rig.write_pos == 120  # was the slot that left


# -- The lock ----------------------------------------------------------------------


def _ops(rig, lockval, slot, token):
    """Every op_* kernel that takes the lock once, returning their statuses."""
    return [
        K.op_append(rig.mem, lockval, slot, b"s", b"t", b"b", L.KIND_BYTES),
        K.op_open(rig.mem, lockval, 1, b"n"),
        K.op_leave(rig.mem, lockval, slot, token, False),
    ]


@pytest.mark.parametrize("contended", [False, True])
def test_op_kernels_are_busy_and_change_nothing_while_the_lock_is_held(contended):
    rig = Rig(128, 2, 0)
    r = rig.open()
    token = rig.tokens[r]
    assert rig.append(r, b"x") == L.OK
    holder = rig.new_token() | (L.CONTENDED if contended else 0)
    rig.w[L.H_LOCK] = holder
    before = rig.mem.copy()
    assert _ops(rig, token, r, token) == [L.BUSY, (L.BUSY, -1), L.BUSY]
    assert (rig.mem == before).all()
    # A pop does not take the lock: it reads while the holder holds it.
    status, slen, tlen, blen, kind = K.op_pop(rig.mem, token, r, NO_SCREEN, rig.out, 0)
    n = slen + tlen + blen
    assert (status, n, bytes(rig.out[:n])) == (L.OK, 1, b"x")
    assert rig.word(L.H_LOCK) == holder
    rig.w[L.H_LOCK] = token  # even its own token: the lock is not reentrant
    assert K.op_append(rig.mem, token, r, b"", b"", b"", 1) == L.BUSY


@pytest.mark.parametrize("contended", [False, True])
def test_op_kernels_take_and_release_the_lock(contended):
    rig = Rig(128, 2, 0)
    r = rig.open()
    token = rig.tokens[r]
    lockval = token | (L.CONTENDED if contended else 0)
    wake = L.WAKE_LOCK if contended else 0
    seq = rig.word(L.H_LOCK_SEQ)
    assert woken(K.op_append(rig.mem, lockval, r, b"s", b"t", b"b", L.KIND_BYTES)) == L.OK | wake
    status, slen, tlen, blen, kind = woken(K.op_pop(rig.mem, lockval, r, NO_SCREEN, rig.out, 0))
    assert (status, slen, tlen, blen, kind & 0xFF) == (L.OK, 1, 1, 1, L.KIND_BYTES)  # no lock
    assert kind >> 8 == r + 1  # the writer's slot + 1
    assert K.op_open(rig.mem, lockval, 0, b"n") == (L.OK | L.WAKE_MEMBERS | wake, 1)
    assert rig.slot(1, L.S_TOKEN) == token  # the token, without the CONTENDED bit
    assert K.op_leave(rig.mem, lockval, 1, token, False) == L.OK | L.WAKE_MEMBERS | wake
    assert rig.word(L.H_REAPED) == 0
    other = rig.new_token()
    assert K.op_leave(rig.mem, other | (lockval & L.CONTENDED), r, token, False) == (
        L.OK | L.WAKE_MEMBERS | L.UNLINK | wake  # a reap of someone else's slot
    )
    assert rig.word(L.H_REAPED) == 1
    assert rig.word(L.H_LOCK) == 0
    assert rig.word(L.H_LOCK_SEQ) == seq + (4 if contended else 0)


def test_lock_prepare_wait_marks_a_held_lock_contended():
    rig = Rig(64, 1, 0)
    rig.w[L.H_LOCK_SEQ] = (1 << 32) + 3
    assert K.lock_prepare_wait(rig.mem) == (3, 0)  # free: do not sleep
    assert rig.word(L.H_LOCK) == 0
    holder = rig.new_token()
    rig.w[L.H_LOCK] = holder
    assert K.lock_prepare_wait(rig.mem) == (3, holder)
    assert rig.word(L.H_LOCK) == holder | L.CONTENDED
    assert K.lock_prepare_wait(rig.mem) == (3, holder)
    assert rig.word(L.H_LOCK) == holder | L.CONTENDED


@pytest.mark.parametrize("contended", [False, True])
def test_op_steal_takes_the_lock_of_a_dead_holder_and_recovers(contended):
    rig = Rig(128, 2, 0)
    r = rig.open()
    for k in range(3):
        assert rig.append(r, b"%d" % k) == L.OK
    assert rig.pop(r)[0] == L.OK
    rig.w[L.H_HEAD] = 0  # the dead holder may have left the head behind
    dead, me = rig.new_token(), rig.new_token()
    rig.w[L.H_LOCK] = dead | (L.CONTENDED if contended else 0)
    data, space, lock = (rig.word(i) for i in (L.H_DATA_SEQ, L.H_SPACE_SEQ, L.H_LOCK_SEQ))
    assert K.op_steal(rig.mem, me, me) == L.BUSY  # `me` does not hold it
    status = K.op_steal(rig.mem, dead, me)
    assert status == L.OK | L.WAKE_DATA | L.WAKE_SPACE | L.WAKE_MEMBERS | (
        L.WAKE_LOCK if contended else 0
    )
    assert rig.word(L.H_LOCK) == 0 and rig.word(L.H_RECOVERIES) == 1
    assert rig.head == rig.cursor(r) == 24
    assert rig.word(L.H_DATA_SEQ) == data + 1 and rig.word(L.H_SPACE_SEQ) >= space + 1
    assert rig.word(L.H_LOCK_SEQ) == lock + (1 if contended else 0)
    assert K.op_steal(rig.mem, dead, me) == L.BUSY  # already taken over
    assert K.op_append(rig.mem, me, r, b"", b"", b"", L.KIND_BYTES) == L.NOT_MEMBER
    assert K.op_append(rig.mem, rig.tokens[r], r, b"x", b"", b"", L.KIND_BYTES) == L.OK
    assert [rig.pop(r)[1][0] for _ in range(3)] == [b"1", b"2", b"x"]
    assert rig.pop(r) == rig.empty()


# -- The reference model, side by side ---------------------------------------------


class Pair:
    """A Rig and a RingModel driven together; every step checks that they agree."""

    def __init__(self, cap, nslots, start, creator=0, fill=0):
        self.rig = Rig(cap, nslots, start, creator, fill)
        self.model = RingModel(cap, nslots, start, creator)
        self.start = start
        self.extra_data_seq = 0  # bumps of H_DATA_SEQ by recoveries
        self.reaped = 0
        self.full = None  # (space seq, min cursor) of the last FULL until space is freed
        self.check()

    def active(self, reader=None):
        return [
            i
            for i, s in enumerate(self.model.slots)
            if s is not None and (reader is None or s.reader == reader)
        ]

    def _lockval(self, token, contended):
        return token | (L.CONTENDED if contended else 0)

    def _step(self, status, before, via_op, contended, freed=None):
        """Checks common to every step: the head, the space sequence, WAKE_SPACE,
        the lock, then all the invariants.

        ``freed`` is given for a pop without the lock (op_pop): whether it
        moved its cursor while a writer waited for space.  Such a pop leaves
        the head alone (writers refresh it) but bumps the space sequence and
        asks for the wake-ups as a head that moved would."""
        w = self.rig.w
        head0, seq0, lockseq0, space = before
        # A slot that left in this step no longer counts (its bits go with it).
        space = [bits for i, bits in space.items() if self.model.slots[i] is not None]
        head, seq = int(w[L.H_HEAD]), int(w[L.H_SPACE_SEQ])
        assert head >= head0
        if freed is None:
            moved = head > head0
        else:
            assert head == head0
            moved = freed
        assert (seq != seq0) == moved
        assert bool(status & L.WAKE_SPACE) == (moved and bool(space))
        # ... and an asyncio loop among them is named, for _wait.wake to signal.
        assert bool(status & L.WAKE_ASYNC_SPACE) == (
            moved and any(bits & L.W_ASYNC for bits in space)
        )
        if self.full is not None and self.model.min_cursor() > self.full[1]:
            # A pop without the lock bumps the sequence only for a writer that
            # raised its W_SPACE bit (which writers do before they sleep).
            if freed is None or space:
                assert seq & SEQ32 != self.full[0], "space was freed after FULL without a wake-up"
            self.full = None
        woke = via_op and contended and freed is None
        assert bool(status & L.WAKE_LOCK) == woke
        assert int(w[L.H_LOCK_SEQ]) == lockseq0 + woke
        self.check()

    def _before(self):
        w = self.rig.w
        # The sleepers the kernel will see: a pop through op_pop sets its own
        # wait bits only after the ring kernel's wake-ups were decided.
        slots = enumerate(self.model.slots)
        space = {i: s.wait for i, s in slots if s is not None and s.wait & L.W_SPACE}
        return int(w[L.H_HEAD]), int(w[L.H_SPACE_SEQ]), int(w[L.H_LOCK_SEQ]), space

    def open(self, reader, via_op=False, contended=False):
        rig, before = self.rig, self._before()
        token = rig.new_token()
        if via_op:
            status, slot = K.op_open(rig.mem, self._lockval(token, contended), int(reader), b"n")
        else:
            status, slot = None, K.slot_open(rig.w, token, int(reader))
        if via_op and self.model.unlinked:
            assert (code(status), slot) == (L.NOT_MEMBER, -1)
        else:
            assert slot == self.model.open(token, reader)
            if via_op:
                assert code(status) == (L.OK if slot >= 0 else L.NO_SLOT)
                assert bool(status & L.WAKE_MEMBERS) == (slot >= 0)
        if slot >= 0:
            rig.tokens[slot] = token
        if via_op:
            assert status & ~(L.CODE_MASK | L.WAKE_MEMBERS | L.WAKE_LOCK) == 0
        self._step(status or 0, before, via_op, contended)
        return slot

    def leave(self, slot, token, creator=False, via_op=False, contended=False, reaper=None):
        rig, before = self.rig, self._before()
        if via_op:
            lockval = self._lockval(token if reaper is None else reaper, contended)
            status = K.op_leave(rig.mem, lockval, slot, token, creator)
        else:
            status = K.slot_leave(rig.w, slot, token, creator)
        expected, unlink = self.model.leave(slot, token, creator)
        assert code(status) == expected
        assert status & L.UNLINK == (L.UNLINK if unlink else 0)
        assert status & L.WAKE_MEMBERS and not status & L.WAKE_DATA
        assert status >> L.SEQ_SHIFT == 0
        if via_op and reaper not in (None, token) and expected == L.OK:
            self.reaped += 1
        self._step(status, before, via_op, contended)
        return status

    def append(
        self, slot, token, sender, mtype, body, kind, via_op=False, contended=False, skip=False
    ):
        rig, before = self.rig, self._before()
        mem0 = rig.mem.copy()
        flagged = kind | (L.APPEND_SKIP if skip else 0)
        if via_op:
            lockval = self._lockval(token, contended)
            status = woken(K.op_append(rig.mem, lockval, slot, sender, mtype, body, flagged))
        else:
            status = oracles.ring_append(rig.w, rig.mem, slot, token, sender, mtype, body, flagged)
        expected = self.model.append(slot, token, sender, mtype, body, kind, skip)
        assert code(status) == expected
        assert not status & (L.WAKE_MEMBERS | L.UNLINK)
        if expected == L.FULL:
            seq = status >> L.SEQ_SHIFT
            # Read before the head was refreshed: one behind if that moved it.
            refreshed = rig.head > before[0]
            assert seq == (int(rig.w[L.H_SPACE_SEQ]) - refreshed) & SEQ32
            assert rig.head == self.model.min_cursor()  # so the next move of it wakes us
            self.full = (seq, self.model.min_cursor())
        else:
            assert status >> L.SEQ_SHIFT == 0
        want_data = expected == L.OK and self.model.any_waiting(L.W_DATA)
        assert bool(status & L.WAKE_DATA) == want_data
        want_async = want_data and any(
            s is not None and s.wait & L.W_DATA and s.wait & L.W_ASYNC for s in self.model.slots
        )
        assert bool(status & L.WAKE_ASYNC_DATA) == want_async
        if expected != L.OK:  # nothing changed but the derived words
            changed = np.flatnonzero(mem0.view(np.int64) != rig.w)
            assert set(changed.tolist()) <= set(DERIVED), changed
        self._step(status, before, via_op, contended)
        return status

    def pop(
        self, slot, token, senders=(), types=(), room=None, via_op=False, contended=False, waits=0
    ):
        """``waits``: op_pop's wait bits (low byte after a record, next byte
        after EMPTY or PENDING)."""
        rig, before = self.rig, self._before()
        out = rig.out if room is None else np.zeros(room, np.uint8)
        scr = screen_table(list(senders), list(types))
        cursor0 = rig.cursor(slot)
        if via_op:
            lockval = self._lockval(token, contended)
            result = woken(K.op_pop(rig.mem, lockval, slot, scr, out, waits))
        else:
            result = oracles.ring_pop(rig.w, rig.mem, slot, token, scr, out)
        status, slen, tlen, blen, kind = result
        expected, value = self.model.pop(slot, token, senders, types, room)
        if via_op and expected in (L.OK, L.EMPTY, L.PENDING):
            self.model.set_waiting(slot, waits & 0xFF if expected == L.OK else waits >> 8)
        assert code(status) == expected
        if expected == L.OK:
            raw = bytes(out[: slen + tlen + blen])
            got = (raw[:slen], raw[slen : slen + tlen], raw[slen + tlen :], kind & 0xFF)
            assert got == value
            assert 0 <= (kind >> 8) - 1 < len(self.model.slots)  # the slot that wrote it
        elif expected == L.EMPTY:
            data_seq = (self.model.appends + self.extra_data_seq) & SEQ32
            assert (slen, tlen, blen, kind) == (0, 0, data_seq, 0)
        elif expected == L.NEED_SPACE:
            assert blen == value > room  # n in place of the body length
        else:
            assert (slen, tlen, blen, kind) == (0, 0, 0, 0)
        assert status & ~(L.CODE_MASK | L.WAKE_SPACE | L.WAKE_ASYNC_SPACE | L.WAKE_LOCK) == 0
        freed = None
        if via_op:
            freed = rig.cursor(slot) != cursor0 and bool(before[3])
        self._step(status, before, via_op, contended, freed)
        return expected, value

    def set_waiting(self, slot, bits):
        K.set_waiting(self.rig.mem, slot, bits)
        self.model.set_waiting(slot, bits)
        self.check()

    def check(self):
        """The raw header and table agree with the model; the invariants hold."""
        rig, model, w = self.rig, self.model, self.rig.w
        pos, head = rig.write_pos, rig.head
        assert pos == model.write_pos
        assert [tuple(row) for row in K.members(rig.mem).tolist()] == model.members()
        for i, s in enumerate(model.slots):
            if s is None:
                assert rig.slot(i, L.S_STATE) == L.SLOT_FREE
                continue
            assert rig.slot(i, L.S_STATE) == L.SLOT_ACTIVE
            assert rig.slot(i, L.S_TOKEN) == s.token
            assert rig.slot(i, L.S_FLAGS) == (L.SF_READER if s.reader else 0)
            assert rig.slot(i, L.S_WAIT) == s.wait
            counts = (rig.slot(i, f) for f in (L.S_SENT, L.S_RECEIVED, L.S_SCREENED))
            assert tuple(counts) == (s.sent, s.received, s.screened)
            assert self.start <= rig.cursor(i) <= pos
            if s.reader:
                assert rig.cursor(i) == s.cursor  # so each reader's lag is the model's
                assert head <= s.cursor
        assert self.start <= head <= model.min_cursor()
        assert rig.used() == model.used() <= rig.cap
        assert rig.free() == model.free()
        assert L.appends_count(int(w[L.H_APPENDS])) == model.appends
        # H_WAITERS counts the slots with wait bits (0: nobody to wake).
        assert int(w[L.H_WAITERS]) == sum(1 for s in model.slots if s is not None and s.wait)
        assert int(w[L.H_DATA_SEQ]) == model.appends + self.extra_data_seq
        assert int(w[L.H_REAPED]) == self.reaped
        assert bool(w[L.H_FLAGS] & L.F_UNLINKED) == model.unlinked
        assert int(w[L.H_LOCK]) == 0
        # What no reader has passed is in the ring, byte for byte, as the model has it.
        unread = [(e.pos, e.size, e.msg) for e in model.unread()]
        assert walk(rig, model.min_cursor(), pos) == unread


NAMES = [b"", b"a", b"bob", "jürgen".encode()]
TYPES = [b"", b"t", b"type-2", b"\x00\xff"]
#: Ring capacities; Hypothesis favours the first, so a middling one comes first.
CAPS = [128, 64, 256, 72, 200, 512, 40]
CREATOR = (77 << L.PID_BITS) | 77


def body_of(n, k):
    """``n`` bytes, different for each ``k``."""
    return (b"%d|" % k * (n // 2 + 1))[:n]


class RingMachine(RuleBasedStateMachine):
    """Random appends, pops and membership changes on kernels and model alike.

    Three rules only: Hypothesis runs each example with a random subset of the
    rules enabled, and with few rules most examples both append and pop.
    """

    @initialize(
        cap=st.sampled_from(CAPS),
        which=st.integers(0, 4),
        nslots=st.integers(1, 5),
        creator=st.booleans(),
        fill=st.sampled_from([0, 0xAB]),
    )
    def setup(self, cap, which, nslots, creator, fill):
        self.cap, self.nslots = cap, nslots
        self.p = Pair(cap, nslots, starts(cap)[which], CREATOR if creator else 0, fill)
        self.old_tokens = [1]  # tokens that own no slot
        self.n = 0
        for reader in (True, True, False)[:nslots]:
            self.p.open(reader)

    def pick(self, data, reader=None):
        """A slot and its owner's token; now and then a slot (or a bad index) and a
        token that does not own it.  None if there is no such slot."""
        if data.draw(st.integers(0, 15)) == 0 or not self.p.active(reader):
            slot = data.draw(st.integers(-1, self.nslots))
            token = data.draw(st.sampled_from(self.old_tokens))
            return (slot, token) if not self.p.model.member(slot, token) else None
        slot = data.draw(st.sampled_from(self.p.active(reader)))
        return slot, self.p.rig.tokens[slot]

    @rule(
        data=st.data(),
        sender=st.sampled_from(NAMES),
        mtype=st.sampled_from(TYPES),
        kind=st.sampled_from([L.KIND_STR, L.KIND_BYTES]),
        count=st.integers(1, 4),
        via_op=st.booleans(),
        contended=st.booleans(),
        skip=st.booleans(),
    )
    def append(self, data, sender, mtype, kind, count, via_op, contended, skip):
        """``count`` messages from one slot; a few are one byte too large.
        ``skip``: the appender screens them itself (``APPEND_SKIP``)."""
        picked = self.pick(data)
        limit = max(0, self.cap - 16 - len(sender) - len(mtype))  # the largest body
        sizes = st.integers(0, self.cap // 3) | st.integers(0, limit + 1)
        for _ in range(count if picked else 0):
            n = data.draw(sizes)
            self.n += 1
            body = body_of(n, self.n)
            self.p.append(*picked, sender, mtype, body, kind, via_op, contended, skip)

    @rule(
        data=st.data(),
        senders=st.lists(st.sampled_from(NAMES), max_size=2, unique=True),
        types=st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
        small=st.booleans(),
        drain=st.booleans(),
        via_op=st.booleans(),
        contended=st.booleans(),
        idle=st.integers(0, 7),
        block=st.booleans(),
    )
    def pop(self, data, senders, types, small, drain, via_op, contended, idle, block):
        """One pop by a reader (into an ``out`` of 0..40 bytes if ``small``), or
        pops until it is not OK if ``drain``; through op_pop, with wait bits
        ``idle`` (and W_DATA for a ``block``ing pop that finds nothing)."""
        picked = self.pick(data, reader=True)
        room = data.draw(st.integers(0, 40)) if small else None
        waits = idle | ((idle | (L.W_DATA if block else 0)) << 8)
        while picked:
            code_, _ = self.p.pop(*picked, senders, types, room, via_op, contended, waits)
            if code_ != L.OK or not drain:
                break

    @rule(
        data=st.data(),
        action=st.sampled_from(["open", "close", "wait", "creator leaves"]),
        reader=st.booleans(),
        via_op=st.booleans(),
        contended=st.booleans(),
        reap=st.booleans(),
    )
    def churn(self, data, action, reader, via_op, contended, reap):
        """Open a slot, close (or reap) one, set a slot's wait bits, or drop the
        creator's hold."""
        if action == "open":
            self.p.open(reader, via_op, contended)
        elif action == "close" and (picked := self.pick(data)):
            slot, token = picked
            if self.p.model.member(slot, token):
                self.old_tokens.append(token)
            reaper = self.p.rig.new_token() if reap else None
            self.p.leave(slot, token, via_op=via_op, contended=contended, reaper=reaper)
        elif action == "wait" and self.p.active():
            slot = data.draw(st.sampled_from(self.p.active()))
            self.p.set_waiting(slot, data.draw(st.integers(0, 3)))
        elif action == "creator leaves":
            self.p.leave(-1, CREATOR, creator=True)


RingMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRingAgainstModel = RingMachine.TestCase


# -- A writer that died mid-append --------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cap=st.sampled_from(CAPS[:6]),
    which=st.integers(0, 4),
    before=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 200)), max_size=25),
    pending=st.integers(0, 512),
    after_padding=st.booleans(),
    moved=st.integers(0, 3),
    garbage=st.binary(min_size=1, max_size=64),
    contended=st.booleans(),
    after=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 200)), max_size=25),
)
def test_a_writer_dying_mid_append_leaves_readers_the_committed_records(
    cap, which, before, pending, after_padding, moved, garbage, contended, after
):
    p = Pair(cap, 4, starts(cap)[which])
    rig, model = p.rig, p.model
    slots = [p.open(True), p.open(True), p.open(False)]
    dead = rig.new_token()

    def run(ops, k0):
        """(0|1, n): that reader pops; (2, n): the writer appends n body bytes."""
        for k, (who, n) in enumerate(ops):
            s = slots[who]
            if who == 2:
                p.append(s, rig.tokens[s], b"w", b"t", body_of(n % cap, k0 + k), L.KIND_BYTES)
            else:
                p.pop(s, rig.tokens[s])

    run(before, 0)
    # The dying writer (slot 2) wanted to append `size` bytes.  It may have got as
    # far as publishing the padding and moving the first `moved` slots past it.
    pos, m = model.write_pos, model.min_cursor()
    room = cap - pos % cap
    size = min(cap, room + 8 + pending % cap // 8 * 8)  # one that needs padding
    if after_padding and (m == pos or pos + room + size - m <= cap):
        if room >= L.REC_HEADER:
            at = (rig.off + pos % cap) // 8
            rig.w[at], rig.w[at + 1] = room, L.KIND_PAD << 32
        rig.w[L.H_WRITE_POS] = pos + room
        at_pos = [i for i in p.active() if rig.cursor(i) == pos][:moved]
        for i in at_pos:
            rig.w[K.slot_word(i, L.S_CURSOR)] = pos + room
        model.add_padding(moved=[model.slots[i] for i in at_pos])
    # It wrote garbage over any of the bytes no reader needs, then died holding the lock.
    pos, m = model.write_pos, model.min_cursor()
    for k, q in enumerate(range(pos, m + cap)):
        rig.mem[rig.off + q % cap] = garbage[k % len(garbage)]
    rig.w[L.H_LOCK] = dead | (L.CONTENDED if contended else 0)
    s = slots[0]
    assert K.op_append(rig.mem, rig.tokens[s], s, b"", b"", b"", L.KIND_BYTES) == L.BUSY
    status = K.op_steal(rig.mem, dead, rig.tokens[s])
    assert code(status) == L.OK and status & L.WAKE_DATA and status & L.WAKE_SPACE
    assert bool(status & L.WAKE_LOCK) == contended
    assert rig.head == model.min_cursor()
    p.extra_data_seq += 1
    p.full = None
    p.check()  # includes: the unread ring bytes decode to the committed records
    for s in slots[:2]:  # each reader gets exactly what was committed after it opened
        while p.pop(s, rig.tokens[s])[0] == L.OK:
            pass
    run(after, len(before))  # and the queue goes on over the garbage


def test_an_appender_that_screens_its_own_message_does_not_pin_it():
    """APPEND_SKIP: a writer that has read everything moves past the record it
    appends (counted as screened); one that is behind stays where it is."""
    rig = Rig(256, 2, 0)
    a, b = rig.open(), rig.open()
    assert rig.append(a, b"a", b"t", b"x" * 8, L.KIND_BYTES | L.APPEND_SKIP) == L.OK
    assert rig.cursor(a) == rig.write_pos == 32 and rig.cursor(b) == 0
    assert rig.slot(a, L.S_SCREENED) == 1
    assert rig.pop(b) == ok((b"a", b"t", b"x" * 8))
    assert rig.used() == 0  # nobody pins it any more
    assert rig.append(b, b"b", b"t", b"y", L.KIND_BYTES) == L.OK  # a is now behind
    assert rig.append(a, b"a", b"t", b"x", L.KIND_BYTES | L.APPEND_SKIP) == L.OK
    assert rig.cursor(a) == 32 and rig.slot(a, L.S_SCREENED) == 1
    w = rig.mem.view(np.int64)
    at = rig.off // 8
    assert (int(w[at + 1]) >> 32) & 0xFF == L.KIND_BYTES  # the flag is not stored


#: The words an append's count and publication store, in the order that
#: ``layout.H_APPEND_JOURNAL`` gives (``kernels.count_and_publish``); the
#: writer's S_SENT is the second (``None`` here: a slot word).
APPEND_STORES = (L.H_APPEND_JOURNAL, None, L.H_APPENDS, L.H_WRITE_POS)


@pytest.mark.parametrize("landed", range(len(APPEND_STORES) + 1))
def test_a_holder_killed_inside_an_append_leaves_count_and_records_agreeing(landed):
    """Issue 17 item 7: a lock holder killed between an append's stores (only
    the first ``landed`` of them reached memory) leaves, once its lock is
    taken over, an append count that agrees with the records published:
    every reader passes exactly appended - base messages and holds none.
    (Counted after the write position, as before, a kill between the two
    left the count one low for good.)"""
    rig = Rig(256, 3, 0)
    r = rig.open()
    wr = rig.open(reader=False)
    assert rig.append(wr, b"w", b"t", b"first") == L.OK
    before = rig.w.copy()
    assert rig.append(wr, b"w", b"t", b"second") == L.OK
    after = rig.w.copy()
    # The record's bytes were complete before its first counted store; of
    # the header and slot words, only the first `landed` stores happened.
    ring = slice(rig.off // 8, None)
    cut = before.copy()
    cut[ring] = after[ring]
    for word in APPEND_STORES[:landed]:
        at = K.slot_word(wr, L.S_SENT) if word is None else word
        cut[at] = after[at]
    rig.w[:] = cut
    dead, me = rig.new_token(), rig.new_token()
    rig.w[L.H_LOCK] = dead
    K.op_steal(rig.mem, dead, me)
    assert rig.word(L.H_LOCK) == 0
    got = []
    while (m := rig.pop(r))[0] == L.OK:
        got.append(m[1][2])
    assert m == rig.empty()
    appended = L.appends_count(rig.word(L.H_APPENDS))
    assert got == [b"first", b"second"][:appended]  # the count is what was published
    counted = appended - rig.slot(r, L.S_BASE)
    assert counted == rig.slot(r, L.S_RECEIVED) + rig.slot(r, L.S_SCREENED) == len(got)
    assert appended == (2 if landed >= 3 else 1)  # counted: it is published too
    # The queue goes on, counting exactly.
    assert rig.append(wr, b"w", b"t", b"third") == L.OK
    assert rig.pop(r)[1][2] == b"third"
    assert L.appends_count(rig.word(L.H_APPENDS)) == appended + 1
    assert rig.slot(r, L.S_RECEIVED) == len(got) + 1
