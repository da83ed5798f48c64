"""A plain-Python reference model of the pysyncq ring, for the kernel tests.

The model knows nothing of bytes in memory.  It keeps the ring as a list of
*entries* that tile the positions from the oldest one still needed up to the
write position:

* a message entry ``(sender, mtype, body, kind)`` that takes
  ``align8(16 + len(sender) + len(mtype) + len(body))`` positions;
* a padding entry (``msg is None``): the rest of the ring, skipped by every
  reader, put in front of a message that would otherwise cross the ring end.

Positions are plain ints that only grow, from ``start``; the ring offset of a
position ``p`` is ``p % cap``.

Every slot has a *cursor*: the position just after the last entry it has
passed (a padding entry counts as an entry: a reader passes it on its way to
the next message).  A reader opens at the write position, so it sees only what
is appended later.  A pop passes padding and screened messages and returns the
next other message; if none is left it passes everything and reports EMPTY.

The smallest reader cursor ``m`` (the write position when there is no reader)
decides whether an append fits: the ring holds ``write_pos - m`` bytes that some
reader has not passed, and a new message, with its padding, must fit in the
rest.  When every reader has passed everything (``m == write_pos``), readers
at the write position are moved past a padding entry as it is added, so the
message only has to fit in the ring.

Status codes are the kernels' (``pysyncq.layout``); the ``WAKE_*`` bits and the
sequence numbers carried in a status are checked by the tests, not modelled.
"""

from dataclasses import dataclass

from pysyncq.layout import EMPTY, FULL, NEED_SPACE, NOT_MEMBER, OK, TOO_LARGE

HEADER = 16  # bytes in front of each message


def align8(n):
    return (n + 7) // 8 * 8


def message_size(sender, mtype, body):
    """Positions a message takes in the ring."""
    return align8(HEADER + len(sender) + len(mtype) + len(body))


@dataclass
class Entry:
    pos: int
    size: int
    msg: tuple | None  # (sender, mtype, body, kind); None for padding

    @property
    def end(self):
        return self.pos + self.size


@dataclass
class Slot:
    token: int
    reader: bool
    cursor: int
    wait: int = 0  # W_DATA / W_SPACE bits
    sent: int = 0
    received: int = 0
    screened: int = 0


class RingModel:
    def __init__(self, cap, nslots, start=0, creator=0):
        self.cap = cap
        self.write_pos = start
        self.entries = []  # in position order, the last one ending at write_pos
        self.slots = [None] * nslots
        self.creator = creator  # token of the creator's hold on the queue, 0 when none
        self.unlinked = False
        self.appends = 0

    # -- Queries.
    def member(self, slot, token):
        s = self.slots[slot] if 0 <= slot < len(self.slots) else None
        return s is not None and s.token == token

    def readers(self):
        return [s for s in self.slots if s is not None and s.reader]

    def min_cursor(self):
        return min([s.cursor for s in self.readers()], default=self.write_pos)

    def used(self):
        return self.write_pos - self.min_cursor()

    def free(self):
        return self.cap - self.used()

    def any_waiting(self, bit):
        return any(s is not None and s.wait & bit for s in self.slots)

    def members(self):
        """``(slot, token, is_reader)`` rows, as ``kernels.members`` gives them."""
        rows = [(-1, self.creator, 0)] if self.creator else []
        for i, s in enumerate(self.slots):
            if s is not None:
                rows.append((i, s.token, int(s.reader)))
        return rows

    def unread(self):
        """The entries some reader has not passed yet."""
        m = self.min_cursor()
        return [e for e in self.entries if e.pos >= m]

    # -- Operations.
    def open(self, token, reader):
        """Take the lowest free slot; return its index, or -1 if none is free."""
        for i, s in enumerate(self.slots):
            if s is None:
                self.slots[i] = Slot(token, bool(reader), self.write_pos)
                return i
        return -1

    def leave(self, slot, token, creator=False):
        """Free ``slot`` (if ``slot >= 0``) and drop the creator's hold (if
        ``creator``).  Returns ``(code, unlink)``: ``unlink`` is True the first
        time the queue is left with no member at all."""
        code = OK
        if slot >= 0:
            if self.member(slot, token):
                self.slots[slot] = None
            else:
                code = NOT_MEMBER
        if creator and self.creator == token:
            self.creator = 0
        unlink = False
        if not self.unlinked and not self.members():
            self.unlinked = unlink = True
        self._forget()
        return code, unlink

    def set_waiting(self, slot, bits):
        self.slots[slot].wait = bits

    def append(self, slot, token, sender, mtype, body, kind, skip=False):
        """``skip``: the appender would screen this message itself; if it has
        read everything, its cursor moves past the message (counted as
        screened), so that it never pins what it appends."""
        if not self.member(slot, token):
            return NOT_MEMBER
        size = message_size(sender, mtype, body)
        if size > self.cap:
            return TOO_LARGE
        pos = self.write_pos
        room = self.cap - pos % self.cap
        pad = room if room < size else 0
        m = self.min_cursor()
        if not (m == pos or pos + pad + size - m <= self.cap):
            return FULL
        if pad:
            self.add_padding(moved=[s for s in self.slots if s is not None and s.cursor == pos])
            pos = self.write_pos
        self.entries.append(Entry(pos, size, (sender, mtype, body, kind)))
        self.write_pos = pos + size
        self.appends += 1
        me = self.slots[slot]
        me.sent += 1
        if skip and me.reader and me.cursor == pos:
            me.cursor = pos + size
            me.screened += 1
        self._forget()
        return OK

    def add_padding(self, moved):
        """Fill the ring up to its end; move the slots in ``moved`` past it.

        Part of a wrapping append; the crash tests also call it alone, with
        only some of the slots at the write position in ``moved``.
        """
        pos = self.write_pos
        pad = self.cap - pos % self.cap
        self.entries.append(Entry(pos, pad, None))
        self.write_pos = pos + pad
        for s in moved:
            s.cursor = pos + pad

    def pop(self, slot, token, senders=(), types=(), room=None):
        """Returns ``(OK, (sender, mtype, body, kind))``, ``(EMPTY, None)``,
        ``(NEED_SPACE, n)`` when the message's ``n`` bytes exceed ``room`` (it
        stays unread), or ``(NOT_MEMBER, None)``."""
        if not self.member(slot, token):
            return NOT_MEMBER, None
        s = self.slots[slot]
        try:
            for e in self.entries:
                if e.pos < s.cursor:
                    continue
                if e.msg is None:
                    s.cursor = e.end
                    continue
                sender, mtype, body, _ = e.msg
                if sender in senders or mtype in types:
                    s.cursor = e.end
                    s.screened += 1
                    continue
                n = len(sender) + len(mtype) + len(body)
                if room is not None and n > room:
                    return NEED_SPACE, n
                s.cursor = e.end
                s.received += 1
                return OK, e.msg
            return EMPTY, None
        finally:
            self._forget()

    def _forget(self):
        """Drop the entries every reader has passed (new readers start later)."""
        m = self.min_cursor()
        self.entries = [e for e in self.entries if e.end > m]
