"""The one place where a kernel's status becomes an exception.

Kernels and waits answer with status codes (:mod:`pysyncq.layout`); every
Python call that meets a code it cannot handle by waiting or retrying hands
it here, and the exception it raises names the queue, what happened and what
to do.  Everything here takes the handle (``q``) only to read its name, its
segment and its membership; nothing here changes the queue.
"""

import signal

from . import _segment, stats
from .errors import (
    MessageTooLarge,
    NotOpened,
    QueueClosed,
    QueueCorrupt,
    QueueFull,
    QueueLocked,
    TooManyProcesses,
)
from .layout import (
    CODE_MASK,
    CORRUPT,
    F_UNLINKED,
    H_FLAGS,
    H_HEAD,
    H_WRITE_POS,
    HEADER_WORDS,
    NO_SLOT,
    NOT_MEMBER,
    SEQ_SHIFT,
    TOO_LARGE,
    record_bytes,
)


def usable(q):
    """The handle's segment; raise ``QueueClosed`` if the handle was closed or
    the queue removed."""
    if q._state.seg is None:
        raise QueueClosed(
            f"this handle of queue {q.name!r} was closed and cannot be used or opened "
            f"again; for a new membership make a new handle: "
            f"PySyncQ({q.name!r}, create=False).open(...)"
        )
    seg = q._seg
    w = seg.words
    # F_UNLINKED revokes every handle, but only in a header that is
    # otherwise sound: a corrupt one that happens to have the bit set
    # gets QueueCorrupt from the kernels (and stats() still works).
    if w[H_FLAGS] & F_UNLINKED and not _segment.header_problem(
        tuple(int(x) for x in w[:HEADER_WORDS]), len(seg.mem)
    ):
        revoked(q)
    return seg


def not_member(q):
    """Raise for a call that needs ``open()`` first."""
    usable(q)
    raise NotOpened(f"call open() on queue {q.name!r} in this process first")


def not_reader(q, m):
    """Raise for a pop on a handle that cannot pop now (``m`` its member)."""
    if m is None:
        not_member(q)
    if m.viewing:
        raise RuntimeError(
            f"a pop_view of queue {q.name!r} is open in this handle: pop after its block"
        )
    raise NotOpened(f"queue {q.name!r} was opened with reader=False in this process: it cannot pop")


def closed_meanwhile(q):
    raise QueueClosed(f"queue {q.name!r} was closed (by another thread) meanwhile")


def revoked(q):
    """Raise for ``NOT_MEMBER``: the queue was removed, or this membership
    revoked; the handle forgets its membership."""
    if q._state.seg is None:
        closed_meanwhile(q)
    q._m = q._state.member = None
    if q._seg.words[H_FLAGS] & F_UNLINKED:
        raise QueueClosed(
            f"queue {q.name!r} was removed (by pysyncq.remove(name, force=True) or "
            f"'python -m pysyncq clean --force', or its last member closed it); close() "
            f"this handle, and create the queue anew"
        )
    raise QueueClosed(
        f"this process's membership of queue {q.name!r} was revoked (it was judged "
        f"dead, or the queue was reset); open() it again"
    )


def corrupt(q, status, value=0, pos=0):
    """Raise :class:`QueueCorrupt` for a ``CORRUPT`` status, naming what is
    wrong (or :class:`QueueClosed` if this handle was closed meanwhile)."""
    if q._state.seg is None:
        closed_meanwhile(q)
    raise QueueCorrupt(_segment.corruption(q._seg, (status >> SEQ_SHIFT) & 0xFF, value, pos))


def fail(q, status, value=0, pos=0, need=0):
    """Raise for a status that no wait or retry can mend: ``CORRUPT``,
    ``TOO_LARGE`` (``need``: the payload in bytes) and, for any other code,
    the membership is gone (``NOT_MEMBER``)."""
    code = status & CODE_MASK
    if code == CORRUPT:
        corrupt(q, status, value, pos)
    if code == TOO_LARGE:
        raise too_large(q, need)
    revoked(q)


def too_large(q, need):
    return MessageTooLarge(
        f"message of {need} bytes (sender + type + body) can never fit in "
        f"queue {q.name!r}, which holds at most {q.max_message}; create "
        f"the queue with a larger size"
    )


def _holder(e):
    """What a ``LockBusy`` ``e`` knows of the holder: alive (looked up at
    the deadline), or not judged (the queue spans namespaces)."""
    if e.alive:
        return "which is alive but"
    return "which cannot be judged alive or dead from here (another namespace) and"


def locked_error(q, e, waited):
    """The ``QueueLocked`` for a ``LockBusy`` ``e`` after ``waited`` seconds."""
    return QueueLocked(
        f"queue {q.name!r} is locked by process {e.pid}, {_holder(e)} has not "
        f"released the lock in {waited:.3g} s (stopped?)"
    )


def close_locked_error(q, e, patience):
    return QueueLocked(
        f"queue {q.name!r} is locked by process {e.pid}, {_holder(e)} did "
        f"not release the lock within {patience} s (stopped?); this "
        f"handle is closed, and its slot will be freed once this process has ended"
    )


def open_failed(q, seg, code):
    """Raise for what ``op_open`` answered, if it is not a slot."""
    if code == NO_SLOT:
        raise TooManyProcesses(
            f"all {seg.nslots} slots of queue {q.name!r} are held by live processes; "
            f"create the queue with a larger slots= or close unused handles"
        )
    if code == NOT_MEMBER:
        raise QueueClosed(
            f"queue {q.name!r} was closed by all its processes and removed; create a new one"
        )


def creator_gone(q, dead, pid):
    return QueueClosed(
        f"the process that created queue {q.name!r}"
        f"{f' (pid {pid})' if pid else ''} has {'died' if dead else 'closed it'}, and this "
        f"handle follows it (open(follow=True)); close this handle and end"
    )


def queue_full(q, m, payload, block, timer):
    """The ``QueueFull`` for a message of ``payload`` bytes, naming the
    reader that holds the space and what to do about it."""
    return QueueFull(_full_message(q, m, payload, block, timer))


def _full_message(q, m, payload, block, timer):
    need = record_bytes(payload)
    w = q._seg.words
    free = q._seg.capacity - int(w[H_WRITE_POS] - w[H_HEAD])
    why = f"waited {timer} s" if block else "block=False"
    head = f"queue {q.name!r} is full ({why}): the message needs {need} bytes, {free} are free; "
    readers = [r for r in stats.snapshot(q._seg, q.name).members if r.reader and r.lag]
    if not readers:
        return head + "the slowest reader must pop first"
    r = max(readers, key=lambda r: r.lag)
    who = f"{r.name!r} (pid {r.pid})"
    lag = f"{r.lag} bytes in {r.lag_messages} messages"
    if r.slot == m.slot and m.inbox.bytes and m.inbox.bytes >= q.inbox_limit:
        return head + (
            f"the slowest reader is this handle itself, {who}, which has not passed {lag}, "
            f"and its inbox is full ({m.inbox.bytes} bytes of messages moved out of the queue "
            f"to make room, q.inbox_limit = {q.inbox_limit}): pop them"
        )
    if r.slot == m.slot:
        return head + (
            f"the slowest reader is this handle itself, {who}, which has not passed {lag}: "
            f"pop them (or 'for m in q: pass'), or open(reader=False) in a process that "
            f"only writes"
        )
    if not r.alive:
        return head + (
            f"the slowest reader, {who}, has died with {lag} unread; its slot is freed "
            f"within reap_interval ({q.reap_interval} s)"
        )
    tail = f"the slowest reader is {who}, which has not passed {lag}"
    if "space" in r.waiting:
        return (
            head
            + tail
            + (
                ", and is itself waiting for space to append, with no room left in its inbox "
                "(inbox_limit): a cycle, which no timer will break.  A process that waits for "
                "space must keep reading meanwhile, or use two queues, one per direction"
            )
        )
    return head + tail + "; it must pop first"


def process_exited(p):
    """``process NAME (pid N) has exited with exit code C (killed by SIG)``."""
    code = p.exitcode
    how = f"exit code {code}"
    if code < 0:
        try:
            how += f" (killed by {signal.Signals(-code).name})"
        except ValueError:
            pass
    name = getattr(p, "name", None)
    return (
        f"process {name + ' ' if name else ''}(pid {getattr(p, 'pid', '?')}) has exited with {how}"
    )


def peer_exited_message(q, p):
    """What a blocked pop or write says of a watched process that failed."""
    return (
        f"{process_exited(p)} while this process waited on queue {q.name!r} "
        f"(processes=); see its traceback on stderr"
    )


def child_exited_message(q, p, count, n):
    """What ``wait_for_readers`` says of process ``p`` that exited early."""
    return (
        f"{process_exited(p)} while "
        f"waiting for {n} readers of queue {q.name!r} ({count} opened); see its "
        f"traceback on stderr.  Under spawn or forkserver, a target defined in __main__ "
        f"of 'python -c' or a notebook cannot be found by the children: define it in an "
        f"importable module"
    )


def readers_timeout_message(q, count, n, timer):
    return (
        f"only {count} of {n} readers opened queue {q.name!r} within {timer} s; "
        f"children may have died before opening (look at their stderr, and pass "
        f"them as wait_for_readers(..., processes=workers) to fail at once)"
    )
