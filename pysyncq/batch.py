"""Batches: ``PySyncQ.extend`` and ``PySyncQ.pop_many``, many messages per
kernel call (and so per queue lock).

``PySyncQ.extend`` and ``PySyncQ.pop_many`` are the functions here, bound
as methods of the handle.

Where the time goes, and why the code looks like this
-----------------------------------------------------
A batch is worth having only if its cost per message is far below a single
``append`` + ``pop``, whose cost is mostly per-call overhead.  So nothing
here runs Python code per message that C can run instead (the figures are in
``benchmarks/PROFILE.md``):

* ``extend`` joins the bodies into one ``bytes`` (a batch of ``str`` that is
  all ASCII is joined first and encoded once), and passes their lengths as
  one int64 array, or as a single length when they are all alike, and one
  kind for the whole batch unless the bodies are of mixed types.  The kernel
  (``kernels.ring_put_many``) writes the records one after the other, with
  the checks that ``ring_put`` makes per record made once.  Bodies of
  ``copy_outside`` bytes or more go the reservation way, as ``append``'s do
  (copied outside the queue lock); the runs between them through the kernel.
* ``pop_many``'s kernel (``kernels.ring_pop_many``) copies the bodies back
  to back into the handle's buffer, the sender and type only where they
  change, and writes a ``struct`` format for them (``"6s1s64s64s..."``), so
  that one ``struct.unpack_from`` makes every ``bytes`` object in C; the
  tuples come from ``zip`` over ``itertools.repeat`` of the (shared) sender
  and type; ``decode=True`` is one ``map(bytes.decode, ...)``.  Array bodies
  break the runs and are decoded one by one, as ``pop`` does.
* ``pop_many`` holds the garbage collector off while it builds the list
  (``_GcHold``).  Every tuple is a new object the collector tracks; beyond
  about 2000 per call (CPython keeps that many 3-tuples for reuse) a large
  call sets off young collections, and now and then a full one, which
  nearly double its cost per message.  The tuples hold only str, bytes and
  arrays, so there is no cycle for the collector to find in them; it runs
  as usual once the call has returned.  The hold spans the whole batch, a
  wait for a busy queue lock included: held only around the building of the
  tuples, the collector would run at the next allocation after it (the tuple
  a function returns), over the same young tuples.
"""

import gc
import mmap
import struct
import threading
import time
from itertools import repeat

import numpy as np

from . import _handle, _inbox, _load, _outside, _read, _retry, _status, _wait, kernels
from ._args import check_int, check_processes, check_timer, msgtype_bytes
from ._wait import WAKE_BITS, LockBusy, locked, wake
from .codec import decode_at, decode_text, encode_body
from .errors import MessageTooLarge, QueueFull, QueueLocked
from .kernels import FMT_PER_MESSAGE, SEG_WORDS
from .layout import (
    APPEND_SKIP,
    BUSY,
    CODE_MASK,
    EMPTY,
    KIND_BYTES,
    KIND_STR,
    NEED_SPACE,
    OK,
    PENDING,
    SEQ_SHIFT,
)

#: Bytes of the buffer a handle's pop_many copies into (at most the capacity).
_BATCH_BUFFER = 1 << 18
#: Most messages one pop_many kernel call returns (bounds the format buffer).
_PER_CALL = 8192
_NONE = np.zeros(0, np.int64)
_ONE_LENGTH = {}  # body length -> an int64 array holding it
_BYTES, _STR = {bytes}, {str}
_unpack_from = struct.unpack_from
_decode_bytes = bytes.decode


class _GcHold:
    """``with _gc_hold:`` turns the garbage collector off for the block if it
    is on, and back on when the last such block of any thread ends.  A
    collector that was off already is left alone.  (A ``gc.disable()`` made
    by another thread inside the block is undone at its end: CPython has one
    switch for the whole process.)"""

    __slots__ = ("lock", "held")

    def __init__(self):
        self.lock = threading.Lock()
        self.held = 0  # blocks in progress that keep it off (0: none turned it off)

    def __enter__(self):
        with self.lock:
            if self.held:
                self.held += 1
            elif gc.isenabled():
                gc.disable()
                self.held = 1

    def __exit__(self, *exc):
        with self.lock:
            if self.held:
                self.held -= 1
                if not self.held:
                    gc.enable()


_gc_hold = _GcHold()


def _encode_bodies(bodies):
    """``(blob, lens, kinds, kind, count)`` for ``op_extend``: the encoded
    bodies back to back (bytes), their lengths (an int64 array; one entry
    when all are alike), their kinds (an int64 array, or empty when all are
    ``kind``).  Each body by :meth:`PySyncQ.append`'s rules."""
    if type(bodies) not in (list, tuple):
        bodies = list(bodies)
    count = len(bodies)
    if not count:
        return b"", _NONE, _NONE, 0, 0
    types = set(map(type, bodies))
    kinds = _NONE
    if types == _BYTES:
        blob = b"".join(bodies)
        lens = list(map(len, bodies))
        kind = KIND_BYTES
    elif types == _STR:
        text = "".join(bodies)
        if text.isascii():  # a byte per character: the lengths are the str's
            blob = text.encode()
            lens = list(map(len, bodies))
        else:
            pieces = [b.encode() for b in bodies]
            blob = b"".join(pieces)
            lens = list(map(len, pieces))
        kind = KIND_STR
    else:
        pieces, ks = [], []
        for msg in bodies:
            body, k = encode_body(msg)
            pieces.append(body)
            ks.append(k)
        blob = b"".join(pieces)
        lens = list(map(len, pieces))
        kind = ks[0]
        if ks.count(kind) != count:
            kinds = np.array(ks, np.int64)
    n = lens[0]
    if lens.count(n) == count:
        one = _ONE_LENGTH.get(n)
        if one is None:
            if len(_ONE_LENGTH) >= 256:
                _ONE_LENGTH.clear()
            # Writable, as the warm-up's: a read-only array is another
            # signature to compile.  The kernel only reads it.
            one = _ONE_LENGTH[n] = np.full(1, n, np.int64)
        return blob, one, kinds, kind, count
    return blob, np.array(lens, np.int64), kinds, kind, count


def extend(q, mtype, bodies, block=False, timer=0.5):
    """Append every body of ``bodies`` in order, all of type ``mtype``,
    taking the queue lock as few times as possible; return how many.

    Each body follows :meth:`append`'s rules (str and bytes as they are,
    other objects as ``str(obj)``).  When the queue fills: wait (with
    ``block=True``, up to ``timer`` seconds in all) or raise
    :class:`QueueFull` whose ``.written`` says how many went in; nothing is
    lost or doubled.  A body too large for the queue raises
    :class:`MessageTooLarge`, also with ``.written``, as does
    :class:`QueueLocked` (a stopped process holds the lock).  Fastest with
    a list of ``bytes``, or of ``str``, all of one type.
    """
    m = q._m
    if m is None:
        _status.not_member(q)
    if type(timer) is not float or not timer >= 0:
        timer = check_timer(timer)
    t = msgtype_bytes(mtype)
    blob, lens, kinds, kind, count = _encode_bodies(bodies)
    if not count:
        return 0
    # _handle.skips(q, m, t), written out as in append().
    if q._skip_at != q._changes[0]:
        _handle.skip_refresh(q, m)
    if q._skip_own or (q._skip_types and t in q._skip_types):
        kind |= APPEND_SKIP  # we would screen them: do not pin them either
        if len(kinds):
            kinds = kinds | APPEND_SKIP
    if len(blob) >= q.copy_outside and int(lens.max()) >= q.copy_outside:
        return _extend_outside(q, m, t, blob, lens, kinds, kind, count, block, timer)
    return _extend_run(q, m, t, blob, lens, kinds, kind, 0, 0, count, block, timer)


def _extend_run(q, m, t, blob, lens, kinds, kind, first, off, count, block, timer):
    """Bodies ``first`` (at ``off`` in ``blob``) up to ``count`` of a batch,
    by the batch kernel; returns ``count``."""
    op = _op_extend or _entry_point("op_extend")
    args = (m.slot, m.sender_bytes, t, blob, lens, kinds, kind, first, off, count)
    status, n, off = op(q._mem, m.token, *args)
    written = first + n
    if written == count:
        if status & WAKE_BITS:
            wake(q._seg, status)
        return count
    return _extend_rest(q, m, t, blob, lens, kinds, kind, count, status, written, off, block, timer)


def _extend_outside(q, m, t, blob, lens, kinds, kind, count, block, timer):
    """An :func:`extend` with bodies of ``copy_outside`` bytes or more: each
    of those is reserved under the lock and copied outside it (as ``append``
    does), the runs between them go through the batch kernel; one deadline
    for all of it."""
    every = np.broadcast_to(lens, (count,)) if len(lens) == 1 else lens
    ends = np.cumsum(every).tolist()
    deadline = time.monotonic() + timer if block else 0.0
    written = 0
    for j in np.flatnonzero(every >= q.copy_outside).tolist() + [count]:
        left = max(0.0, deadline - time.monotonic()) if block else 0.0
        if j > written:  # the small bodies before it
            off = ends[written - 1] if written else 0
            _extend_run(q, m, t, blob, lens, kinds, kind, written, off, j, block, left)
            written = j
        if j == count:
            break
        off = ends[j - 1] if j else 0
        body = memoryview(blob)[off : ends[j]]
        k = int(kinds[j]) if len(kinds) else kind
        try:
            _outside.put(q, m, t, body, k, block, left)
        except (QueueFull, MessageTooLarge, QueueLocked) as e:
            e.written = written
            raise
        written += 1
    return count


def _extend_rest(q, m, t, blob, lens, kinds, kind, count, status, written, off, block, timer):
    """The rest of an :func:`extend` whose first kernel call did not write
    every body: wait for the lock, for space, raise."""
    start = time.monotonic()
    deadline = start + timer if block else start
    op = _op_extend
    while True:
        if status & CODE_MASK == BUSY:
            # Wait for the lock as append() does, with the batch kernel.
            args = (m.slot, m.sender_bytes, t, blob, lens, kinds, kind, written, off, count)
            lock_deadline = max(deadline, start + _wait.LOCK_PATIENCE)
            try:
                status, n, off = locked(q._seg, m.token, op, args, lock_deadline)
            except LockBusy as e:
                err = _status.locked_error(q, e, lock_deadline - start)
                err.written = written
                raise err from None
            written += n
        if status & WAKE_BITS:
            wake(q._seg, status)
        if written == count:
            return count
        # No room, or an error: the next body by the single-message path,
        # from the batch's status.  It waits for space, reaps and raises as
        # append() does; then the batch goes on.
        blen = int(lens[0] if len(lens) == 1 else lens[written])
        body = blob[off : off + blen]
        k = int(kinds[written]) if len(kinds) else kind
        args = (m.slot, m.sender_bytes, t, body, k)
        left = max(0.0, deadline - time.monotonic())
        need = len(m.sender_bytes) + len(t) + blen
        try:
            status = _retry.wait_for_space(
                q, m, status & ~WAKE_BITS, kernels.op_append, args, need, block, left
            )
        except (QueueFull, MessageTooLarge, QueueLocked) as e:
            e.written = written
            raise
        if status & WAKE_BITS:
            wake(q._seg, status)
        written += 1
        off += blen
        if written == count:
            return count
        args = (m.slot, m.sender_bytes, t, blob, lens, kinds, kind, written, off, count)
        status, n, off = op(q._mem, m.token, *args)
        written += n


def pop_many(q, n, block=False, timer=0.5, decode=True, *, processes=None):
    """Pop up to ``n`` messages, in order, taking the queue lock as few
    times as possible: a list of what :meth:`pop` returns (empty when
    there is nothing).  With ``block=True`` wait up to ``timer`` seconds
    for the first message, then return what is there without waiting for
    more.  Screening applies as in :meth:`pop`.  Consecutive messages with
    one sender and one type share the sender and type objects.  Raises
    ``RuntimeError`` while a :meth:`pop_view` of this handle is open.
    The garbage collector is held off while the list is built (and
    switched back on after, unless it was off already): see
    :mod:`pysyncq.batch`.
    """
    m = q._m
    if m is None or not m.reader or m.viewing:
        _status.not_reader(q, m)
    if type(n) is not int or not 0 <= n <= 1 << 30:
        n = check_int(n, "n", 0, 1 << 30)
    if type(timer) is not float or not timer >= 0:
        timer = check_timer(timer)
    if processes is not None:
        processes = check_processes(processes)
    with _gc_hold:
        got, code = _pop_batch(q, m, n, decode)
    if got or n == 0:
        return got
    if not block and (code == EMPTY or code == PENDING):
        _handle.idle(q, m, code)  # as pop() does when it finds nothing
        return []
    # waits, grows, raises as pop does
    first = _read.pop(q, block, timer, decode, processes=processes)
    if first is None:
        return []
    with _gc_hold:
        got = _pop_batch(q, m, n - 1, decode)[0]
    got.insert(0, first)
    return got


class _Buffers:
    """A handle's struct format and run table for ``op_pop_many``."""

    __slots__ = ("fmt_mm", "fmt", "segs", "room")

    def __init__(self, room):
        self.room = room
        self.fmt_mm = mmap.mmap(-1, FMT_PER_MESSAGE * room + 64)
        self.fmt = np.frombuffer(self.fmt_mm, np.uint8)
        self.segs = np.zeros(SEG_WORDS * room, np.int64)


def _pop_batch(q, m, n, decode):
    """At most ``n`` messages that are there now, one kernel call per
    buffer-full (waiting for the queue lock if it is busy), and the status
    code that ended the batch.  ``([], code)`` when the first call found
    nothing or failed, leaving what to do to the caller."""
    if m.unpins:
        _outside.drain_unpins(q, m)
    if len(m.out) < _BATCH_BUFFER and n > 1:
        with m.lock:
            m.grow(min(_BATCH_BUFFER, q._seg.capacity))
    msgs = []
    while True:
        want = min(n - len(msgs), _PER_CALL)
        status, count = _pop_into(msgs, q._mem, m.token, q, m, want, decode)
        if status & CODE_MASK == BUSY:
            start = time.monotonic()
            args = (q, m, want, decode)
            try:
                status, count = locked(
                    q._seg, m.token, _pop_into_, (msgs, *args), start + _wait.LOCK_PATIENCE
                )
            except LockBusy as e:
                if msgs:
                    break
                raise _status.locked_error(q, e, _wait.LOCK_PATIENCE) from None
        if status & WAKE_BITS:
            wake(q._seg, status)
        code = status & CODE_MASK
        if len(msgs) >= n:
            return msgs, code
        if code == NEED_SPACE:
            if not count:  # the next record alone does not fit: grow for it
                with m.lock:
                    m.grow(status >> SEQ_SHIFT)
        elif code != OK or not count:
            return msgs, code


def _pop_into(msgs, mem, lockval, q, m, want, decode):
    """One ``op_pop_many`` call for up to ``want`` messages, added to
    ``msgs``: ``(status, count)``.  The handle's thread lock is held around
    the kernel call and the reading of its buffers, never while waiting for
    the queue lock (``locked`` calls this again after a wait)."""
    with m.lock:
        if m.inbox.items and (count := _inbox.take_many(q, m, want, decode, msgs)):
            return OK, count  # moved aside for a write (see _inbox): these first
        b = m.lens
        if b is None or b.room < want:
            b = m.lens = _Buffers(max(want, 64))
        scr = q._scr if q._scr_at == q._changes[0] else _handle.screens(q)
        op = _op_pop_many or _entry_point("op_pop_many")
        status, count, flen, nsegs, arrays = op(
            mem, lockval, m.slot, scr, m.out, b.fmt, b.segs, want
        )
        if not count:
            return status, 0
        items = _unpack_from(b.fmt_mm[:flen], m.out_mm)
        if nsegs == 1 and not arrays:
            # One sender and type, no array: the usual batch.
            s, t = items[0], items[1]
            bodies = items[2:]
            if decode:
                s, t = decode_text(s), decode_text(t)
                try:
                    bodies = list(map(_decode_bytes, bodies))
                except UnicodeDecodeError:
                    bodies = list(map(decode_text, bodies))
            if count > 16:
                msgs += zip(repeat(s, count), repeat(t, count), bodies, strict=False)
            else:  # a comprehension costs less for a few
                msgs += [(s, t, body) for body in bodies]
        else:
            _runs(msgs, m, items, b.segs[: SEG_WORDS * nsegs].tolist(), decode)
        return status, count


def _pop_into_(mem, lockval, msgs, q, m, want, decode):
    return _pop_into(msgs, mem, lockval, q, m, want, decode)


def _runs(msgs, m, items, segs, decode):
    """Add to ``msgs`` the ``(sender, type, body)`` tuples of the runs
    ``segs`` (see ``kernels.ring_pop_many``) whose str and bytes fields are
    ``items``, as :meth:`PySyncQ.pop` gives them.  With ``m.lock``."""
    _decode = decode_text
    s = t = None
    i = 0
    for r in range(0, len(segs), SEG_WORDS):
        c, new, at, length = segs[r : r + SEG_WORDS]
        if new:
            s, t = items[i], items[i + 1]
            i += 2
            if decode:
                s, t = _decode(s), _decode(t)
        if length >= 0:  # an array record
            msgs.append((s, t, decode_at(m.out_mm, at, length)))
            continue
        bodies = items[i : i + c]
        i += c
        if decode:
            try:
                bodies = list(map(_decode_bytes, bodies))
            except UnicodeDecodeError:
                bodies = list(map(_decode, bodies))
        msgs += zip(repeat(s, c), repeat(t, c), bodies, strict=False)


_op_extend = _op_pop_many = None


def _entry_point(name):
    """Kernel ``name`` (``op_extend`` or ``op_pop_many``) called past numba's
    dispatcher (its type checks and lookup are a large part of a call), as
    append and pop are: its compiled entry point from the registry's sample
    (``_load.fast``), kept in this module's ``_op_extend`` / ``_op_pop_many``."""
    global _op_extend, _op_pop_many
    op = _load.fast(name)
    if name == "op_extend":
        _op_extend = op
    else:
        _op_pop_many = op
    return op
