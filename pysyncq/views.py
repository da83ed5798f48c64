"""Zero-copy messages: loans (write in place) and views (read in place).

Both rest on the publication protocol described in :mod:`pysyncq.layout`:

* A **loan** reserves a record under the lock (``op_reserve``): the header,
  sender, type and array descriptor are written, the data bytes are left for
  the caller, and readers stop at the record until it is published.  The
  caller fills the array in place, outside the lock; when the ``with`` block
  ends normally the record is published (one swap of its meta word), and
  when it raises the record is voided and no reader ever sees it.  Other
  writers are not held up: their messages go after it and are seen once it
  is published or voided.  The slot pins the reservation (``S_PIN``), so its
  space is never reused before then; if the process dies, its slot is reaped
  and its reservations voided (readers waiting at it reap it after
  ``reap_interval``).
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

Large ``append`` bodies go the loan way too: reserved under the lock, copied
outside it, so writers do not queue behind each other's memcpy.  Large
``pop`` records go the view way (``pop_outside``): found under the lock with
the read cursor left at them (the cursor pins them: the head, and so the
space writers may reuse, never passes a cursor), copied once outside the lock
straight into the object ``pop`` returns, then committed under the lock.  A
reader that dies while copying pins the record until it is reaped.

Pin bookkeeping: each handle keeps the positions it pins in ``m.pins`` and
stores their minimum in its slot's ``S_PIN``; every change happens with the
handle's thread lock held.
"""

import contextlib
import ctypes
import math
import time
import weakref

import numpy as np

from . import _wait, kernels
from ._wait import LockBusy, check_timer, locked, wake
from .codec import decode_array, descriptor
from .errors import QueueClosed, QueueCorrupt
from .layout import (
    APPEND_SKIP,
    CODE_MASK,
    CORRUPT,
    EMPTY,
    H_DATA_SEQ,
    KIND_ARRAY,
    KIND_BYTES,
    KIND_VOID,
    MAX_NAME_BYTES,
    NOT_MEMBER,
    OK,
    PENDING,
    REC_HEADER,
    W_DATA,
)

#: Bodies at least this large are copied outside the queue lock.
COPY_OUTSIDE = 1 << 17


def _unpin(q, m, pos):
    """Forget one pin of ``pos``; store the new lowest pin, and wake writers
    waiting for space.  With ``m.lock``."""
    m.pins.remove(pos)
    status = kernels.pin_set(q._seg.mem, m.slot, min(m.pins) if m.pins else -1)
    if status:
        wake(q._seg, status)


def reserve(q, m, sender, mtype, head, nbytes, kind, block, timer):
    """Reserve a record (see the module docstring) and return its position.

    Waits for space and for the lock as ``append`` does; raises as it does.
    """
    seg = q._seg
    args = (m.slot, sender, mtype, head, nbytes, kind)
    with m.lock:
        result = kernels.op_reserve(q._mem, m.token, *args)
        if result[0] & CODE_MASK == OK:
            m.pins.append(result[1])
    if result[0] & CODE_MASK != OK:
        need = len(sender) + len(mtype) + len(head) + nbytes
        result = wait_for_room(q, m, result, kernels.op_reserve, args, need, block, timer)
    status, pos = result
    if status & _wait.WAKE_BITS:
        wake(seg, status)
    return pos


def wait_for_room(q, m, result, op, args, need, block, timer):
    """The slow path of a reservation: ``q._append_slow`` for an op that
    returns ``(status, position)``, noting the pin of the one that succeeds."""

    def attempt(mem, lockval, *a):
        with m.lock:
            r = op(mem, lockval, *a)
            if r[0] & CODE_MASK == OK:
                m.pins.append(r[1])
        return r

    return q._append_slow(result, m, attempt, args, need, block, timer)


def publish(q, m, pos, kind):
    """Publish (or, with ``KIND_VOID``, discard) the reservation at ``pos``."""
    with m.lock:
        mem = q._seg.mem
        if mem is None:
            m.pins.clear()
            raise QueueClosed(f"queue {q.name!r} was closed while a message was being written")
        status = kernels.record_publish(mem, m.slot, pos, kind)
        _unpin(q, m, pos)
    if status & CODE_MASK == NOT_MEMBER and kind & 0xFF != KIND_VOID:
        q._revoked()
    if status & _wait.WAKE_BITS:
        wake(q._seg, status)


def put_outside(q, m, t, body, kind, block, timer):
    """Append a large body: reserve, copy outside the lock, publish.  ``kind``
    may carry ``APPEND_SKIP``, applied when the record is published."""
    pos = reserve(q, m, m.sender_bytes, t, b"", len(body), kind & 0xFF, block, timer)
    seg = q._seg
    off = _data_offset(seg, pos, len(m.sender_bytes) + len(t))
    try:
        src = body if type(body) is np.ndarray else np.frombuffer(body, np.uint8)
        seg.mem[off : off + len(body)] = src
    except BaseException:
        publish(q, m, pos, KIND_VOID)
        raise
    publish(q, m, pos, kind)


#: Contiguous bytearray and memoryview bodies this large or larger are copied
#: straight from their buffer; smaller ones through ``bytes()``, which costs
#: less than wrapping the buffer in an array and the dispatched kernel call
#: (measured in one process: about 1.5 us more per append, even at 16 KiB;
#: 10 % less at 64 KiB).
BUFFER_DIRECT = 1 << 15


def buffer_body(msg):
    """The body of a ``bytes``, ``bytearray`` or ``memoryview`` message for
    ``append``: a read-only uint8 array over the caller's own buffer when it
    is C-contiguous and at least ``BUFFER_DIRECT`` bytes, else ``bytes(msg)``
    (a non-contiguous memoryview's bytes in C order, as ``tobytes()``)."""
    mv = msg if type(msg) is memoryview else memoryview(msg)
    if mv.nbytes < BUFFER_DIRECT or not mv.c_contiguous:
        return bytes(mv)
    return np.frombuffer(mv.toreadonly(), np.uint8)


def append_buffer(q, m, t, body, block, timer):
    """``append`` of a body that ``buffer_body`` left in the caller's buffer:
    copied from it once, into the ring (outside the lock from
    ``q.copy_outside`` bytes on, as every body)."""
    if len(t) > MAX_NAME_BYTES:
        raise ValueError(f"msgtype is {len(t)} bytes long; the limit is {MAX_NAME_BYTES}")
    kind = KIND_BYTES | (APPEND_SKIP if q._skips(m, t) else 0)
    if len(body) >= q.copy_outside:
        return put_outside(q, m, t, body, kind, block, timer)
    args = (m.slot, m.sender_bytes, t, body, kind)
    status = kernels.op_append(q._mem, m.token, *args)
    if status & CODE_MASK:
        need = len(m.sender_bytes) + len(t) + len(body)
        status = q._append_slow(status, m, kernels.op_append, args, need, block, timer)
    if status & _wait.WAKE_BITS:
        wake(q._seg, status)


def _data_offset(seg, pos, lead):
    return seg.ring_offset + pos % seg.capacity + REC_HEADER + lead


@contextlib.contextmanager
def loan(q, mtype, shape, dtype, block, timer):
    m = q._m
    if m is None:
        q._member()
    timer = check_timer(timer)
    from .queue import msgtype_bytes

    t = msgtype_bytes(mtype)
    lead = len(m.sender_bytes) + len(t)
    desc, shape = descriptor(dtype, shape, lead)
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    pos = reserve(q, m, m.sender_bytes, t, desc, nbytes, KIND_ARRAY, block, timer)
    kind = KIND_ARRAY | (APPEND_SKIP if q._skips(m, t) else 0)
    seg = q._seg
    off = _data_offset(seg, pos, lead + len(desc))
    arr = np.ndarray(shape, dt, buffer=seg.mem, offset=off)
    try:
        yield arr
    except BaseException:
        del arr
        publish(q, m, pos, KIND_VOID)
        raise
    del arr
    publish(q, m, pos, kind)


def _peek(q, m, block, timer):
    """Find the next record for a view, waiting as ``pop`` does: ``(sender_len,
    type_len, body_len, kind, offset, position, size)``, or None."""
    seg = q._seg
    start = time.monotonic()
    deadline = start + timer
    lock_deadline = start + max(timer if block else 0.0, _wait.LOCK_PATIENCE)
    got = []

    def attempt(mem, lockval, slot, scr):
        with m.lock:
            r = kernels.op_peek(mem, lockval, slot, scr)
            got[:] = [r]
        return r

    while True:
        try:
            locked(seg, m.token, attempt, (m.slot, q._pop_args(m)[3]), lock_deadline)
        except LockBusy as e:
            raise q._locked_error(e, lock_deadline - start) from None
        status, slen, tlen, blen, kind, offset, pos, size = got[0]
        if status & _wait.WAKE_BITS:
            wake(seg, status)
        code = status & CODE_MASK
        if code == OK:
            return slen, tlen, blen, kind, offset, pos, size
        if code == CORRUPT:
            q._corrupt(status, slen, blen)
        if code not in (EMPTY, PENDING):
            q._revoked()
        now = q._idle(m, code, lock_deadline)
        if not block or now >= deadline:
            return None
        q._sleep(m, W_DATA, H_DATA_SEQ, blen, min(deadline - now, _wait.TICK, q.reap_interval))


@contextlib.contextmanager
def pop_view(q, block, timer):
    m = q._m
    if m is None or not m.reader:
        q._not_reader(m)
    timer = check_timer(timer)
    if m.viewing:
        raise RuntimeError(
            f"a pop_view of queue {q.name!r} is already open in this handle: finish it first"
        )
    drain_unpins(q, m)
    found = _peek(q, m, block, timer)
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
    gone = weakref.finalize(holder, m.unpins.append, pos)
    if kind & 0xFF == KIND_ARRAY:
        body = decode_array(memoryview(holder).toreadonly(), copy=False)
        mv = None
    else:
        body = mv = memoryview(holder).toreadonly()
    del holder
    view = View(_text(head[:slen]), _text(head[slen:]), body)
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


def pop_outside(q, m, decode, lock_deadline):
    """Pop the next record, copying it outside the queue lock: for records
    too large for the handle's copy buffer (``pop``'s ``NEED_SPACE``) of at
    least ``q.copy_outside`` bytes.

    Under the lock, ``op_peek`` passes what comes before the record and leaves
    the cursor at it; outside, the body is copied once, straight from the ring
    into what ``pop`` returns (an array with its dtype, shape and order; str
    when ``decode`` and the body is valid UTF-8; else bytes); under the lock
    again ``op_commit`` moves the cursor past it.  The handle's thread lock is
    held throughout, so another thread's pop neither reads the same record nor
    passes it.  Returns ``(fields, status, a, b)`` as ``_pop_once``: fields
    ``(sender, type, body, kind)``, or None with what the peek answered
    (``EMPTY``, ``PENDING``, ``CORRUPT``, ``NOT_MEMBER``) for ``pop``'s slow
    path to handle.  If the copy is interrupted (KeyboardInterrupt, a
    ``MemoryError`` making the result) the message stays unread; an array
    descriptor found corrupt raises ``QueueCorrupt`` with the record passed,
    as ``pop`` does.
    """
    seg = q._seg
    with m.lock:
        scr = q._scr if q._scr_at == q._changes[0] else q._screens()
        try:
            found = locked(seg, m.token, kernels.op_peek, (m.slot, scr), lock_deadline)
        except LockBusy as e:
            raise q._locked_error(e, _wait.LOCK_PATIENCE) from None
        status, slen, tlen, blen, kind, offset, pos, size = found
        if status & _wait.WAKE_BITS:  # now, not after the copy
            wake(seg, status)
            status &= ~_wait.WAKE_BITS
        if status & CODE_MASK != OK:
            return None, status, slen, blen
        mem = seg.mem
        a = offset + slen + tlen
        sender, mtype = mem[offset : offset + slen].tobytes(), mem[offset + slen : a].tobytes()
        error = None
        try:
            body = copy_body(memoryview(mem)[a : a + blen], kind, decode)
        except QueueCorrupt as e:
            body, error = None, e  # as pop does: the record is passed, the error raised
        deadline = time.monotonic() + _wait.LOCK_PATIENCE
        try:
            done = locked(seg, m.token, kernels.op_commit, (m.slot, pos, size, False), deadline)
        except LockBusy as e:
            raise q._locked_error(e, _wait.LOCK_PATIENCE) from None
    if done & _wait.WAKE_BITS:
        wake(seg, done)
    if done & CODE_MASK == CORRUPT:
        q._corrupt(done)
    if done & CODE_MASK == NOT_MEMBER:
        q._revoked()  # the slot was freed meanwhile: the copy may be of reused bytes
    if error is not None:
        raise error
    return (sender, mtype, body, kind), status, slen, blen


def copy_body(buf, kind, decode):
    """The one copy of a body out of the ring (``buf``, a memoryview over it):
    a private array for an array record, else str (``decode`` and valid
    UTF-8) or bytes."""
    if kind & 0xFF == KIND_ARRAY:
        return decode_array(buf)
    if decode:
        try:
            return str(buf, "utf-8")
        except UnicodeDecodeError:
            pass
    return buf.tobytes()


def drain_unpins(q, m):
    """Drop the pins of views whose arrays have been garbage-collected since
    (their finalizers only note the position: they may run at any moment,
    even inside this handle's own locked sections)."""
    if not m.unpins:
        return
    with m.lock:
        while m.unpins:
            pos = m.unpins.pop()
            if pos in m.pins and q._seg.mem is not None and q._m is m:
                _unpin(q, m, pos)


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


def _text(b):
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b


def _finish(q, m, pos, size, gone):
    """Move the cursor past the viewed record; keep it pinned while an array
    made from the body is still alive (``gone``, its finalizer, is alive)."""
    seg = q._seg
    try:
        with m.lock:
            # Pinned first, checked second: a finalizer that runs between the
            # two finds the position pinned, and its note is drained later.
            m.pins.append(pos)
            escaped = gone.alive
            if not escaped:
                m.pins.remove(pos)
            deadline = time.monotonic() + _wait.LOCK_PATIENCE
            try:
                status = locked(
                    seg, m.token, kernels.op_commit, (m.slot, pos, size, escaped), deadline
                )
            except LockBusy as e:
                if escaped:
                    m.pins.remove(pos)
                raise q._locked_error(e, _wait.LOCK_PATIENCE) from None
            if escaped and status & CODE_MASK != OK:
                m.pins.remove(pos)
    finally:
        m.viewing = False
    if status & _wait.WAKE_BITS:
        wake(seg, status)
    if status & CODE_MASK == CORRUPT:
        q._corrupt(status)
    if status & CODE_MASK == NOT_MEMBER:
        q._revoked()


__all__ = [
    "BUFFER_DIRECT",
    "COPY_OUTSIDE",
    "append_buffer",
    "buffer_body",
    "loan",
    "pop_outside",
    "pop_view",
    "put_outside",
    "reserve",
]
