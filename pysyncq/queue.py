"""``PySyncQ``: the broadcast queue as Python sees it.

The class is a facade: its public methods are the functions of the modules
that do the work, bound here as class attributes (so a call gains no Python
frame).  The rooms, from the bottom up:

* :mod:`pysyncq.layout` (the segment's format and the publication protocol),
  :mod:`~pysyncq.errors`, :mod:`~pysyncq._args`, :mod:`~pysyncq.codec`,
  :mod:`~pysyncq.screen`: facts, no numba;
* :mod:`pysyncq.kernels`: the numba kernels, one call per operation, each
  taking the queue lock once (or none: pops move their own cursor) and
  releasing it before it returns, so the lock is never held while Python
  runs;
* :mod:`~pysyncq._segment`, :mod:`~pysyncq._lifecycle`, :mod:`~pysyncq._wait`,
  :mod:`~pysyncq._status`, :mod:`~pysyncq.stats`: one segment: mapping it,
  its life, waiting for its lock and futex words, the one map from status
  codes to exceptions;
* :mod:`~pysyncq._handle`, :mod:`~pysyncq._retry`, :mod:`~pysyncq._membership`,
  :mod:`~pysyncq._write`, :mod:`~pysyncq._read`, :mod:`~pysyncq._outside`,
  :mod:`~pysyncq.views`, :mod:`~pysyncq.batch`, :mod:`~pysyncq.aio`,
  :mod:`~pysyncq._relay`: a handle's parts;
* this module: the handle itself, its creation and pickling.
"""

import multiprocessing
import threading

from . import (
    _handle,
    _inbox,
    _jitside,
    _membership,
    _outside,
    _proc,
    _read,
    _segment,
    _write,
    aio,
    batch,
    kernels,
    views,
)
from ._args import check_int, check_name
from ._lifecycle import State, create_segment
from ._load import warm_up
from .errors import QueueClosed
from .layout import F_FOREIGN_NS, H_PIDNS, H_TIMENS, max_payload
from .screen import Screened, ScreenSet, as_bytes

#: Default usable capacity of the ring, in bytes.
DEFAULT_SIZE = 1 << 20
#: Smallest ring accepted: a few small messages.
MIN_SIZE = 64
#: Largest ring accepted (1 TiB); the segment must also fit in /dev/shm.
MAX_SIZE = 1 << 40
#: Default number of processes that can have the queue open at once.
DEFAULT_SLOTS = 128
MAX_SLOTS = 1 << 16
#: Seconds between checks for dead members while the queue is full.
REAP_INTERVAL = 1.0
#: Default of ``PySyncQ.spin``: of the order of a futex wake-up, so that a
#: message that comes while the reader watches costs far less than a sleep.
SPIN = 20e-6


def _attach(name, instance, start, scrnsend, scrntype, inbox_limit=None):
    """Unpickle a handle: attach to the same queue by name, unopened."""
    warm_up()
    gone = QueueClosed(
        f"queue {name!r} no longer exists: its last process closed it before this one "
        f"attached; keep one process open until all have called open()"
    )
    try:
        seg = _segment.Segment.attach(name)
    except FileNotFoundError:
        raise gone from None
    if seg.instance != instance:  # the name now belongs to a newer queue
        seg.close()
        raise gone
    q = PySyncQ.__new__(PySyncQ)
    q._setup(name, seg, start, creator=False)
    q.scrnsend.update(scrnsend)
    q.scrntype.update(scrntype)
    if inbox_limit is not None:
        q.inbox_limit = inbox_limit
    return q


class PySyncQ(Screened):
    """A broadcast message queue in shared memory.

    ``PySyncQ(name, create=True, size=1 MiB, start=None, *, slots=128)``

    With ``create=True`` (the parent) a new queue is made; ``name`` None picks
    a unique name.  ``size`` is the usable capacity of the ring in bytes,
    rounded up to a multiple of 8; the segment is larger by a fixed
    ``HEADER_BYTES + SLOT_BYTES * slots`` bytes (:mod:`pysyncq.layout`).
    ``slots`` bounds how many processes can have the queue open at once.  A
    leftover queue of the same name whose processes have all ended is
    reclaimed; a live one raises :class:`QueueExists`.  With ``create=False``
    an existing queue is attached.  ``start`` is accepted for compatibility
    with pysyncq 0.0.1 and otherwise unused: the handle works with every
    start method, passed to children as a ``Process`` argument (forked
    children inherit it, spawned ones re-attach by name).

    Each process then calls :meth:`open` once, appends and pops, and calls
    :meth:`close`; the last process to close removes the shared memory.
    """

    def __init__(
        self, name=None, create=True, size=DEFAULT_SIZE, start=None, *, slots=DEFAULT_SLOTS
    ):
        name = check_name(name)
        if start is not None and start not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start must be None or one of {multiprocessing.get_all_start_methods()}, "
                f"not {start!r}"
            )
        warm_up()  # before the segment exists: a Ctrl-C here leaves nothing behind
        if create:
            size = check_int(size, "size", MIN_SIZE, MAX_SIZE)
            slots = check_int(slots, "slots", 1, MAX_SLOTS)
            seg = create_segment(name, (size + 7) & ~7, slots)
        else:
            try:
                seg = _segment.Segment.attach(name)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"no pysyncq queue named {name!r}: create it first with create=True"
                ) from None
        try:
            self._setup(name, seg, start, creator=create)
        except BaseException:
            if create:
                seg.unlink_if_same()
            seg.close()
            raise

    def _setup(self, name, seg, start, creator):
        warm_up()
        _write.use_entry_points()
        _read.use_entry_points()
        self.name = name
        self.start = start
        self._seg = seg
        self._mem = seg.mem
        self._state = State(seg, creator)
        self._finalizer = None
        self._exit_hook = None
        self._m = None
        # The screens cache (see _handle.screens and _handle.skips).
        self._changes = [0]
        self._scrnsend = ScreenSet(_changes=self._changes)
        self._scrntype = ScreenSet(_changes=self._changes)
        self._scr = None
        self._scr_at = -1
        self._skip_own = False
        self._skip_types = frozenset()
        self._skip_at = -1
        self._skip_seen = -1
        #: Processes every blocking call of this handle watches when it is
        #: given no ``processes=`` (a worker group sets them).
        self._procs = ()
        self._auto_screen = None  # the sender open(filtself=True) added, if it did
        self._next_reap = 0.0
        self._hlock = threading.Lock()  # open() and close() one thread at a time
        self.reap_interval = REAP_INTERVAL
        #: Bodies this large or larger are copied outside the queue lock: by
        #: append, and by pop (for a pop: sender, type and body together, when
        #: they do not fit the handle's copy buffer, which pop itself grows
        #: only for smaller records).
        self.copy_outside = _outside.COPY_OUTSIDE
        #: Seconds a blocking pop that finds nothing watches for a message
        #: before it sleeps, when the queue has no more members than this
        #: process has CPUs (0: never; it always sleeps at once).
        self.spin = SPIN
        #: The most bytes this handle's inbox holds (0: no inbox): see
        #: :mod:`pysyncq._inbox`.
        self.inbox_limit = max(_inbox.INBOX_LIMIT, seg.capacity)
        self._spin_ok = True  # the last spin_for watched (False: too many members)
        if (int(seg.words[H_PIDNS]), int(seg.words[H_TIMENS])) != _proc.namespaces():
            # Pids from another namespace mean nothing here: say so before this
            # process ever takes the lock, so that nobody judges it by its pid.
            kernels.flags_set(seg.mem, F_FOREIGN_NS)
        if creator:
            _membership.arm_finalizer(self)
        _handle.live.add(self)

    def _forget_parent(self):
        """In a forked child: the parent's membership and hooks are not ours."""
        self._m = None
        self._procs = ()
        self._exit_hook = None
        self._drop_auto_screen()
        self._finalizer = None
        state = self._state
        if state.seg is not None:
            self._state = State(state.seg, False)

    def __reduce__(self):
        if self._state.seg is None:
            raise QueueClosed(f"queue {self.name!r} is closed and cannot be sent to a process")
        args = (self.name, self._seg.instance, self.start)
        auto = self._auto_screen
        scrnsend = [s for s in self._scrnsend if auto is None or as_bytes(s) != auto]
        return (_attach, (*args, scrnsend, list(self._scrntype), self.inbox_limit))

    def _drop_auto_screen(self):
        """Forget the sender open(filtself=True) screened: it is this process's
        own, not that of a process the handle is handed to."""
        if self._auto_screen is not None:
            self._scrnsend.discard(self._auto_screen)
            self._auto_screen = None

    # -- Membership (pysyncq._membership) -------------------------------------
    open = _membership.open
    close = _membership.close
    wait_for_readers = _membership.wait_for_readers
    stats = _membership.stats

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- Messages (pysyncq._write, _read, views, batch, aio) ------------------
    append = _write.append
    append_array = _write.append_array
    loan = views.loan
    extend = batch.extend
    pop = _read.pop
    pop_view = views.pop_view
    pop_many = batch.pop_many
    __call__ = _read.call
    __iter__ = _read.iterate
    apop = aio.apop
    aappend = aio.aappend
    aappend_array = aio.aappend_array
    aiter = aio.aiter
    _make_room = _read.drain_own  # a blocked write's own unread messages: the inbox

    # -- From nopython code (pysyncq.jit) ----------------------------------------
    jit_handle = _jitside.make
    raise_for = _jitside.raise_for

    # -- Inspection -------------------------------------------------------------

    @property
    def closed(self):
        return self._state.seg is None

    @property
    def sender(self):
        """The sender name given to :meth:`open` (None before)."""
        return self._m.sender if self._m is not None else None

    @property
    def size(self):
        """Usable capacity of the ring in bytes."""
        return self._seg.capacity

    @property
    def max_message(self):
        """The largest ``len(sender) + len(type) + len(body)`` that can ever fit."""
        return max_payload(self._seg.capacity)

    def __repr__(self):
        state = "closed" if self.closed else ("open" if self._m is not None else "not opened")
        sender = f", sender={self._m.sender!r}" if self._m is not None else ""
        return f"PySyncQ(name={self.name!r}, size={self._seg.capacity}{sender}, {state})"
