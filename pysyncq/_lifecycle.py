"""The life of a queue segment: create, reclaim, attach, release, remove, list.

``State`` is what a handle must give back when it is closed or collected;
``create_segment`` makes a queue (reclaiming a leftover whose processes all ended);
``remove`` and ``list_queues`` serve the command line.
"""

import os
import time

import numpy as np

from . import _load, _proc, _segment, kernels
from ._args import check_name
from ._wait import LockBusy, locked, may_judge, reap_dead, wake, wake_sleepers
from .errors import NotAQueue, QueueCorrupt, QueueExists
from .layout import (
    F_UNLINKED,
    H_DATA_SEQ,
    H_FLAGS,
    H_INSTANCE,
    KIND_BYTES,
    UNLINK,
    segment_bytes,
)
from .screen import screen_table

#: Seconds close() waits for a lock held by a live process before giving up.
CLOSE_PATIENCE = 2.0


class State:
    """What a handle must release when closed or garbage-collected.

    Kept apart from ``PySyncQ`` so that the finalizer holds no reference to
    the handle itself.
    """

    __slots__ = ("seg", "member", "creator", "pid", "__weakref__")

    def __init__(self, seg, creator):
        self.seg = seg
        self.member = None
        self.creator = creator
        self.pid = os.getpid()

    def release(self, patience=None):
        """Leave the queue (unlinking it if this was the last member) and unmap.

        Waits at most ``patience`` seconds for a live lock holder, then unmaps
        all the same and raises ``LockBusy``: the slot stays taken until this
        process has ended and another one reaps it.
        """
        seg = self.seg
        if seg is None or self.pid != os.getpid():
            return
        member, creator = self.member, self.creator
        self.member = None
        self.creator = False
        deadline = time.monotonic() + (CLOSE_PATIENCE if patience is None else patience)
        try:
            if seg.mem is not None and not seg.words[H_FLAGS] & F_UNLINKED:
                reap_dead(seg, own=member.token if member else None, deadline=deadline)
                if member is not None or creator:
                    token = member.token if member else _proc.own_token()
                    slot = member.slot if member else -1
                    args = (slot, token, creator)
                    st = locked(seg, token, kernels.op_leave, args, deadline)
                    wake(seg, st)
                    if creator:
                        wake_sleepers(seg)  # followers (open(follow=True)) look now
                    if st & UNLINK:
                        seg.unlink_if_same()
        finally:
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
            st = locked(seg, token, kernels.op_leave, (-1, token, True), time.monotonic() + 1.0)
        except LockBusy:
            return
        self.creator = False
        wake(seg, st)
        wake_sleepers(seg)
        if st & UNLINK:
            seg.unlink_if_same()


def kernel_calls():
    """``(kernel name, sample arguments)`` for every signature pysyncq calls.

    The sample arguments have exactly the types of the real calls (the
    segment's writable uint8 array, ints, bytes, read-only and writable
    arrays, the screen table), so that a kernel loaded for a sample is the one
    a real call uses.  A kernel or a new argument type added to pysyncq belongs
    here too: ``tests/test_startup.py`` checks that forked children load nothing.
    """
    mem = np.zeros(segment_bytes(64, 1), np.uint8)
    ro = np.frombuffer(b"12345678", np.uint8)  # a read-only body (extend's blob)
    rw = np.zeros(8, np.uint8)
    out = np.zeros(64, np.uint8)
    ends = np.zeros(1, np.int64)
    scr = screen_table([], [])
    t = 1  # a token, a slot, a position, a count: every int is an int64
    return [
        ("ring_format", (mem, t, t, t, t, t, t, t, t)),
        ("header_check", (mem.view(np.int64),)),
        ("flags_set", (mem, t)),
        ("op_open", (mem, t, t, b"w")),
        ("op_append", (mem, t, t, b"", b"", b"", KIND_BYTES)),
        ("op_append", (mem, t, t, b"", b"", ro, KIND_BYTES)),
        ("op_append_array", (mem, t, t, b"", b"", b"", rw, KIND_BYTES)),
        ("op_append_array", (mem, t, t, b"", b"", b"", ro, KIND_BYTES)),
        ("op_extend", (mem, t, t, b"", b"", b"", ends, ends[:0], KIND_BYTES, t, t, t)),
        ("op_pop_many", (mem, t, t, scr, out, out, ends, t)),
        ("op_reserve", (mem, t, t, b"", b"", b"", t, KIND_BYTES)),
        ("record_publish", (mem, t, t, KIND_BYTES)),
        ("pin_set", (mem, t, t)),
        ("op_read_ahead", (mem, t, t, scr, out, np.zeros(5, np.int64), t, t)),
        ("op_commit_to", (mem, t, t, t, t)),
        ("op_adopt", (mem, t, t, t)),
        ("op_peek", (mem, t, t, scr)),
        ("op_commit", (mem, t, t, t, t, False)),
        ("op_pop", (mem, t, t, scr, out, t)),
        ("futex_wait", (mem, t, t, t)),
        ("spin_for", (mem, t, t, t, t)),
        ("wake_now", (mem, t)),
        ("set_waiting", (mem, t, t)),
        ("seq_load", (mem, H_DATA_SEQ)),
        ("members", (mem,)),
        ("slot_word", (t, t)),
        ("lock_prepare_wait", (mem,)),
        ("op_steal", (mem, t, t)),
        ("op_leave", (mem, t, t, t, True)),
    ]


_warmed = False
_all_loaded = False


def warm_up():
    """Make this process ready to call kernels, loading only what it must.

    Called when a handle is made or unpickled.  Each kernel is loaded from
    numba's cache on its first call (:mod:`pysyncq._load`: a few ms each,
    without numba's compiler setup), so a process loads only the kernels it
    uses; here only the two of the hot path (``FAST``).  When the cache lacks
    them (a cold cache; numba's entries for ``kernels.py`` also go stale all
    together when it changes), every kernel is compiled here and now, not
    later in the middle of a reservation or a wait, where seconds of
    compilation would stall the other processes; any later miss, too, has
    them all compiled at once.  A process that forks loads every kernel just
    before its first fork (``os.register_at_fork``), so forked children load
    and compile nothing.
    """
    global _warmed
    if _warmed:
        return
    _find_entry_points()
    os.register_at_fork(before=_before_fork)
    _warmed = True


def load_all():
    """Load every kernel pysyncq calls (compiling those not in the cache)."""
    global _all_loaded
    if not _all_loaded:
        for name, args in kernel_calls():
            _load.ensure(getattr(kernels, name), args)
        _all_loaded = True


def _before_fork():
    # Exceptions from fork hooks are only printed: load what can be loaded,
    # and a child that misses a kernel loads it itself.
    try:
        load_all()
    except Exception:  # noqa: BLE001
        pass


#: The compiled entry points of the two hot kernels, found by ``warm_up``:
#: calling them skips numba's dispatcher (type checks and a lookup, about half
#: the cost of an append or a pop).  Only for calls whose argument types are
#: exactly those of the samples below, which ``PySyncQ.append`` and ``pop``
#: ensure (the segment's uint8 array, ints, bytes; the screen table and
#: buffer): an argument of another type would be misread, not refused.
FAST = {}


def _fast_samples():
    mem = np.zeros(segment_bytes(64, 1), np.uint8)
    return {
        "op_append": (mem, 1, 0, b"", b"", b"", KIND_BYTES),
        "op_pop": (mem, 1, 0, screen_table([], []), np.zeros(8, np.uint8), 0),
        # an array's data as encode_array gives it: a writable flat uint8 view
        "op_append_array": (mem, 1, 0, b"", b"", b"", np.zeros(8, np.uint8), KIND_BYTES),
    }


def fast(name):
    """The entry point of kernel ``name`` for ``FAST``'s sample types, found
    (and loaded) on first use: for kernels a process may never call."""
    entry = FAST.get(name)
    if entry is None:
        _find_entry_points((name,))
        entry = FAST[name]
    return entry


def _find_entry_points(names=("op_append", "op_pop")):
    samples = _fast_samples()
    for name in names:
        args = samples[name]
        disp = getattr(kernels, name)
        if not _load.is_kernel(disp):  # NUMBA_DISABLE_JIT: plain functions
            FAST[name] = disp
            continue
        entry = _load.loaded(disp, args) or _load.load(disp, args)
        if entry is None:  # not in the cache: compile everything now
            load_all()
            entry = _load.ensure(disp, args)
        FAST[name] = entry


def create_segment(name, capacity, nslots):
    """Create queue ``name``, reclaiming a leftover whose processes all ended."""
    token = _proc.own_token()
    for _ in range(3):
        try:
            return _segment.Segment.create(name, capacity, nslots, token)
        except FileExistsError:
            pass
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


# Every kernel's first call loads it from numba's cache without numba's compiler
# setup (pysyncq._load), also for calls made before any handle exists; a kernel
# missing from the cache has them all compiled at once.
_load.install(kernels, on_miss=load_all)
