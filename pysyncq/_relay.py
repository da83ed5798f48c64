"""What a relay (the Redis bridge) needs of a handle, as one interface.

A relay moves messages between a local queue and somewhere else without
losing or doubling any, across its own crashes: it reads records ahead of
its cursor without passing them, commits (passes) them only once they are
safe elsewhere, appends in the name of the process that wrote a message
elsewhere, and watches the write position and the data sequence.  The relay
holds a durable membership (``open(durable=True)``), so a relay killed
mid-way leaves its cursor where it was for the next one.
"""

from . import _handle, _read, _write, kernels
from .layout import H_DATA_SEQ, H_WRITE_POS, S_CURSOR, SEQ_MASK, W_DATA


class Relay:
    """The relay's view of an opened handle ``q``."""

    __slots__ = ("q", "words", "instance")

    def __init__(self, q):
        self.q = q
        self.words = q._seg.words
        #: The segment's random id (tells a queue from a later one of the same name).
        self.instance = q._seg.instance

    def cursor(self):
        """This member's read position."""
        return int(self.words[kernels.slot_word(self.q._m.slot, S_CURSOR)])

    def write_pos(self):
        """The position after the last complete record."""
        return int(self.words[H_WRITE_POS])

    def data_seq(self):
        """The data sequence as a futex word holds it (bumped by every append)."""
        return int(self.words[H_DATA_SEQ]) & SEQ_MASK

    def read_ahead(self, n, start=None):
        """At most ``n`` records from ``start`` on, not passed: see
        :func:`pysyncq._read.read_ahead`.  ``QueueLocked`` if the lock stays busy."""
        return _read.read_ahead(self.q, n, start)

    def commit_to(self, pos, count=0):
        """Pass everything before ``pos``."""
        _read.commit_to(self.q, pos, count)

    def sleep_for_data(self, seq, timeout):
        """Sleep while the data sequence is ``seq``, at most ``timeout`` seconds."""
        q = self.q
        _handle.sleep(q, q._m, W_DATA, H_DATA_SEQ, seq, timeout)

    def append(self, sender, mtype, body, kind, block=False, timer=0.5):
        """Append a record in another process's name: see
        :func:`pysyncq._write.append_raw`."""
        _write.append_raw(self.q, sender, mtype, body, kind, block, timer)
