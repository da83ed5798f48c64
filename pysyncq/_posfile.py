"""The bridge's position file: where its inbound side is, surviving a SIGKILL.

A small file in /dev/shm, written around every local append of a stream
entry (see :class:`PosFile`), and the stream-id arithmetic that goes with it.
"""

import mmap
import os

#: Sequence numbers and instance ids are unsigned 64-bit words.
U64 = (1 << 64) - 1


class PosFile:
    """Where the inbound side is, in a small file in /dev/shm, written around
    every append.  Redis gets the position only every ``beat`` seconds; after a
    SIGKILL this file tells the restarted bridge where it really was.

    A record is ``(gen, ms, seq, wpos, instance, check)``: entry ``ms-seq``
    is appended locally (``wpos`` 0), or its append has begun (``wpos`` is 1
    + the local queue's write position just before, in queue ``instance``).
    In the second case the restarted bridge looks in the local queue from
    that position for a record its durable slot wrote, which tells whether the
    append took place: so no entry is appended twice, or lost.

    Two records, written in turn (the higher ``gen`` is the latest), the check
    word stored last: a kill in the middle of a write spoils only the record
    being written, and the other still holds the state before.
    """

    MAGIC = 0x5059_5359_4E43_5122
    WORDS = 6

    def __init__(self, path):
        self.path = path
        size = 16 * self.WORDS
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.words = memoryview(self.mm).cast("Q")
        self.gen = 0
        self.next = 0
        got = self._latest()
        if got is not None:
            self.gen, self.next = got[0], self.WORDS - got[5]

    def _latest(self):
        w, k = self.words, self.WORDS
        best = None
        for i in (0, k):
            rec = w[i : i + k - 1].tolist()
            check = self.MAGIC
            for x in rec:
                check ^= x
            if w[i + k - 1] == check and rec[0] and (best is None or rec[0] > best[0]):
                best = (*rec, i)
        return best

    def read(self):
        """The latest intact ``(ms, seq, wpos or None, instance)``, or None."""
        got = self._latest()
        if got is None:
            return None
        _, ms, seq, wpos1, instance, _ = got
        return ms, seq, (wpos1 - 1 if wpos1 else None), instance

    def write(self, ms, seq, wpos=None, instance=0):
        w, i, k = self.words, self.next, self.WORDS
        self.gen += 1
        rec = (self.gen, ms, seq, 0 if wpos is None else wpos + 1, instance & U64)
        w[i + k - 1] = 0
        check = self.MAGIC
        for j, x in enumerate(rec):
            w[i + j] = x
            check ^= x
        w[i + k - 1] = check
        self.next = k - i

    def remove(self):
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self):
        self.words.release()
        self.mm.close()


def id_before(ms, seq):
    """The stream id just before ``ms-seq``: XREAD from it returns ``ms-seq`` first."""
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{U64}"
