"""Reading one message: ``pop``, iteration, and the relays' read-ahead.

``pop`` takes no queue lock: ``op_pop`` (``kernels.pop_free``) moves this
handle's own cursor with one compare-and-swap, so readers never wait for
writers or for each other.  It copies the record into the handle's buffer,
and the fields are sliced out of it with the handle's thread lock held (so
another thread's pop cannot overwrite it first).  Everything that is not an
immediate hit goes to :func:`pysyncq._retry.wait_for_data`.

A blocking pop that finds nothing first watches the data sequence for up to
``q.spin`` without arming ``W_DATA``, so that writers make no wake call for
a reader that is only watching; a change (a message, or one this handle
screens) means look again, with what is left of the spin.  When the spin
ends with nothing, the slow path arms the bit, looks once more and sleeps.
Where spinning does not pay (more members than CPUs, see ``spin_for``) the
pop arms at once.
"""

import time

import numpy as np

from . import _futex, _handle, _inbox, _load, _outside, _retry, _status, _wait, kernels
from ._args import check_processes, check_timer
from ._wait import WAKE_BITS, LockBusy, locked, wake
from .codec import decode_at, decode_text, message, record_fields
from .layout import (
    AHEAD_BODY_LEN,
    AHEAD_KIND,
    AHEAD_POS,
    AHEAD_SENDER_LEN,
    AHEAD_TYPE_LEN,
    AHEAD_WORDS,
    CODE_MASK,
    EMPTY,
    FROM_CURSOR,
    H_DATA_SEQ,
    H_HEAD,
    KIND_ARRAY,
    KIND_MASK,
    KIND_WRITER_SHIFT,
    NEED_SPACE,
    OK,
    PENDING,
    RETRY,
    S_CURSOR,
    S_FLAGS,
    SEQ_SHIFT,
    SF_DURABLE,
    W_DATA,
)

#: ``op_pop`` past numba's dispatcher (see ``_load``), found by warm_up.
_op_pop = kernels.op_pop
#: The spin rounds of a pop that has not measured them yet.
_UNMEASURED = -1


def use_entry_points():
    """Call the hot kernels past numba's dispatcher from now on (after
    ``warm_up`` found their entry points)."""
    global _op_pop
    _op_pop = _load.FAST.get("op_pop", kernels.op_pop)


def pop(q, block=False, timer=0.5, decode=True, *, processes=None):
    """Pop the next unread message: ``(sender, type, body)``, or None.

    Messages moved to the handle's inbox (by a write blocked on its own unread
    messages) come first.  Those with a sender in :attr:`scrnsend` or a type in
    :attr:`scrntype` are skipped (and count as read).  Nothing to read: None at
    once, or with ``block=True`` after up to ``timer`` s in all (None: for ever);
    ``processes`` (``Process`` objects): :class:`ChildExited` within ``TICK`` s,
    even with ``timer=None``, once one of them has exited with an error.
    ``decode=False`` returns bytes; else fields are decoded from UTF-8 where
    valid (a field that is not is returned as bytes, not lost).
    """
    m = q._m
    if m is None or not m.reader or m.viewing:
        _status.not_reader(q, m)
    if type(timer) is not float or not timer >= 0:
        timer = check_timer(timer)
    if processes is not None:
        processes = check_processes(processes)
    if m.unpins:  # arrays of earlier views have gone: drop their pins
        _outside.drain_unpins(q, m)
    lock = m.lock
    spin = block and q._spin_ok and not m.follow and q.spin > 0
    rounds = _UNMEASURED  # spin rounds left
    while True:
        lock.acquire()
        try:
            if m.inbox.items and (got := _inbox.take(q, m)) is not None:
                return message(*got[:3], decode)  # moved aside for a write (see _inbox)
            scr = q._scr if q._scr_at == q._changes[0] else _handle.screens(q)
            status, slen, tlen, blen, kind = _op_pop(
                q._mem, m.token, m.slot, scr, m.out, m.waits[1 if block and not spin else 0]
            )
            code = status & CODE_MASK
            if not code:
                out = m.out_mm
                a = slen + tlen
                s, t = out[:slen], out[slen:a]
                if kind & KIND_MASK == KIND_ARRAY:
                    b = decode_at(out, a, blen)
                else:
                    b = out[a : a + blen]
            elif block and not spin and (code == EMPTY or code == PENDING):
                m.wait_add(W_DATA, 1)  # the kernel set W_DATA: this thread sleeps
        finally:
            lock.release()
        if status & WAKE_BITS:
            wake(q._seg, status)
        if not code:
            break
        if code == EMPTY and not block and not m.follow:
            return None
        if spin and (code == EMPTY or code == PENDING):
            # Watch unarmed (written out: a call here delays every message).
            mem = q._mem
            if rounds == _UNMEASURED:
                rounds = _wait.spin_rounds(mem, min(q.spin, timer))
            left = _wait.spin_data(mem, blen, rounds)
            if left > 0:  # the sequence moved: look again
                rounds = left - 1
                continue
            if left < 0:
                q._spin_ok = False  # too many members: arm at once next time
            status = RETRY  # the slow path arms the bit and looks again, then sleeps
        got = pop_slow(
            q, m, status & ~WAKE_BITS, slen, blen, block, timer, decode, spun=spin, procs=processes
        )
        if got is None:
            return None
        s, t, b, _ = got
        break
    # message(s, t, b, decode), written out: this is the hot path.
    if decode:
        if type(b) is not bytes:
            return (decode_text(s), decode_text(t), b)
        try:
            return (s.decode(), t.decode(), b.decode())
        except UnicodeDecodeError:
            return (decode_text(s), decode_text(t), decode_text(b))
    return (s, t, b)


def pop_slow(q, m, status, slen, blen, block, timer, decode=False, spun=False, procs=None):
    """Everything but an immediate hit (see :func:`pysyncq._retry.wait_for_data`).

    Returns ``(sender, type, body, kind)`` or None.  ``body`` is bytes or
    an array, or, for a record popped outside the lock with ``decode``,
    already a str where it is valid UTF-8.

    Sleeping for data takes no call of its own: with ``block``, a pop kernel
    that finds nothing also sets this slot's ``W_DATA`` bit (``op_pop``'s
    ``waits``), and the attempt counts the sleeper in ``m.waiting`` under
    ``m.lock`` (so another thread of this handle keeps the bit), as ``pop``
    did before calling this (``status`` ``EMPTY`` or ``PENDING`` with
    ``block``); the next pop kernel clears it.  ``spun``: ``pop`` has spun
    already (then the slow path sleeps at once).  ``procs``: the processes
    to watch (None: the handle's).
    """
    if m.unpins:
        _outside.drain_unpins(q, m)

    def attempt(mem, lockval):
        # The handle's thread lock only around the kernel call (and the
        # read of m.out), never while waiting for the queue lock.
        with m.lock:
            if m.inbox.items and (got := _inbox.take(q, m)) is not None:
                return OK, got, 0, 0, False  # moved aside for a write meanwhile
            scr = _handle.screens(q)
            result = _op_pop(mem, lockval, m.slot, scr, m.out, m.waits[1 if block else 0])
            status, a, tlen, b, kind = result
            code = status & CODE_MASK
            fields = None if code else record_fields(m.out_mm, a, tlen, b, kind)
            armed = bool(block) and (code == EMPTY or code == PENDING)
            if armed:
                m.wait_add(W_DATA, 1)
        return status, fields, a, b, armed

    def large(lock_deadline):
        return _outside.pop(q, m, decode, lock_deadline)

    armed = bool(block) and status & CODE_MASK in (EMPTY, PENDING)
    spin = 0.0 if spun else q.spin
    return _retry.wait_for_data(
        q,
        m,
        attempt,
        status,
        slen,
        blen,
        block,
        timer,
        spin=spin,
        armed=armed,
        large=large,
        procs=procs,
    )


def drain_own(q, m):
    """For a write that found the queue full (see :mod:`pysyncq._inbox`): if
    this handle is a reader whose cursor holds the space (it is at the head),
    move its unread messages into its inbox, up to ``q.inbox_limit`` bytes.
    True if any moved (then the write tries again at once).  Each message is
    popped and added to the inbox in one hold of the handle's thread lock, so
    another thread's read of the handle sees it in one place or the other;
    readers of the handle asleep meanwhile are woken to take them."""
    box = m.inbox
    if not m.reader or m.viewing or box.bytes >= q.inbox_limit:
        return False
    w = q._seg.words
    if w[kernels.slot_word(m.slot, S_FLAGS)] & SF_DURABLE:
        return False  # its position is kept for its next run, not moved into this one
    if w[kernels.slot_word(m.slot, S_CURSOR)] > w[H_HEAD]:
        return False  # another reader holds the space: wait for it
    moved = False
    while box.bytes < q.inbox_limit:
        with m.lock:
            if m.viewing:
                break
            scr = _handle.screens(q)
            status, slen, tlen, blen, kind = _op_pop(
                q._mem, m.token, m.slot, scr, m.out, m.waits[0]
            )
            code = status & CODE_MASK
            if not code:
                box.add(*record_fields(m.out_mm, slen, tlen, blen, kind)[:3])  # bytes, copies
                moved = True
            elif code == NEED_SPACE:
                m.grow(blen)  # whatever its size: the move copies it anyway
        if status & WAKE_BITS:
            wake(q._seg, status)
        if code and code != NEED_SPACE:
            break  # nothing more to move now (or a problem the next read reports)
    if moved and any(m.waiting):
        _futex.wake(q._seg.addr + 8 * H_DATA_SEQ)
    return moved


def pop_raw(q, block=False, timer=0.5):
    """Pop the next record as it is: ``(sender, mtype, body, kind, own)``
    (bytes, bytes, bytes, a ``KIND_*``, and whether this very handle
    appended it), or None.  Screening applies.  For relays."""
    m = q._m
    if m is None or not m.reader:
        _status.not_reader(q, m)
    timer = check_timer(timer)
    got = pop_slow(q, m, RETRY, 0, 0, block, timer)
    if got is None:
        return None
    s, t, b, kind = got
    return s, t, b, kind & KIND_MASK, (kind >> KIND_WRITER_SHIFT) == m.slot + 1


def call(q, block=False, timer=0.5, decode=True, *, processes=None):
    """An iterator that pops until :meth:`pop` returns None.

    ``for m in q(block=True, timer=0.1): ...`` waits up to ``timer`` for
    each next message.  ``processes``: as for :meth:`pop`.
    """
    if q._m is None:
        _status.not_member(q)
    check_timer(timer)
    if processes is not None:
        processes = check_processes(processes)
    return _iterate(q, block, timer, decode, processes)


def _iterate(q, block, timer, decode, processes):
    while (m := pop(q, block, timer, decode, processes=processes)) is not None:
        yield m


def iterate(q):
    return call(q)


# -- Read-ahead, for relays ---------------------------------------------------


def read_ahead(q, n, start=None):
    """Records this handle has not read, from position ``start`` (default:
    its cursor) on, WITHOUT reading them: they stay until :func:`commit_to`.
    Returns ``(records, next)``: records as ``(position, sender, mtype, body,
    kind, own)`` (bytes, a ``KIND_*``), at most ``n``; ``next`` the position
    to read ahead from next.  Never waits for data (the relay sleeps itself),
    only for a busy lock.  For relays that must not lose a message they have
    not passed on."""
    m = q._m
    if m is None or not m.reader or m.viewing:
        _status.not_reader(q, m)
    seg = q._seg
    if start is None:
        start = FROM_CURSOR  # the kernel reads the cursor, under the lock
    lens = np.zeros(AHEAD_WORDS * max(n, 1), np.int64)
    while True:
        with m.lock:
            scr = _handle.screens(q)
            try:
                status, count, nxt = locked(
                    seg,
                    m.token,
                    kernels.op_read_ahead,
                    (m.slot, scr, m.out, lens, n, start),
                    time.monotonic() + _wait.LOCK_PATIENCE,
                )
            except LockBusy as e:
                raise _status.locked_error(q, e, _wait.LOCK_PATIENCE) from None
            records = _records(m, lens, count)
        code = status & CODE_MASK
        if status & WAKE_BITS:
            wake(seg, status)
        if count or code == OK:
            return records, nxt
        if code == NEED_SPACE:
            with m.lock:
                m.grow(status >> SEQ_SHIFT)
            continue
        if code == EMPTY or code == PENDING:
            _handle.idle(q, m, code)
            return [], nxt
        _status.fail(q, status)


def _records(m, lens, count):
    """The records ``op_read_ahead`` copied into the handle's buffer.  With
    ``m.lock``."""
    records = []
    at = 0
    out = m.out_mm
    for i in range(count):
        row = lens[AHEAD_WORDS * i : AHEAD_WORDS * (i + 1)].tolist()
        slen, tlen, blen = row[AHEAD_SENDER_LEN], row[AHEAD_TYPE_LEN], row[AHEAD_BODY_LEN]
        kind, pos = row[AHEAD_KIND], row[AHEAD_POS]
        a, b, end = at + slen, at + slen + tlen, at + slen + tlen + blen
        own = (kind >> KIND_WRITER_SHIFT) == m.slot + 1
        records.append((pos, out[at:a], out[a:b], out[b:end], kind & KIND_MASK, own))
        at = end
    return records


def commit_to(q, pos, count=0):
    """Read everything before position ``pos`` (from :func:`read_ahead`)."""
    m = q._m
    if m is None or not m.reader:
        _status.not_reader(q, m)
    deadline = time.monotonic() + _wait.LOCK_PATIENCE
    try:
        status = locked(q._seg, m.token, kernels.op_commit_to, (m.slot, pos, count), deadline)
    except LockBusy as e:
        raise _status.locked_error(q, e, _wait.LOCK_PATIENCE) from None
    if status & WAKE_BITS:
        wake(q._seg, status)
    if status & CODE_MASK != OK:
        _status.fail(q, status)
