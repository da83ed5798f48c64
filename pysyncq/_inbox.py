"""The inbox: a writer blocked for space never waits on messages it alone pins.

A reader's cursor holds every message it has not read.  A process that
appends with ``block=True`` to a full queue while its own cursor is the one
that holds the space (the lowest of all) would wait for itself for ever: the
deadlock that the README's tour once avoided with a helper that popped while
the queue was full.  Instead, such a write moves this handle's unread
messages into its inbox, a private list in this process (popped as any pop
does: screens apply, the cursor moves, the space is freed for the writers),
and tries again at once.  Every later read of the handle (``pop``,
``pop_many``, ``pop_view``, ``apop``, iteration) returns what the inbox holds
first, in order, then reads the queue on: nothing is lost or seen twice, and
a screen added meanwhile still applies.

The inbox holds at most ``q.inbox_limit`` bytes (sender, type and body;
default: 64 MiB, or the queue's size if larger: a parent that sends many
tasks takes in the results that come back meanwhile).  A write that finds
the inbox that full, and the queue still full, waits for space as before, up
to its timer (``QueueFull`` then, whose message says so): a process that keeps
writing much more than it reads, to a queue it also reads, must read.
``q.inbox_limit = 0`` turns the inbox off.  A durable member
(``open(durable=True)``) has none: its read position is kept for its next
run, not moved into this one.  ``close()`` drops what the inbox holds, as it
drops the unread messages of the queue.
"""

from collections import deque

from .codec import message

#: The default of ``q.inbox_limit``, unless the queue is larger.
INBOX_LIMIT = 64 << 20


class Inbox:
    """The messages a handle took out of the queue to make room for its own
    writes: ``(sender, type, body)`` as bytes (the body an ndarray for array
    messages), and their size."""

    __slots__ = ("items", "bytes", "flag")

    def __init__(self):
        self.items = deque()
        self.bytes = 0
        #: Where nopython pops of this handle look (``pysyncq._jitside``): a
        #: one-word int64 array that holds ``len(items)``, or None.
        self.flag = None

    def add(self, s, t, b):
        self.items.append((s, t, b))
        self.bytes += size(s, t, b)
        if self.flag is not None:
            self.flag[0] = len(self.items)

    def __len__(self):
        return len(self.items)


def _screened(q, s, t):
    return s in q._scrnsend or t in q._scrntype


def size(s, t, b):
    return len(s) + len(t) + (len(b) if type(b) is bytes else b.nbytes)


def _drop(box):
    box.bytes -= size(*box.items.popleft())
    if not box.items:
        box.bytes = 0
    if box.flag is not None:
        box.flag[0] = len(box.items)


# Every function below is called with the handle's thread lock (``m.lock``)
# held, in the same hold as the read of the queue that would come next: so a
# thread never reads the queue past messages another thread of the handle is
# moving into the inbox, and no two threads take the same message.


def first(q, m):
    """The inbox's first message not screened out (dropping those that are),
    left in the inbox; None when it is empty."""
    box = m.inbox
    while box.items:
        s, t, b = box.items[0]
        if not _screened(q, s, t):
            return s, t, b
        _drop(box)
    return None


def take(q, m):
    """Take the inbox's first message not screened out: ``(sender, type,
    body, 0)`` as ``codec.record_fields`` gives a record's fields; None when
    the inbox has none left (the queue is read next)."""
    got = first(q, m)
    if got is None:
        return None
    _drop(m.inbox)
    return (*got, 0)


def take_many(q, m, n, decode, out):
    """Append up to ``n`` messages from the inbox to ``out``, as ``pop_many``
    returns them; how many."""
    count = 0
    while count < n and (got := take(q, m)) is not None:
        out.append(message(*got[:3], decode))
        count += 1
    return count


def claim(q, m):
    """For ``pop_view``: the inbox's first message, left in the inbox while
    the view is open (``m.viewing``, set here: no other pop of the handle
    meanwhile); :func:`release` drops it when the block ends normally."""
    got = first(q, m)
    if got is not None:
        m.viewing = True
    return got


def release(m, read):
    """A view of the inbox's first message ends: dropped if ``read``."""
    with m.lock:
        m.viewing = False
        if read and m.inbox.items:
            _drop(m.inbox)
