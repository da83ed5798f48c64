"""The life of a queue segment: create, reclaim, attach, release, remove, list.

``State`` is what a handle must give back when it is closed or collected;
``create_segment`` makes a queue (reclaiming a leftover whose processes all ended);
``remove`` and ``list_queues`` serve the command line.
"""

import multiprocessing.util
import os
import threading
import time

from . import _proc, _segment, _wait, _watch, kernels
from ._args import check_name
from ._wait import LockBusy, locked, may_judge, reap_dead, wake, wake_sleepers
from .errors import NotAQueue, QueueCorrupt, QueueExists
from .layout import (
    CODE_MASK,
    F_UNLINKED,
    H_FLAGS,
    H_INSTANCE,
    OK,
    S_FLAGS,
    SF_DURABLE,
    UNLINK,
)

#: Seconds close() waits for a lock held by a live process before giving up.
CLOSE_PATIENCE = 2.0


class State:
    """What a handle must release when closed or garbage-collected.

    Kept apart from ``PySyncQ`` so that the finalizer holds no reference to
    the handle itself.
    """

    __slots__ = ("seg", "member", "creator", "pid", "lingering", "at_exit", "lock", "__weakref__")

    def __init__(self, seg, creator):
        self.seg = seg
        self.member = None
        self.creator = creator
        self.pid = os.getpid()
        self.lingering = False  # closed, but the slot pins arrays of views
        self.at_exit = None  # then: the exit hook that frees it at the latest
        # Reentrant: the last view's finalizer may run inside release().
        self.lock = threading.RLock()

    def release(self, patience=None):
        """Leave the queue (unlinking it if this was the last member) and unmap.

        Waits at most ``patience`` seconds for a live lock holder, then unmaps
        all the same and raises ``LockBusy``: the slot stays taken until this
        process has ended and another one reaps it.

        While arrays of this member's views are alive (``member.views``) the
        slot stays, as a pin of their records and no longer a reader, until
        the last of them is collected (:meth:`release_lingering`), so that
        they never show another message's bytes.
        """
        with self.lock:
            self._release(patience)

    def _release(self, patience):
        seg = self.seg
        if seg is None or self.pid != os.getpid() or self.lingering:
            return
        member, creator = self.member, self.creator
        self.member = None
        self.creator = False
        deadline = time.monotonic() + (CLOSE_PATIENCE if patience is None else patience)
        if member is not None and member.views and self._linger(seg, member, creator, deadline):
            return
        try:
            if seg.mem is not None and not seg.words[H_FLAGS] & F_UNLINKED:
                reap_dead(seg, own=member.token if member else None, deadline=deadline)
                if member is not None or creator:
                    token = member.token if member else _proc.own_token()
                    _leave(seg, token, member.slot if member else -1, creator, deadline)
        finally:
            self.seg = None
            seg.close()
            _watch.reap()  # the watchers of queues gone before (this one's ends later)

    def _linger(self, seg, member, creator, deadline):
        """Keep ``member``'s slot as the pin of its views' arrays; drop the
        creator's hold.  True if it lingers (else the caller leaves)."""
        if seg.mem is None or seg.words[H_FLAGS] & F_UNLINKED:
            return False
        token = member.token
        try:
            st = locked(seg, token, kernels.op_linger, (member.slot, min(member.views)), deadline)
        except LockBusy:
            return False  # leave as usual, which raises it
        wake(seg, st)
        if st & CODE_MASK != OK:
            return False  # revoked, or a corrupt queue: leave as usual
        if creator:
            self.creator = True  # dropped now, or with the slot if the lock is busy
            try:
                _leave(seg, token, -1, True, deadline)
                self.creator = False
            except LockBusy:
                pass
        self.member = member
        self.lingering = True
        member.linger = self
        # At exit the arrays are gone: leave then at the latest.
        self.at_exit = multiprocessing.util.Finalize(self, self.release_lingering, exitpriority=-10)
        if not member.views:  # the last one was collected meanwhile
            self.release_lingering()
        return True

    def release_lingering(self):
        """Free the slot kept for the arrays of views (their last one is gone,
        or the process exits), unlinking the queue if it was the last member,
        and unmap.  Leaves the slot for later if a live process holds the
        lock longer than ``LOCK_PATIENCE``."""
        with self.lock:
            seg, member = self.seg, self.member
            if not self.lingering or seg is None or self.pid != os.getpid():
                return
            try:
                if seg.mem is not None:
                    deadline = time.monotonic() + _wait.LOCK_PATIENCE
                    _leave(seg, member.token, member.slot, self.creator, deadline)
            except LockBusy:
                return  # at exit, or by a reap once this process has ended
            self.lingering = False
            self.member = None
            self.creator = False
            member.linger = None
            hook, self.at_exit = self.at_exit, None
            if hook is not None:
                hook.cancel()
            self.seg = None
            seg.close()

    def leave_creator(self):
        """Drop only the creator's hold, keeping this process's slot.

        Runs at interpreter exit before ``multiprocessing`` joins the children,
        so that children following the creator (``open(follow=True)``) stop
        instead of being waited for in vain.  Nothing is done while no slot is
        open: then the hold keeps the queue for children still starting.
        """
        seg = self.seg
        if seg is None or self.pid != os.getpid() or not self.creator or seg.mem is None:
            return
        if seg.words[H_FLAGS] & F_UNLINKED or not (kernels.members(seg.mem)[:, 0] >= 0).any():
            return
        token = _proc.own_token()
        try:
            _leave(seg, token, -1, True, time.monotonic() + 1.0)
        except LockBusy:
            return
        self.creator = False


def _leave(seg, token, slot, creator, deadline):
    """Give back ``slot`` (``-1``: none) of member ``token`` and, with
    ``creator``, the creator's hold (``op_leave``), then wake whoever must
    look (followers too, when the creator left) and unlink the name if no
    member is left.  Raises ``LockBusy`` past ``deadline``."""
    st = locked(seg, token, kernels.op_leave, (slot, token, creator), deadline)
    wake(seg, st)
    if creator:
        wake_sleepers(seg)  # followers (open(follow=True)) look now
    if st & UNLINK:
        seg.unlink_if_same()
    elif may_judge(seg) and _only_dead_holds(seg):
        # Only the holds of dead processes are left (a creator killed by a
        # signal, a kernel restart, members killed): nobody will close them.
        kernels.flags_set(seg.mem, F_UNLINKED)
        seg.unlink_if_same()


def _only_dead_holds(seg):
    """Whether every process holding ``seg`` (members, creator) has ended
    and no durable slot waits for its process's next run (open(durable=True))."""
    w = seg.words
    for slot, token, _ in kernels.members(seg.mem):
        if slot >= 0 and w[kernels.slot_word(int(slot), S_FLAGS)] & SF_DURABLE:
            return False
        if _proc.is_alive(int(token)):
            return False
    return True


def create_segment(name, capacity, nslots):
    """Create queue ``name``, reclaiming a leftover whose processes all ended."""
    token = _proc.own_token()
    for _ in range(3):
        try:
            seg = _segment.Segment.create(name, capacity, nslots, token)
        except FileExistsError:
            pass
        else:
            _watch.start(name, seg.instance)
            return seg
        header = _segment.read_header(name)
        if header is None:
            raise QueueExists(
                f"shared memory {name!r} exists and is not a pysyncq queue; choose another name"
            )
        holders = live_holders(name)
        if holders:
            if _proc.own_token() in holders:
                raise QueueExists(
                    f"a pysyncq queue named {name!r} is in use by a live process: this process "
                    f"(pid {os.getpid()}) itself, through a handle it still holds (from an "
                    f"earlier run of this code?); call close() on that handle first, or attach "
                    f"to the queue with PySyncQ({name!r}, create=False)"
                )
            raise QueueExists(
                f"a pysyncq queue named {name!r} is in use by a live process; choose another "
                f"name, or attach to it with create=False"
            )
        # Only the leftover judged stale: another process may have reclaimed
        # the name meanwhile.
        _segment.unlink_instance(name, header[H_INSTANCE])
    raise QueueExists(f"could not create queue {name!r}: its name keeps being taken")


def reclaim_abandoned(name, instance):
    """For the watcher (``_watcher.py``): free the holds of the ended processes
    of queue ``name`` under its lock (``reap_dead``), which unlinks the name
    with the last of them; only while ``name`` is still the segment
    ``instance``.  False when this process may not judge (another namespace)
    or the queue is corrupt: then the watcher leaves it to ``python -m
    pysyncq clean``."""
    try:
        seg = _segment.Segment.attach(name)
    except (FileNotFoundError, NotAQueue):
        return True
    except QueueCorrupt:
        return False
    try:
        if seg.instance != instance or seg.words[H_FLAGS] & F_UNLINKED:
            return True
        if not may_judge(seg):
            return False
        reap_dead(seg, deadline=time.monotonic() + CLOSE_PATIENCE)
        return True
    except LockBusy:
        return True  # a live process holds the lock: it is not abandoned
    finally:
        seg.close()


def queue_in_use(name):
    """True if queue ``name`` exists and a live process has it open (or created it)."""
    return bool(live_holders(name))


def live_holders(name):
    """The tokens of the live processes holding queue ``name`` (members and
    creator); ``{0}`` when they cannot be judged (another namespace)."""
    try:
        seg = _segment.Segment.attach(name)
    except (FileNotFoundError, NotAQueue):
        return set()
    except QueueCorrupt:
        # Its members cannot be trusted: count it as in use, so that only
        # remove(name, force=True) removes it.
        return {0}
    try:
        tokens = {int(t) for t in kernels.members(seg.mem)[:, 1]}
        if not may_judge(seg):
            return tokens or {0}
        return {t for t in tokens if _proc.is_alive(t)}
    finally:
        seg.close()


def revoke_all(seg):
    """For ``remove(force=True)``: mark the segment unlinked and free every
    slot and the creator's hold, so that each handle still using it gets
    ``NOT_MEMBER`` on its next call (and ``QueueClosed``), and wake sleepers to
    find out.  A live process holding the lock for over a second is not
    waited for: then only the flag tells the handles."""
    kernels.flags_set(seg.mem, F_UNLINKED)
    me = _proc.own_token()
    deadline = time.monotonic() + 1.0
    try:
        for slot, token, _ in kernels.members(seg.mem):
            args = (int(slot), int(token), slot < 0)
            wake(seg, locked(seg, me, kernels.op_leave, args, deadline))
    except LockBusy:
        pass
    wake_sleepers(seg)


def remove(name, force=False):
    """Remove queue ``name`` left behind by processes that all ended.

    Returns True if it was removed, False if there was no such queue.  Raises
    :class:`QueueExists` if a live process still uses it, unless ``force``:
    then every handle still using it gets ``QueueClosed`` on its next call.
    Raises :class:`NotAQueue` for shared memory that is not a pysyncq queue.
    """
    name = check_name(name)
    if _segment.read_header(name) is None:
        if force and _segment.lost_its_magic(name):
            # A queue whose magic word was overwritten: the rest of its header
            # is ours, so a forced removal may take it.
            _segment.unlink(name)
            return True
        try:
            _segment.Segment.attach(name).close()
        except FileNotFoundError:
            return False
        raise NotAQueue(f"shared memory {name!r} is not a pysyncq queue; not removing it")
    header = _segment.read_header(name)
    if queue_in_use(name):
        if not force:
            raise QueueExists(f"queue {name!r} is in use by a live process; not removing it")
        try:
            seg = _segment.Segment.attach(name)
        except (FileNotFoundError, NotAQueue, QueueCorrupt):
            seg = None
        if seg is not None:
            try:
                if seg.instance == header[H_INSTANCE]:
                    revoke_all(seg)
            finally:
                seg.close()
    _segment.unlink_instance(name, header[H_INSTANCE])
    return True


def list_queues():
    """``(name, in_use)`` for every pysyncq queue in /dev/shm."""
    return [(n, queue_in_use(n)) for n in _segment.list_queues()]
