"""The two retry drivers: wait for space (every write), wait for data (every read).

A kernel tries once and answers a status.  When that is not ``OK``, the call
hands the status to one of these drivers, which own everything that may
follow, under one monotonic deadline for the whole call:

* :func:`wait_for_space`: the queue lock busy (wait for it), the queue full
  (reap dead readers at most every ``reap_interval``, then sleep on
  ``H_SPACE_SEQ`` with this slot's ``W_SPACE`` bit up), the message too large,
  the queue corrupt, the membership gone (raise).
* :func:`wait_for_data`: nothing to read (follow the creator, reap a writer
  that died holding a reservation, spin, sleep on ``H_DATA_SEQ``), a record
  larger than the copy buffer (grow it, or copy a large record outside the
  lock), the lock busy, corruption, the membership gone.

Neither holds the queue lock while it waits: only the kernels take it, and
each releases it before returning.
"""

import time

from . import _futex, _handle, _status, _wait
from ._wait import TICK, WAKE_BITS, LockBusy, locked, reap_dead, wake
from .layout import (
    BUSY,
    CODE_MASK,
    CORRUPT,
    EMPTY,
    H_DATA_SEQ,
    H_SPACE_SEQ,
    NEED_SPACE,
    NOT_MEMBER,
    OK,
    PENDING,
    RETRY,
    SEQ_MASK,
    SEQ_SHIFT,
    TOO_LARGE,
    W_DATA,
    W_SPACE,
)


def wait_for_space(q, m, result, op, args, need, block, timer):
    """Everything but an immediate success of ``op(mem, lockval, *args)``
    (whose result is a status, or a tuple led by one): wait for the lock or
    for space, reap, raise; return the result of the success.  ``need`` is
    the message's payload in bytes, for the error messages."""
    seg = q._seg
    start = time.monotonic()
    deadline = start + timer if block else start
    lock_deadline = max(deadline, start + _wait.LOCK_PATIENCE)
    # Pops take no lock and wake the writers waiting for space only if they
    # see a W_SPACE bit; so the bit goes up before the look that decides to
    # sleep (the retry below), and stays up for the wait.
    spacebit = False
    try:
        while True:
            status = result[0] if type(result) is tuple else result
            code = status & CODE_MASK
            if code == OK:
                return result
            wake(seg, status)  # e.g. a lock waiter, even if we raise below
            if code != BUSY:
                now = full_step(q, m, status, need, block, timer, deadline, lock_deadline)
                if now is None:
                    pass  # a dead reader's slot was freed: try again at once
                elif not spacebit:
                    _handle.count_waiter(q, m, (W_SPACE,), 1)
                    spacebit = True
                else:
                    timeout = min(deadline - now, q.reap_interval, TICK)
                    seq = (status >> SEQ_SHIFT) & SEQ_MASK
                    _futex.wait(seg.addr + 8 * H_SPACE_SEQ, seq, timeout)
                    if q._m is not m:
                        _status.closed_meanwhile(q)
            result = locked(seg, m.token, op, args, lock_deadline)
    except LockBusy as e:
        raise _status.locked_error(q, e, lock_deadline - start) from None
    finally:
        if spacebit:
            _handle.count_waiter(q, m, (W_SPACE,), -1)


def full_step(q, m, status, need, block, timer, deadline, lock_deadline):
    """What a write does with a status that is neither ``OK`` nor ``BUSY``:
    raise for a message too large, a corrupt queue or a lost membership;
    else (``FULL``) reap dead members at most every ``reap_interval``, move
    the handle's own unread messages to its inbox when they hold the space
    (``block`` only; see :mod:`pysyncq._inbox`), and
    raise ``QueueFull`` once the deadline has passed (or ``QueueClosed`` once
    the creator a ``follow=True`` handle follows has left).  Returns None
    when a slot was freed (try again at once), else the time it looked
    (wait for space, then try again).  The policy of the sync and the async
    writers alike."""
    if status & CODE_MASK in (TOO_LARGE, CORRUPT, NOT_MEMBER):
        _status.fail(q, status, need=need)
    now = time.monotonic()
    if now >= q._next_reap:
        q._next_reap = now + q.reap_interval
        if reap_dead(q._seg, m.token, lock_deadline):
            return None
    if m.follow:
        _handle.follow_check(q, m)
    if q._procs:
        _handle.peers_check(q, q._procs)
    if block and m.reader and q._make_room(m):
        return None  # its own unread messages moved to its inbox: try again
    if now >= deadline:
        raise _status.queue_full(q, m, need, block, timer)
    return now


def wait_for_data(
    q, m, attempt, status, a, b, block, timer, *, spin=0.0, armed=False, large=None, procs=None
):
    """Everything but an immediate hit of a read: wait, retry, grow the
    buffer, or pop a record too large for the buffer outside the lock.

    ``attempt(mem, lockval)`` tries once, with the queue lock taken by the
    kernel it calls, and returns ``(status, fields, a, b, armed)``: ``fields``
    not None on a hit; ``a, b`` what the kernel answered besides (for
    ``EMPTY`` and ``PENDING``, ``b`` is the data sequence it saw; for
    ``NEED_SPACE``, the room needed; for ``CORRUPT``, what is wrong);
    ``armed`` whether the kernel set this slot's ``W_DATA`` bit and the
    attempt counted this thread in ``m.waiting`` (then the driver sleeps
    without setting the bit itself, and uncounts the thread after).
    ``status, a, b`` and ``armed`` are what the caller's own first try
    answered (``RETRY`` with no try yet).  ``spin``: seconds to watch the data
    sequence before the first sleep.  ``large(lock_deadline)``, if given,
    pops a record of at least ``q.copy_outside`` bytes that does not fit the
    buffer outside the lock, answering as ``attempt`` does less ``armed``.
    ``procs``: the processes whose failure ends the wait (``ChildExited``;
    None: the handle's ``_procs``).

    Returns the fields of the hit, or None when nothing came within
    ``timer`` seconds (``block=False``: at once).
    """
    seg = q._seg
    start = time.monotonic()
    deadline = start + timer
    lock_deadline = start + max(timer if block else 0.0, _wait.LOCK_PATIENCE)
    try:
        while True:
            if status & WAKE_BITS:
                wake(seg, status)
            code = status & CODE_MASK
            if code == EMPTY or code == PENDING:
                now = _handle.idle(q, m, code, lock_deadline, procs)
                if not block or now >= deadline:
                    return None
                timeout = min(deadline - now, TICK, q.reap_interval)
                if armed:
                    spin = _sleep_armed(q, m, b, timeout, spin)
                    armed = False
                else:
                    _handle.sleep(q, m, W_DATA, H_DATA_SEQ, b, timeout)
            elif code == NEED_SPACE and large is not None and b >= q.copy_outside:
                # A large record: copied outside the queue lock, once.
                status, fields, a, b = large(lock_deadline)
                if fields is not None:
                    if status & WAKE_BITS:
                        wake(seg, status)
                    return fields
                if status & CODE_MASK == CORRUPT:
                    _status.corrupt(q, status, a, b)
                # Gone meanwhile (another thread of this handle popped it):
                # try again below, which also arms the wait as it must.
            elif code == NEED_SPACE:
                with m.lock:
                    m.grow(b)
            elif code != RETRY:  # (BUSY: the lock was taken; try again)
                _status.fail(q, status, a, b)
            try:
                status, fields, a, b, armed = locked(seg, m.token, attempt, (), lock_deadline)
            except LockBusy as e:
                raise _status.locked_error(q, e, lock_deadline - start) from None
            if fields is not None:
                if status & WAKE_BITS:
                    wake(seg, status)
                return fields
    finally:
        if armed:
            _handle.disarm(q, m)


def _sleep_armed(q, m, seq, timeout, spin):
    """Sleep for data with the slot's ``W_DATA`` bit set by the pop kernel
    (and this thread counted in ``m.waiting``), after watching the data
    sequence for up to ``spin`` seconds; uncount the thread.  Returns the
    spin left for later sleeps of the same call (none: it spins once)."""
    seg = q._seg
    mem = seg.mem
    if mem is None or q._m is not m:
        _status.closed_meanwhile(q)
    if spin:
        left = _wait.spin_data(mem, seq, _wait.spin_rounds(mem, min(spin, timeout)))
        if left >= 0:  # it watched: pop() may watch unarmed again
            q._spin_ok = True
        if left <= 0:
            _wait.wait_data(seg, mem, seq, timeout)
    else:
        _wait.wait_data(seg, mem, seq, timeout)
    mem = None
    if q._m is not m:
        _status.closed_meanwhile(q)
    with m.lock:
        m.wait_add(W_DATA, -1)
    return 0.0
