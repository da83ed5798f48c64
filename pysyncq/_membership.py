"""Joining and leaving a queue: ``open``, ``close``, ``wait_for_readers``, ``stats``.

``open`` claims a slot in the segment's table (``op_open``), or takes over
the durable slot of a dead process with the same sender (``op_adopt``); a
full table is reaped of dead members first.  ``close`` gives the slot back
through the handle's ``State`` (:mod:`pysyncq._lifecycle`), which the
finalizer also uses, so that a handle that is garbage-collected leaves the
queue as a closed one does.
"""

import multiprocessing.util
import os
import time

import numpy as np

from . import _futex, _handle, _lifecycle, _proc, _status, _wait, kernels
from ._args import check_int, check_timer, sender_bytes
from ._wait import TICK, LockBusy, locked, may_judge, reap_dead, wake
from .errors import ChildExited
from .layout import (
    CODE_MASK,
    CORRUPT,
    H_CREATOR,
    H_MEMBER_SEQ,
    HEADER_BYTES,
    MAX_SLOTS,
    NO_SLOT,
    OK,
    OPEN_DURABLE,
    OPEN_READER,
    S_FLAGS,
    SF_DURABLE,
)
from .stats import slot_name_matches, snapshot

#: Seconds open() keeps looking for a free slot (one held by a process that
#: is still dying) before it raises TooManyProcesses.
OPEN_GRACE = 0.5
#: Seconds open() waits for a lock held by a live process.
OPEN_PATIENCE = 5.0
#: What a closed handle maps: a blank header, on which every kernel fails cleanly.
CLOSED_MEM = np.zeros(HEADER_BYTES, np.uint8)


def open(q, sender=None, filtself=True, *, reader=True, follow=False, durable=False):  # noqa: A001
    """Register this process with the queue; return the handle.

    ``sender`` (str or bytes, default the process id) names this process in
    every message it appends; ``filtself`` adds it to :attr:`scrnsend`, so
    the process does not read its own messages.  With ``reader=False`` the
    process only writes: it holds no read cursor and never pins messages.
    A reader sees every message appended after its ``open()``.

    With ``follow=True`` this handle follows the process that created the
    queue: once that process has closed the queue or died, a ``pop`` that
    finds nothing to read and every write (within ``FOLLOW_INTERVAL``
    seconds, even on a queue nobody reads) raise :class:`QueueClosed` (at
    once, or within ``TICK`` seconds of blocking),
    so that a worker blocked with ``timer=None`` does not outlive its
    parent.  Messages appended before the creator left are still read
    first.  In the creating process itself it has no effect.

    With ``durable=True`` the membership outlives the process: if it dies,
    its slot is not reaped (its read position keeps pinning what it has
    not read, so writers wait rather than lose it), and the next process
    that opens with the same ``sender`` and ``durable=True`` takes the
    slot over and reads on from there.  For relays (the Redis bridge).

    Usable as a context manager: ``with q.open('worker'): ...`` closes on
    exit.
    """
    with q._hlock:
        return _open(q, sender, filtself, reader, follow, durable)


def _open(q, sender, filtself, reader, follow, durable):
    seg = _status.usable(q)
    if q._m is not None:
        raise RuntimeError(
            f"queue {q.name!r} is already open in this handle as {q._m.sender!r}; "
            f"for a second membership use another handle: PySyncQ(name, create=False)"
        )
    if sender is None:
        sender = str(os.getpid())
    name = sender_bytes(sender)
    token = _proc.own_token()
    start = time.monotonic()
    try:
        status, slot = _claim(seg, token, name, reader, durable, start)
    except LockBusy as e:
        raise _status.locked_error(q, e, time.monotonic() - start) from None
    wake(seg, status)
    code = status & CODE_MASK
    if code == CORRUPT:
        _status.corrupt(q, status)
    _status.open_failed(q, seg, code)
    member = _handle.Member(slot, token, sender, name, reader)
    if follow:
        creator = int(seg.words[H_CREATOR])
        if creator != token:
            member.follow = creator or -1  # -1: the creator has left already
    q._skip_at = q._skip_seen = -1
    q._state.member = member
    q._m = member
    arm_finalizer(q)
    if filtself and sender not in q._scrnsend:
        q._scrnsend.add(sender)
        q._auto_screen = name
    return q


def _claim(seg, token, name, reader, durable, start):
    """``(status, slot)`` of a slot for this process: a durable one taken
    over, else a free one (reaping dead members while the table is full)."""
    deadline = start + OPEN_PATIENCE
    args = ((OPEN_READER if reader else 0) | (OPEN_DURABLE if durable else 0), name)
    status, slot = _adopt(seg, token, name, reader, deadline) if durable else (NO_SLOT, -1)
    if status & CODE_MASK != OK:
        status, slot = locked(seg, token, kernels.op_open, args, deadline)
    # A full table: free the slots of dead processes.  A process killed a
    # moment ago may still be dying (not yet a zombie): look again for
    # OPEN_GRACE seconds before giving up.
    give_up = start + OPEN_GRACE
    while status & CODE_MASK == NO_SLOT:
        if reap_dead(seg, deadline=deadline):
            status, slot = locked(seg, token, kernels.op_open, args, deadline)
        elif time.monotonic() >= give_up:
            break
        else:
            time.sleep(0.01)
    return status, slot


def _adopt(seg, token, name, reader, deadline):
    """Take over the durable slot of a dead process opened with the same
    sender: ``(status, slot)``, ``(NO_SLOT, -1)`` when there is none."""
    if not may_judge(seg):
        return NO_SLOT, -1
    w = seg.words
    for slot, dead, is_reader in kernels.members(seg.mem):
        slot, dead = int(slot), int(dead)
        if slot < 0 or bool(is_reader) != bool(reader):
            continue
        if not w[kernels.slot_word(slot, S_FLAGS)] & SF_DURABLE:
            continue
        if not slot_name_matches(seg, slot, name) or _proc.is_alive(dead):
            continue
        status = locked(seg, token, kernels.op_adopt, (slot, dead), deadline)
        if status & CODE_MASK == OK:
            return status, slot
    return NO_SLOT, -1


def arm_finalizer(q):
    """Make sure the handle leaves the queue when it is collected or the
    process ends, and that a creator lets its followers go first."""
    if q._finalizer is None:
        # Runs at garbage collection, at the end of a multiprocessing child
        # and at interpreter exit (after the children are joined).
        q._finalizer = multiprocessing.util.Finalize(q, q._state.release, exitpriority=-10)
    if q._exit_hook is None and q._state.creator:
        # Before multiprocessing joins the children at exit (priority >= 0
        # runs first): let children that follow the creator stop.
        q._exit_hook = multiprocessing.util.Finalize(q, q._state.leave_creator, exitpriority=0)


def close(q):
    """Leave the queue and release this process's resources.

    The messages this process had not read are released.  The last process
    to close (or the creator's exit, if it never opened and everyone else
    has closed) removes the shared memory.  Closing twice does nothing.
    """
    with q._hlock:
        m, q._m = q._m, None
        fin, q._finalizer = q._finalizer, None
        if fin is not None:
            fin.cancel()
        hook, q._exit_hook = q._exit_hook, None
        if hook is not None:
            hook.cancel()
        try:
            if m is None:
                q._state.release()
            else:
                # No kernel of another thread's pop or sleep runs on the
                # slot while it is given back.
                with m.lock:
                    q._state.release()
        except LockBusy as e:
            raise _status.close_locked_error(q, e, _lifecycle.CLOSE_PATIENCE) from None
        finally:
            # Another thread may be between its checks and a kernel call:
            # give it a blank header, on which every kernel fails cleanly.
            q._mem = CLOSED_MEM


def wait_for_readers(q, n, timer=10.0, processes=()):
    """Wait until at least ``n`` other live processes have opened the queue as readers.

    Counts the reader slots of live processes other than this handle's own.
    Returns the count; raises ``TimeoutError`` if ``timer`` seconds pass
    first (None: wait for ever).  ``processes`` (``multiprocessing.Process``
    objects, or anything with an ``exitcode``) are the processes expected to
    open: if one of them has exited, :class:`ChildExited` (a
    ``ChildProcessError``) is raised at once, naming its exit code.  Use it in
    a parent before the first append, in place of a guessed ``time.sleep``.
    """
    seg = _status.usable(q)
    n = check_int(n, "n", 0, MAX_SLOTS)
    timer = check_timer(timer)
    processes = list(processes)
    deadline = time.monotonic() + timer
    own = q._m.slot if q._m is not None else -1
    while True:
        seq = kernels.seq_load(seg.mem, H_MEMBER_SEQ)
        rows = kernels.members(seg.mem)
        count = sum(
            1
            for slot, token, reader in rows
            if reader == 1 and slot != own and _proc.is_alive(int(token))
        )
        if count >= n:
            return count
        for p in processes:
            if p.exitcode is not None:
                raise ChildExited(_status.child_exited_message(q, p, count, n))
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(_status.readers_timeout_message(q, count, n, timer))
        if now >= q._next_reap:
            q._next_reap = now + q.reap_interval
            reap_dead(seg, q._m.token if q._m else None)
        _futex.wait(seg.addr + 8 * H_MEMBER_SEQ, seq, min(deadline - now, TICK))


def stats(q):
    """A :class:`QueueStats` snapshot, taken without the lock: every member
    with its sender name, pid, liveness, lag in bytes and messages, and
    counters.  Members whose process has ended are reaped first when they can
    be (else they are listed with ``alive=False``).  Works on a corrupt
    queue too (its figures show it)."""
    seg = _status.usable(q)
    got = snapshot(seg, q.name)
    if not all(r.alive for r in got.members):
        try:
            own = q._m.token if q._m is not None else None
            if reap_dead(seg, own, time.monotonic() + _wait.LOCK_PATIENCE):
                got = snapshot(seg, q.name)
        except LockBusy:
            pass  # a stopped lock holder: report them as dead, unreaped
    return got
