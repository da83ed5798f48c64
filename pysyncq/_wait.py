"""Waiting outside the lock: the queue lock, futex sleeps and wakes, reaping.

Every ``op_*`` kernel tries the queue lock once and answers ``BUSY`` if it is
taken; the waiting happens here, in Python, with no lock held:

* Lock busy: yield a few times, then mark the lock contended and sleep on
  ``H_LOCK_SEQ`` (the releaser wakes one sleeper).  A holder that keeps the
  lock for ``LOCK_CHECK`` seconds is looked up; if its process is dead the lock
  is taken over and the queue recovered (``op_steal``).  A live holder is
  waited for until the caller's deadline, then ``LockBusy``.
* Sleeping for data or space: the caller advertises a wait bit in its slot and
  sleeps on ``H_DATA_SEQ`` or ``H_SPACE_SEQ``; a kernel that changes what the
  sleepers wait for asks (through its status) for a wake, which ``wake`` does.
* Reaping: the slots of members whose process has ended are freed.
"""

import math
import os
import time

from . import _aiowake, _futex, _proc, kernels
from .errors import QueueClosed
from .layout import (
    BUSY,
    CODE_MASK,
    CONTENDED,
    F_FOREIGN_NS,
    H_CAPACITY,
    H_DATA_SEQ,
    H_FLAGS,
    H_LOCK_SEQ,
    H_MEMBER_SEQ,
    H_PIDNS,
    H_SPACE_SEQ,
    H_TIMENS,
    OK,
    S_FLAGS,
    SF_DURABLE,
    UNLINK,
    W_ASYNC,
    W_DATA,
    W_SPACE,
    WAKE_ASYNC_DATA,
    WAKE_ASYNC_SPACE,
    WAKE_DATA,
    WAKE_DONE,
    WAKE_LOCK,
    WAKE_MEMBERS,
    WAKE_SPACE,
)

#: Seconds a lock may stay with one holder before its process is looked up.
LOCK_CHECK = 0.2
#: Seconds a call waits for a lock held by a live process, even when it was
#: asked not to block (a holder is normally done in microseconds; one that is
#: not has been stopped, e.g. by a debugger).  A longer timer waits longer.
LOCK_PATIENCE = 1.0
#: The longest single sleep; a missed wake costs at most this.
TICK = 0.5
_LOCK_SLEEP = 0.01
#: Looks at a busy lock that only yield the CPU before any sleep.
SPINS = 3
WAKE_ASYNC = WAKE_ASYNC_DATA | WAKE_ASYNC_SPACE
WAKE_BITS = WAKE_DATA | WAKE_SPACE | WAKE_LOCK | WAKE_MEMBERS | WAKE_ASYNC


def wake(seg, status):
    """Wake the sleepers that a kernel's status asks for.

    The hot kernels make their futex calls themselves (``kernels.wake_now``,
    which adds ``WAKE_DONE``); then only the asyncio waiters are left, which
    those kernels name exactly (``WAKE_ASYNC_*``)."""
    if status & WAKE_DONE:
        if status & WAKE_ASYNC:
            _aiowake.signal(seg, status)
        return
    if status & WAKE_BITS:
        addr = seg.addr
        if status & WAKE_DATA:
            _futex.wake(addr + 8 * H_DATA_SEQ)
        if status & WAKE_SPACE:
            _futex.wake(addr + 8 * H_SPACE_SEQ)
        if status & WAKE_LOCK:
            _futex.wake(addr + 8 * H_LOCK_SEQ, 1)
        if status & WAKE_MEMBERS:
            _futex.wake(addr + 8 * H_MEMBER_SEQ)
        if status & (WAKE_DATA | WAKE_SPACE):
            _aiowake.signal(seg, status)  # waiters in asyncio loops (W_ASYNC)


def wake_sleepers(seg):
    """Wake every process sleeping for data or space, to look again (at the
    creator, or at its own membership)."""
    _futex.wake(seg.addr + 8 * H_DATA_SEQ)
    _futex.wake(seg.addr + 8 * H_SPACE_SEQ)


def may_judge(seg):
    """Whether this process may judge which members are dead.

    Pids and start times only mean the same inside one pid and time namespace:
    where the queue spans namespaces (containers sharing /dev/shm), nobody is
    judged dead, so no lock is taken over and no slot reaped.
    """
    w = seg.words
    return not w[H_FLAGS] & F_FOREIGN_NS and (int(w[H_PIDNS]), int(w[H_TIMENS])) == (
        _proc.namespaces()
    )


class LockBusy(Exception):
    """The lock stayed with its holder past the caller's deadline.

    ``alive`` is True when the holder was looked up at the deadline and
    lives, False when it could not be judged (the queue spans namespaces):
    a holder found dead is never reported, it is replaced."""

    def __init__(self, holder, alive=True):
        super().__init__(holder)
        self.pid = _proc.token_pid(holder)
        self.alive = alive


class LockWatch:
    """The one policy for waiting on a busy queue lock, shared by the
    blocking driver (:func:`locked`) and the asyncio one (``aio``): a few
    yields first (``SPINS``); a holder that keeps the lock ``LOCK_CHECK``
    seconds is looked up and, if its process is dead, replaced
    (``op_steal``); a live one is waited for until ``deadline``, then
    ``LockBusy``.  The deadline looks too: a call whose deadline comes
    before ``LOCK_CHECK`` has passed (a short timer, or a long one mostly
    spent waiting for space) would otherwise give up on a dead holder,
    and name it alive."""

    __slots__ = ("seg", "token", "deadline", "spins", "seen", "since")

    def __init__(self, seg, token, deadline):
        self.seg, self.token, self.deadline = seg, token, deadline
        self.spins = 0
        self.seen, self.since = 0, 0.0

    def yielding(self):
        """True for the first few looks, which only yield the CPU."""
        if self.spins < SPINS:
            self.spins += 1
            return True
        return False

    def judge(self, holder):
        """After a look found ``holder`` holding the lock: True if it was dead
        and has been replaced (try again at once); raises ``LockBusy`` past
        the deadline; else returns False (wait a while, then try again)."""
        now = time.monotonic()
        late = now >= self.deadline
        if holder != self.seen:
            self.seen, self.since = holder, now
        elif now - self.since >= LOCK_CHECK:
            late = True  # look now (and again LOCK_CHECK from now)
        if not late:
            return False
        self.since = now
        seg = self.seg
        judged = may_judge(seg)
        if judged and not _proc.is_alive(holder):
            wake(seg, kernels.op_steal(seg.mem, holder, self.token))
            return True
        if now >= self.deadline:
            raise LockBusy(holder, alive=judged)
        return False


def locked(seg, token, op, args, deadline=math.inf):
    """Run ``op(mem, lockval, *args)``, waiting while the lock is busy.

    Returns the kernel's result (an int, or a tuple led by the status).  A
    holder that is found dead is replaced (``op_steal``); a live one is waited
    for until ``deadline`` (a ``time.monotonic()`` value), then ``LockBusy``.
    """
    mem = seg.mem
    if mem is None:
        raise QueueClosed(f"queue {seg.name!r} was closed in this process meanwhile")
    result = op(mem, token, *args)
    status = result[0] if type(result) is tuple else result
    if status & CODE_MASK != BUSY:
        return result
    watch = LockWatch(seg, token, deadline)
    lockval = token
    while True:
        if watch.yielding():
            os.sched_yield()
        else:
            seq, holder = kernels.lock_prepare_wait(mem)
            if holder:
                if watch.judge(holder):
                    continue
                timeout = min(_LOCK_SLEEP, deadline - time.monotonic())
                _futex.wait(seg.addr + 8 * H_LOCK_SEQ, seq, max(timeout, 0.0))
                # Having slept, keep the lock marked contended so that the
                # next release wakes whoever still sleeps.
                lockval = token | CONTENDED
                if seg.mem is None:
                    raise QueueClosed(f"queue {seg.name!r} was closed in this process meanwhile")
        result = op(mem, lockval, *args)
        status = result[0] if type(result) is tuple else result
        if status & CODE_MASK != BUSY:
            return result


def reap_dead(seg, own=None, deadline=math.inf):
    """Free the slots (and creator hold) of members whose process has ended.

    Returns True if anything was freed.  ``own`` is the caller's own
    token, never reaped; nor are durable slots (``SF_DURABLE``).  Unlinks
    the name if the reap left no member.
    ``deadline`` bounds the waits for the lock (see ``locked``).
    """
    if not may_judge(seg):
        return False
    me = _proc.own_token()
    freed = False
    words = seg.words
    for slot, token, _ in kernels.members(seg.mem):
        token = int(token)
        if token in (me, own) or _proc.is_alive(token):
            continue
        if slot >= 0 and words[kernels.slot_word(int(slot), S_FLAGS)] & SF_DURABLE:
            continue  # kept for the process that takes it over (open(durable=True))
        st = locked(seg, me, kernels.op_leave, (int(slot), token, slot < 0), deadline)
        wake(seg, st)
        if st & CODE_MASK == OK:
            freed = True
        if st & UNLINK:
            seg.unlink_if_same()
    return freed


#: CPUs this process may run on: spinning pays only with no more members.
try:
    CPUS = len(os.sched_getaffinity(0))
except (AttributeError, OSError):  # pragma: no cover - not Linux
    CPUS = os.cpu_count() or 1
_rounds_per_s = 0.0


def spin_rounds(mem, seconds):
    """Loads of ``spin_for`` that take about ``seconds`` (measured once)."""
    global _rounds_per_s
    if not _rounds_per_s:
        # Watch a word that never changes (the capacity), on any member count.
        cap = int(mem.view("<i8")[H_CAPACITY]) & 0xFFFFFFFF
        n = 100_000
        best = math.inf
        for _ in range(3):
            t = time.perf_counter()
            kernels.spin_for(mem, H_CAPACITY, cap, 1 << 30, n)
            best = min(best, time.perf_counter() - t)
        _rounds_per_s = n / max(best, 1e-9)
    return int(seconds * _rounds_per_s)


def spin_data(mem, seq, rounds):
    """Before sleeping for data: watch ``H_DATA_SEQ`` for up to ``rounds``
    loads (``spin_rounds`` converts seconds) while it equals ``seq``, if the
    queue has no more members than this process has CPUs.  What
    ``kernels.spin_for`` returns: the rounds left plus one if it changed (look
    again instead of sleeping, watching on with what is left), 0 if it did
    not, -1 if it did not watch (too many members, or no futex to sleep on
    after all)."""
    if not _futex.HAVE_FUTEX:
        return -1
    return kernels.spin_for(mem, H_DATA_SEQ, seq, CPUS, rounds)


def wait_data(seg, mem, seq, timeout):
    """Sleep on ``H_DATA_SEQ`` while it equals ``seq``, at most ``timeout``
    seconds (a futex wait in a numba kernel that releases the GIL; a short
    poll where there is no futex)."""
    if not _futex.HAVE_FUTEX:
        _futex.wait(seg.addr + 8 * H_DATA_SEQ, seq, timeout)
    elif timeout > 0:
        kernels.futex_wait(mem, H_DATA_SEQ, seq, int(timeout * 1e9))


def wait_bits(waiting):
    """The ``S_WAIT`` bits for a handle's count of waiters per bit."""
    return (
        (W_DATA if waiting[W_DATA] else 0)
        | (W_SPACE if waiting[W_SPACE] else 0)
        | (W_ASYNC if waiting[W_ASYNC] else 0)
    )
