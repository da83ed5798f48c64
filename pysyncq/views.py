"""Zero-copy messages: loans (write in place) and views (read in place).

* A **loan** is a reservation (:mod:`pysyncq._outside`) handed to the caller:
  the record's header, sender, type and array descriptor are written under
  the lock, and the caller fills the array in place, outside the lock; when
  the ``with`` block ends normally the record is published, and when it
  raises the record is voided and no reader ever sees it.  Other writers are
  not held up: their messages go after it and are seen once it is published
  or voided.
* A **view** finds the next record without copying it and leaves the read
  cursor at it, so its bytes stay put; the body is a read-only array or
  memoryview over the shared memory.  When the block ends the cursor moves
  past the record.  If the block raises, the message stays unread (the next
  pop returns it again).  A memoryview body is released at the end of the
  block, so later use raises ``ValueError``.  An array body cannot be
  released: if a reference to it outlives the block, the record stays pinned
  (its space is not reused) until that array is garbage-collected, so it never
  shows bytes of another message (its pin is dropped at the handle's next
  pop once the array is gone).
"""

import contextlib
import ctypes
import math
import time
import weakref

import numpy as np

from . import _handle, _inbox, _outside, _retry, _status, _wait, kernels
from ._args import check_processes, check_timer, msgtype_bytes
from ._wait import WAKE_BITS, LockBusy, locked, wake
from .codec import decode_array, decode_text, descriptor
from .layout import (
    APPEND_SKIP,
    CODE_MASK,
    CORRUPT,
    KIND_ARRAY,
    KIND_MASK,
    KIND_VOID,
    NOT_MEMBER,
    OK,
    RETRY,
)


def loan(q, mtype, shape, dtype=float, block=False, timer=0.5):
    """Write an array message in place: ``with q.loan('x', (3, 4)) as arr:``.

    Reserves room for a C-ordered array of ``shape`` and ``dtype`` in the
    queue and yields a writable ndarray there (its contents are whatever
    the memory held: fill all of it).  When the block ends normally the
    message is published; when it raises, it is discarded and no reader
    ever sees it.  Messages stay in ring order: readers wait at an
    unpublished loan, while other writers go on appending after it.  A
    process that dies holding a loan blocks readers for at most
    ``reap_interval``.  Do not use the array after the block.  Size
    limits, ``block`` and ``timer``: as :meth:`append`.
    """
    return _loan(q, mtype, shape, dtype, block, timer)


@contextlib.contextmanager
def _loan(q, mtype, shape, dtype, block, timer):
    m = q._m
    if m is None:
        _status.not_member(q)
    timer = check_timer(timer)
    t = msgtype_bytes(mtype)
    lead = len(m.sender_bytes) + len(t)
    desc, shape = descriptor(dtype, shape, lead)
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    pos = _outside.reserve(q, m, m.sender_bytes, t, desc, nbytes, KIND_ARRAY, block, timer)
    kind = KIND_ARRAY | (APPEND_SKIP if _handle.skips(q, m, t) else 0)
    seg = q._seg
    off = _outside.data_offset(seg, pos, lead + len(desc))
    arr = np.ndarray(shape, dt, buffer=seg.mem, offset=off)
    try:
        yield arr
    except BaseException:
        del arr
        _outside.publish(q, m, pos, KIND_VOID)
        raise
    del arr
    _outside.publish(q, m, pos, kind)


def _peek(q, m, block, timer, procs=None):
    """Find the next record for a view, waiting as ``pop`` does: ``(sender_len,
    type_len, body_len, kind, offset, position, size)``, or None."""

    def attempt(mem, lockval):
        with m.lock:
            if m.inbox.items:
                return OK, _INBOX, 0, 0, False
            r = kernels.op_peek(mem, lockval, m.slot, _handle.screens(q))
        status, slen, _, blen = r[:4]
        return status, (r[1:] if status & CODE_MASK == OK else None), slen, blen, False

    return _retry.wait_for_data(q, m, attempt, RETRY, 0, 0, block, timer, procs=procs)


def pop_view(q, block=False, timer=0.5, *, processes=None):
    """Read the next message in place: ``with q.pop_view() as m:``.

    ``m`` is None when nothing arrived in time, else ``(sender, mtype,
    body)``: body a read-only ndarray (array messages) or a read-only
    memoryview (str and bytes messages) over the shared memory itself.
    The message counts as read, and its bytes may be reused, only when the
    block ends; if the block raises, the message stays unread and the
    next pop returns it again.  A memoryview body fails (``ValueError``)
    if used after the block; an array body kept after the block keeps
    its bytes from being reused until it is garbage-collected.  No other
    pop on this handle while the view is open.  ``processes``: as for
    :meth:`pop`.
    """
    return _pop_view(q, block, timer, processes)


#: What ``_peek`` finds when a write of another thread of the handle has
#: moved messages to its inbox meanwhile (see _inbox): read those first.
_INBOX = ("inbox",)


def _inbox_view(m, s, t, b):
    """A view of the inbox's first message (claimed: ``m.viewing``): read-only,
    over the inbox's own copy; read (dropped from the inbox) only when the
    block ends normally."""
    if type(b) is bytes:
        body = mv = memoryview(b).toreadonly()
    else:
        body, mv = b.view(), None
        body.flags.writeable = False
    view = View(decode_text(s), decode_text(t), body)
    read = False
    try:
        yield view
        read = True
    finally:
        view._release()
        if mv is not None:
            mv.release()
        _inbox.release(m, read)


@contextlib.contextmanager
def _pop_view(q, block, timer, processes):
    m = q._m
    if m is None or not m.reader:
        _status.not_reader(q, m)
    timer = check_timer(timer)
    if processes is not None:
        processes = check_processes(processes)
    if m.viewing:
        raise RuntimeError(
            f"a pop_view of queue {q.name!r} is already open in this handle: finish it first"
        )
    _outside.drain_unpins(q, m)
    while True:  # messages a blocked write moved out of the queue come first (_inbox)
        with m.lock:
            got = _inbox.claim(q, m) if m.inbox.items else None
        if got is not None:
            yield from _inbox_view(m, *got)
            return
        found = _peek(q, m, block, timer, processes)
        if found is not _INBOX:
            break
    if found is None:
        yield None
        return
    slen, tlen, blen, kind, offset, pos, size = found
    seg = q._seg
    m.viewing = True
    head = bytes(seg.mem[offset : offset + slen + tlen])
    # The body's memory is a ctypes array over the ring, so that every array
    # made from it refers to this one object, whose end the finalizer sees
    # (numpy would collapse a chain of ndarray views onto the whole segment).
    # It holds the segment's array, so the mapping outlives it.
    holder = (ctypes.c_char * blen).from_address(seg.addr + offset + slen + tlen)
    holder.keep = seg.mem
    gone = weakref.finalize(holder, m.view_gone, pos)
    if kind & KIND_MASK == KIND_ARRAY:
        body = decode_array(memoryview(holder).toreadonly(), copy=False)
        mv = None
    else:
        body = mv = memoryview(holder).toreadonly()
    del holder
    view = View(decode_text(head[:slen]), decode_text(head[slen:]), body)
    try:
        yield view
    except BaseException:
        m.viewing = False
        view._release()
        if mv is not None:
            mv.release()
        raise  # the message stays unread: the cursor was left at it
    view._release()
    del body
    if mv is not None:
        mv.release()
        del mv
    _finish(q, m, pos, size, gone)


class View:
    """What ``pop_view`` yields: ``(sender, mtype, body)``, usable as that
    tuple (unpacking, indexing, ``==``), and released when the block ends:
    after it, using it raises ``ValueError``.  (So that the name bound by
    ``with ... as m`` does not keep the body, and its record, alive.)"""

    __slots__ = ("_fields",)

    def __init__(self, sender, mtype, body):
        self._fields = (sender, mtype, body)

    def _release(self):
        self._fields = None

    def _get(self):
        if self._fields is None:
            raise ValueError("this pop_view has ended: its message is no longer in view")
        return self._fields

    def __getitem__(self, i):
        return self._get()[i]

    def __iter__(self):
        return iter(self._get())

    def __len__(self):
        return 3

    def __eq__(self, other):
        if isinstance(other, View):
            other = other._get()
        return self._get() == other if isinstance(other, tuple) else NotImplemented

    __hash__ = None

    def __repr__(self):
        if self._fields is None:
            return "View(<released>)"
        return f"View{self._fields!r}"


def _finish(q, m, pos, size, gone):
    """Move the cursor past the viewed record; keep it pinned while an array
    made from the body is still alive (``gone``, its finalizer, is alive)."""
    seg = q._seg
    try:
        with m.lock:
            # Pinned first, checked second: a finalizer that runs between the
            # two finds the position pinned, and its note is drained later.
            m.pins.append(pos)
            m.views.add(pos)  # close() keeps the slot for it (State.release)
            escaped = gone.alive
            if not escaped:
                m.pins.remove(pos)
                m.views.discard(pos)
            deadline = time.monotonic() + _wait.LOCK_PATIENCE
            try:
                status = locked(
                    seg, m.token, kernels.op_commit, (m.slot, pos, size, escaped), deadline
                )
            except LockBusy as e:
                if escaped:
                    m.pins.remove(pos)
                    m.views.discard(pos)
                raise _status.locked_error(q, e, _wait.LOCK_PATIENCE) from None
            if escaped and status & CODE_MASK != OK:
                m.pins.remove(pos)
                m.views.discard(pos)
    finally:
        m.viewing = False
    if status & WAKE_BITS:
        wake(seg, status)
    if status & CODE_MASK == CORRUPT:
        _status.corrupt(q, status)
    if status & CODE_MASK == NOT_MEMBER:
        _status.revoked(q)


__all__ = ["View", "loan", "pop_view"]
