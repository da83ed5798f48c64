"""``PySyncQ``: the broadcast queue as Python sees it.

How the pieces fit
------------------
The shared memory (see :mod:`pysyncq.layout`) holds the ring, a table with one
slot per process that opened the queue, and a lock word.  Every operation on
the hot path is one call of an ``op_*`` kernel (:mod:`pysyncq.kernels`), which
tries the lock once, does its work and releases the lock before returning.  So
the lock is never held while Python runs: an exception, a Ctrl-C or a numba
compilation can never leave it taken, and only a process killed inside a
kernel can.  ``pop`` takes no lock at all: it moves its own cursor with one
compare-and-swap (``kernels.pop_free``), so readers never wait for writers or
for each other.

Everything that waits happens outside the lock (the lock itself, sleeping
and reaping in :mod:`pysyncq._wait`; a segment's life in
:mod:`pysyncq._lifecycle`):

* No message (``pop(block=True)``): the reader watches ``H_DATA_SEQ`` for
  up to ``spin`` seconds (only with no more members than CPUs), looking
  again whenever it moves; then a pop kernel that finds nothing sets this
  slot's ``W_DATA`` bit, and the reader sleeps on the word.  (With more
  members than CPUs the first pop kernel sets the bit and there is no
  watching.)
  An append bumps that word and wakes the sleepers only if some slot has the
  bit, so nobody pays for a wake when nobody sleeps, and the writer never
  waits for the sleepers (a killed sleeper costs nothing).
* No space (``append(block=True)``): raise the slot's ``W_SPACE`` bit, look
  again, then sleep on ``H_SPACE_SEQ``, which a pop that moves its cursor
  bumps (with a wake) when it sees a ``W_SPACE`` bit.  While waiting, and whenever the
  queue is found full, the members are checked (at most every
  ``reap_interval`` seconds) and the slots of dead processes are freed.

A wait never sleeps longer than a short tick, so any wake that could be missed
(a process killed at the wrong moment) costs a tick of latency, never a hang.
"""

import math
import mmap
import multiprocessing
import multiprocessing.util
import os
import signal
import threading
import time
import warnings
import weakref

import numpy as np

from . import _futex, _lifecycle, _proc, _segment, _wait, batch, kernels, views
from ._lifecycle import (  # noqa: F401 - public names
    State,
    check_int,
    check_name,
    create_segment,
    warm_up,
)
from ._wait import (
    TICK,
    WAKE_BITS,
    LockBusy,
    check_timer,
    locked,
    reap_dead,
    wait_bits,
    wake,
)
from .codec import decode_at, encode_array
from .errors import (
    ChildExited,
    MessageTooLarge,
    NotOpened,
    QueueClosed,
    QueueCorrupt,
    QueueFull,
    QueueLocked,
    TooManyProcesses,
)
from .layout import (
    APPEND_SKIP,
    BUSY,
    CODE_MASK,
    CORRUPT,
    EMPTY,
    F_FOREIGN_NS,
    F_UNLINKED,
    H_CREATOR,
    H_DATA_SEQ,
    H_FLAGS,
    H_HEAD,
    H_MEMBER_SEQ,
    H_PIDNS,
    H_SPACE_SEQ,
    H_TIMENS,
    H_WRITE_POS,
    HEADER_BYTES,
    HEADER_WORDS,
    KIND_ARRAY,
    KIND_BYTES,
    KIND_STR,
    MAX_NAME_BYTES,
    NEED_SPACE,
    NO_SLOT,
    NOT_MEMBER,
    OK,
    OPEN_DURABLE,
    OPEN_READER,
    PENDING,
    S_FLAGS,
    SEQ_SHIFT,
    SF_DURABLE,
    TOO_LARGE,
    W_DATA,
    W_SPACE,
    max_payload,
    record_bytes,
)
from .screen import Screened, ScreenSet, as_bytes, screen_table
from .stats import QueueStats, ReaderStats, slot_name_matches, snapshot  # noqa: F401

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
#: Seconds open() keeps looking for a free slot (one held by a process that
#: is still dying) before it raises TooManyProcesses.
OPEN_GRACE = 0.5
#: Seconds open() waits for a lock held by a live process.
OPEN_PATIENCE = 5.0
#: Seconds between looks at the creator by a handle opened with follow=True.
FOLLOW_INTERVAL = 0.05
#: Default of ``PySyncQ.spin``: a wake-up through the futex costs about 10 us
#: here, a message that comes within this while the reader watches far less.
SPIN = 20e-6

_live = weakref.WeakSet()
_CLOSED_MEM = np.zeros(HEADER_BYTES, np.uint8)
_op_pop = kernels.op_pop
_op_append = kernels.op_append


def _forget_after_fork():
    # A forked child is a new process: the parent's membership and creator
    # hold are not its own.  It keeps the mapping and may open() afresh.
    for q in list(_live):
        q._forget_parent()


os.register_at_fork(after_in_child=_forget_after_fork)


class _Member:
    """This process's open handle: its slot and private buffers."""

    __slots__ = (
        "slot",
        "token",
        "sender",
        "sender_bytes",
        "reader",
        "out",
        "out_mm",
        "lock",
        "waiting",
        "idle",
        "waits",
        "lens",
        "pins",
        "unpins",
        "viewing",
        "follow",
        "follow_next",
    )

    def __init__(self, slot, token, sender, sender_bytes, reader, follow=0):
        self.slot = slot
        self.token = token
        self.sender = sender
        self.sender_bytes = sender_bytes
        self.reader = reader
        self.lock = threading.Lock()  # guards out/out_mm and waiting between threads
        self.waiting = [0] * 5  # sleepers of this handle by wait bit (W_DATA..W_ASYNC)
        self.idle = 0  # wait_bits(waiting): what the slot's S_WAIT must hold
        self.waits = (0, W_DATA << 8)  # op_pop's waits for block False, True
        self.lens = None  # pop_many's buffers (pysyncq.batch), made on first use
        self.pins = []  # positions this handle pins (views, reservations)
        self.unpins = []  # pins of views whose arrays were collected since
        self.viewing = False  # a pop_view is open
        self.follow = follow  # open(follow=True): the creator's token, else 0
        self.follow_next = 0.0  # when to look at the creator next
        self.grow(4096)

    def wait_add(self, bit, n):
        """Count ``n`` more (or fewer) sleepers of this handle on ``bit``.
        With ``self.lock``; the caller stores the new bits (``self.idle``),
        or a kernel does."""
        self.waiting[bit] += n
        idle = self.idle = wait_bits(self.waiting)
        self.waits = (idle * 257, idle | ((idle | W_DATA) << 8))

    def grow(self, n):
        size = 1 << max(12, (n - 1).bit_length())
        self.out_mm = mmap.mmap(-1, size)
        self.out = np.frombuffer(self.out_mm, np.uint8)


_warned_array = False


def _warn_array_as_text():
    global _warned_array
    if not _warned_array:
        _warned_array = True
        warnings.warn(
            "a numpy array was given to append(), which sends str(obj) as in pysyncq 0.0.1 "
            "(numpy shortens large arrays with '...'); to send the array itself, with its "
            "dtype and shape, use q.append_array(mtype, arr)",
            UserWarning,
            stacklevel=3,
        )


def msgtype_bytes(mtype):
    t = mtype.encode() if type(mtype) is str else as_bytes(mtype)
    if len(t) > MAX_NAME_BYTES:
        raise ValueError(f"msgtype is {len(t)} bytes long; the limit is {MAX_NAME_BYTES}")
    return t


def _encode_body(msg):
    """``(bytes, kind)`` of a message body, by :meth:`PySyncQ.append`'s rules."""
    if type(msg) is str:
        return msg.encode(), KIND_STR
    if type(msg) is bytes:
        return msg, KIND_BYTES
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return bytes(msg), KIND_BYTES
    if isinstance(msg, np.ndarray):
        _warn_array_as_text()
    return str(msg).encode(), KIND_STR


def _fields(m, slen, tlen, blen, kind):
    """``(sender, type, body, kind)`` of a record the kernel copied into
    ``m.out`` (an array body decoded into a private array).  With ``m.lock``."""
    out = m.out_mm
    a = slen + tlen
    if kind & 0xFF == KIND_ARRAY:
        body = decode_at(out, a, blen)
    else:
        body = out[a : a + blen]
    return out[:slen], out[slen:a], body, kind


def _message(s, t, b, decode):
    """The tuple ``pop`` returns for fields ``s``, ``t`` (bytes) and body ``b``
    (bytes, or an array): decoded from UTF-8 where they are valid UTF-8."""
    if decode:
        if type(b) is not bytes:
            return (_decode(s), _decode(t), b)
        try:
            return (s.decode(), t.decode(), b.decode())
        except UnicodeDecodeError:
            return (_decode(s), _decode(t), _decode(b))
    return (s, t, b)


def _decode(b):
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b  # raw bytes rather than losing the message


def _attach(name, instance, start, scrnsend, scrntype):
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
    return q


class PySyncQ(Screened):
    """A broadcast message queue in shared memory.

    ``PySyncQ(name, create=True, size=1 MiB, start=None, *, slots=128)``

    With ``create=True`` (the parent) a new queue is made; ``name`` None picks
    a unique name.  ``size`` is the usable capacity of the ring in bytes,
    rounded up to a multiple of 8; the segment is larger by a fixed
    ``256 + 128 * slots`` bytes.  ``slots`` bounds how many processes can have
    the queue open at once.  A leftover queue of the same name whose processes
    have all ended is reclaimed; a live one raises :class:`QueueExists`.  With
    ``create=False`` an existing queue is attached.  ``start`` is accepted for
    compatibility with pysyncq 0.0.1 and otherwise unused: the handle works with
    every start method, passed to children as a ``Process`` argument (forked
    children inherit it, spawned ones re-attach by name).

    Each process then calls :meth:`open` once, appends and pops, and calls
    :meth:`close`; the last process to close removes the shared memory.
    """

    # -- Creation, pickling, lifetime ---------------------------------------

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
        global _op_append, _op_pop
        warm_up()
        _op_append = _lifecycle.FAST.get("op_append", kernels.op_append)
        _op_pop = _lifecycle.FAST.get("op_pop", kernels.op_pop)
        self.name = name
        self.start = start
        self._seg = seg
        self._mem = seg.mem
        self._state = State(seg, creator)
        self._finalizer = None
        self._exit_hook = None
        self._m = None
        self._changes = [0]
        self._scrnsend = ScreenSet(_changes=self._changes)
        self._scrntype = ScreenSet(_changes=self._changes)
        self._scr = None
        self._scr_at = -1
        self._skip_own = False
        self._skip_types = frozenset()
        self._skip_at = -1
        self._auto_screen = None  # the sender open(filtself=True) added, if it did
        self._next_reap = 0.0
        self._hlock = threading.Lock()  # open() and close() one thread at a time
        self.reap_interval = REAP_INTERVAL
        #: Bodies this large or larger are copied outside the queue lock: by
        #: append, and by pop (for a pop: sender, type and body together, when
        #: they do not fit the handle's copy buffer, which pop itself grows
        #: only for smaller records).
        self.copy_outside = views.COPY_OUTSIDE
        #: Seconds a blocking pop that finds nothing watches for a message
        #: before it sleeps, when the queue has no more members than this
        #: process has CPUs (0: never; it always sleeps at once).
        self.spin = SPIN
        self._spin_ok = True  # the last spin_for watched (False: too many members)
        if (int(seg.words[H_PIDNS]), int(seg.words[H_TIMENS])) != _proc.namespaces():
            # Pids from another namespace mean nothing here: say so before this
            # process ever takes the lock, so that nobody judges it by its pid.
            kernels.flags_set(seg.mem, F_FOREIGN_NS)
        if creator:
            self._arm_finalizer()
        _live.add(self)

    def _arm_finalizer(self):
        if self._finalizer is None:
            # Runs at garbage collection, at the end of a multiprocessing child
            # and at interpreter exit (after the children are joined).
            self._finalizer = multiprocessing.util.Finalize(
                self, self._state.release, exitpriority=-10
            )
        if self._exit_hook is None and self._state.creator:
            # Before multiprocessing joins the children at exit (priority >= 0
            # runs first): let children that follow the creator stop.
            self._exit_hook = multiprocessing.util.Finalize(
                self, self._state.leave_creator, exitpriority=0
            )

    def _forget_parent(self):
        self._m = None
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
        return (_attach, (*args, scrnsend, list(self._scrntype)))

    def _drop_auto_screen(self):
        """Forget the sender open(filtself=True) screened: it is this process's
        own, not that of a process the handle is handed to."""
        if self._auto_screen is not None:
            self._scrnsend.discard(self._auto_screen)
            self._auto_screen = None

    def close(self):
        """Leave the queue and release this process's resources.

        The messages this process had not read are released.  The last process
        to close (or the creator's exit, if it never opened and everyone else
        has closed) removes the shared memory.  Closing twice does nothing.
        """
        with self._hlock:
            m, self._m = self._m, None
            fin, self._finalizer = self._finalizer, None
            if fin is not None:
                fin.cancel()
            hook, self._exit_hook = self._exit_hook, None
            if hook is not None:
                hook.cancel()
            try:
                if m is None:
                    self._state.release()
                else:
                    # No kernel of another thread's pop or sleep runs on the
                    # slot while it is given back.
                    with m.lock:
                        self._state.release()
            except LockBusy as e:
                raise QueueLocked(
                    f"queue {self.name!r} is locked by process {e.pid}, which is alive but did "
                    f"not release the lock within {_lifecycle.CLOSE_PATIENCE} s (stopped?); this "
                    f"handle is closed, and its slot will be freed once this process has ended"
                ) from None
            finally:
                # Another thread may be between its checks and a kernel call:
                # give it a blank header, on which every kernel fails cleanly.
                self._mem = _CLOSED_MEM

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self):
        return self._state.seg is None

    def _usable(self):
        if self._state.seg is None:
            raise QueueClosed(
                f"this handle of queue {self.name!r} was closed and cannot be used or opened "
                f"again; for a new membership make a new handle: "
                f"PySyncQ({self.name!r}, create=False).open(...)"
            )
        seg = self._seg
        w = seg.words
        # F_UNLINKED revokes every handle, but only in a header that is
        # otherwise sound: a corrupt one that happens to have the bit set
        # gets QueueCorrupt from the kernels (and stats() still works).
        if w[H_FLAGS] & F_UNLINKED and not _segment.header_problem(
            tuple(int(x) for x in w[:HEADER_WORDS]), len(seg.mem)
        ):
            self._revoked()
        return seg

    # -- Membership ----------------------------------------------------------

    def open(self, sender=None, filtself=True, *, reader=True, follow=False, durable=False):
        """Register this process with the queue; return the handle.

        ``sender`` (str or bytes, default the process id) names this process in
        every message it appends; ``filtself`` adds it to :attr:`scrnsend`, so
        the process does not read its own messages.  With ``reader=False`` the
        process only writes: it holds no read cursor and never pins messages.
        A reader sees every message appended after its ``open()``.

        With ``follow=True`` this handle follows the process that created the
        queue: once that process has closed the queue or died, a ``pop`` that
        finds nothing to read and an ``append`` that finds the queue full raise
        :class:`QueueClosed` (at once, or within ``TICK`` seconds of blocking),
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
        with self._hlock:
            return self._open(sender, filtself, reader, follow, durable)

    def _open(self, sender, filtself, reader, follow, durable=False):
        seg = self._usable()
        if self._m is not None:
            raise RuntimeError(
                f"queue {self.name!r} is already open in this handle as {self._m.sender!r}; "
                f"for a second membership use another handle: PySyncQ(name, create=False)"
            )
        if sender is None:
            sender = str(os.getpid())
        if not isinstance(sender, (str, bytes)):
            raise TypeError(f"sender must be a str or bytes, not {type(sender).__name__}")
        sender_bytes = as_bytes(sender)
        if len(sender_bytes) > MAX_NAME_BYTES:
            raise ValueError(
                f"sender is {len(sender_bytes)} bytes long; the limit is {MAX_NAME_BYTES}"
            )
        token = _proc.own_token()
        args = ((OPEN_READER if reader else 0) | (OPEN_DURABLE if durable else 0), sender_bytes)
        start = time.monotonic()
        deadline = start + OPEN_PATIENCE
        try:
            status, slot = (
                self._adopt(seg, token, sender_bytes, reader, deadline)
                if durable
                else (
                    NO_SLOT,
                    -1,
                )
            )
            if status & CODE_MASK != OK:
                status, slot = locked(seg, token, kernels.op_open, args, deadline)
            # A full table: free the slots of dead processes.  A process killed
            # a moment ago may still be dying (not yet a zombie): look again
            # for OPEN_GRACE seconds before giving up.
            give_up = start + OPEN_GRACE
            while status & CODE_MASK == NO_SLOT:
                if reap_dead(seg, deadline=deadline):
                    status, slot = locked(seg, token, kernels.op_open, args, deadline)
                elif time.monotonic() >= give_up:
                    break
                else:
                    time.sleep(0.01)
        except LockBusy as e:
            raise self._locked_error(e, time.monotonic() - start) from None
        wake(seg, status)
        code = status & CODE_MASK
        if code == CORRUPT:
            self._corrupt(status)
        if code == NO_SLOT:
            raise TooManyProcesses(
                f"all {seg.nslots} slots of queue {self.name!r} are held by live processes; "
                f"create the queue with a larger slots= or close unused handles"
            )
        if code == NOT_MEMBER:
            raise QueueClosed(
                f"queue {self.name!r} was closed by all its processes and removed; create a new one"
            )
        member = _Member(slot, token, sender, sender_bytes, reader)
        if follow:
            creator = int(seg.words[H_CREATOR])
            if creator != token:
                member.follow = creator or -1  # -1: the creator has left already
        self._skip_at = -1
        self._state.member = member
        self._m = member
        self._arm_finalizer()
        if filtself and sender not in self._scrnsend:
            self._scrnsend.add(sender)
            self._auto_screen = sender_bytes
        return self

    def _adopt(self, seg, token, sender_bytes, reader, deadline):
        """Take over the durable slot of a dead process opened with the same
        sender: ``(status, slot)``, ``(NO_SLOT, -1)`` when there is none."""
        if not _wait.may_judge(seg):
            return NO_SLOT, -1
        w = seg.words
        for slot, dead, is_reader in kernels.members(seg.mem):
            slot, dead = int(slot), int(dead)
            if slot < 0 or bool(is_reader) != bool(reader):
                continue
            if not w[kernels.slot_word(slot, S_FLAGS)] & SF_DURABLE:
                continue
            if not slot_name_matches(seg, slot, sender_bytes) or _proc.is_alive(dead):
                continue
            status = locked(seg, token, kernels.op_adopt, (slot, dead), deadline)
            if status & CODE_MASK == OK:
                return status, slot
        return NO_SLOT, -1

    def _read_ahead(self, n, start=None, block=False, timer=0.5):
        """Records this handle has not read, from position ``start`` (default:
        its cursor) on, WITHOUT reading them: they stay until
        :meth:`_commit_to`.  Returns ``(records, next)``: records as
        ``(position, sender, mtype, body, kind, own)`` (bytes, a ``KIND_*``),
        at most ``n``; ``next`` the position to read ahead from next.  With
        ``block=True`` waits up to ``timer`` for the first.  For relays that
        must not lose a message they have not passed on."""
        m = self._m
        if m is None or not m.reader or m.viewing:
            self._not_reader(m)
        timer = check_timer(timer)
        seg = self._seg
        if start is None:
            start = -1  # the kernel reads the cursor, under the lock
        deadline = time.monotonic() + timer
        lens = np.zeros(5 * max(n, 1), np.int64)
        while True:
            with m.lock:
                scr = self._scr if self._scr_at == self._changes[0] else self._screens()
                status, count, nxt = locked(
                    seg,
                    m.token,
                    kernels.op_read_ahead,
                    (m.slot, scr, m.out, lens, n, start),
                    time.monotonic() + _wait.LOCK_PATIENCE,
                )
                records = []
                at = 0
                out = m.out_mm
                for i in range(count):
                    slen, tlen, blen, kind, pos = lens[5 * i : 5 * i + 5].tolist()
                    a, b, end = at + slen, at + slen + tlen, at + slen + tlen + blen
                    own = (kind >> 8) == m.slot + 1
                    records.append((pos, out[at:a], out[a:b], out[b:end], kind & 0xFF, own))
                    at = end
            code = status & CODE_MASK
            if status & WAKE_BITS:
                wake(seg, status)
            if count or code == OK:
                return records, nxt
            if code == NEED_SPACE:
                with m.lock:
                    m.grow(status >> SEQ_SHIFT)
                continue
            if code == CORRUPT:
                self._corrupt(status)
            if code not in (EMPTY, PENDING):
                self._revoked()
            now = self._idle(m, code)
            if not block or now >= deadline:
                return [], nxt
            start = nxt
            seq = (status >> SEQ_SHIFT) & 0xFFFFFFFF
            self._sleep(m, W_DATA, H_DATA_SEQ, seq, min(deadline - now, TICK))

    def _idle(self, m, code, lock_deadline=math.inf):
        """After a pop found nothing (``EMPTY``, or ``PENDING``: it stopped at
        an unpublished reservation): check the creator a ``follow=True`` handle
        follows, and reap the reservation's writer if it may have died (at
        most every ``reap_interval``).  Returns ``time.monotonic()``."""
        if m.follow:
            self._follow_check(m)
        now = time.monotonic()
        if code == PENDING and now >= self._next_reap:
            self._next_reap = now + self.reap_interval
            try:
                reap_dead(self._seg, m.token, lock_deadline)
            except LockBusy:
                pass  # best effort: the next look reaps
        return now

    def _commit_to(self, pos, count=0):
        """Read everything before position ``pos`` (from :meth:`_read_ahead`)."""
        m = self._m
        if m is None or not m.reader:
            self._not_reader(m)
        deadline = time.monotonic() + _wait.LOCK_PATIENCE
        try:
            status = locked(
                self._seg, m.token, kernels.op_commit_to, (m.slot, pos, count), deadline
            )
        except LockBusy as e:
            raise self._locked_error(e, _wait.LOCK_PATIENCE) from None
        if status & WAKE_BITS:
            wake(self._seg, status)
        if status & CODE_MASK == CORRUPT:
            self._corrupt(status)
        if status & CODE_MASK != OK:
            self._revoked()

    def _follow_check(self, m):
        """Raise ``QueueClosed`` if the creator this handle follows has left:
        closed the queue (``H_CREATOR`` changed) or died.  Looks at most every
        ``FOLLOW_INTERVAL`` seconds (a sleep is at most ``TICK``)."""
        now = time.monotonic()
        if now < m.follow_next:
            return
        m.follow_next = now + FOLLOW_INTERVAL
        seg = self._seg
        creator = int(seg.words[H_CREATOR]) if seg.mem is not None else 0
        if creator == m.follow and (not _wait.may_judge(seg) or _proc.is_alive(creator)):
            return
        dead = m.follow > 0 and _wait.may_judge(seg) and not _proc.is_alive(m.follow)
        how = "died" if dead else "closed it"
        pid = _proc.token_pid(m.follow) if m.follow > 0 else None
        raise QueueClosed(
            f"the process that created queue {self.name!r}"
            f"{f' (pid {pid})' if pid else ''} has {how}, and this handle follows it "
            f"(open(follow=True)); close this handle and end"
        )

    def _member(self):
        self._usable()
        raise NotOpened(f"call open() on queue {self.name!r} in this process first")

    def _revoked(self):
        if self._state.seg is None:
            self._closed_meanwhile()
        self._m = self._state.member = None
        if self._seg.words[H_FLAGS] & F_UNLINKED:
            raise QueueClosed(
                f"queue {self.name!r} was removed (by pysyncq.remove(name, force=True) or "
                f"'python -m pysyncq clean --force', or its last member closed it); close() "
                f"this handle, and create the queue anew"
            )
        raise QueueClosed(
            f"this process's membership of queue {self.name!r} was revoked (it was judged "
            f"dead, or the queue was reset); open() it again"
        )

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

    # -- Screening (scrnsend and scrntype come from screen.Screened) ----------

    def _skips(self, m, t):
        """Whether this handle would screen its own message of type ``t``."""
        if self._skip_at != self._changes[0]:
            self._skip_refresh(m)
        return self._skip_own or t in self._skip_types

    def _skip_refresh(self, m):
        """Note whether this handle screens its own sender, and which types."""
        self._skip_own = m.sender_bytes in self._scrnsend
        self._skip_types = frozenset(self._scrntype.keys_bytes())
        self._skip_at = self._changes[0]

    def _screens(self):
        if self._scr_at != self._changes[0]:
            self._scr = screen_table(self._scrnsend.keys_bytes(), self._scrntype.keys_bytes())
            self._scr_at = self._changes[0]
        return self._scr

    # -- Messages ------------------------------------------------------------

    def append(self, msgtype="", msg="", block=False, timer=0.5):
        """Append a message: ``(sender, msgtype, msg)`` for every other reader.

        ``msgtype`` and ``msg`` may be str or bytes (written as they are) or any
        object (written as ``str(obj)``).  A ``bytearray`` or ``memoryview``
        body is sent as bytes: its bytes are copied straight into the queue
        when it is C-contiguous (a memoryview of any buffer: an array, an
        ``mmap``...), or in C order, as ``bytes(msg)`` gives them, when not;
        the reader gets ``bytes`` (or str, decoded, as for any body).  When the queue is full: raise
        :class:`QueueFull` (a ``MemoryError``) at once, or with ``block=True``
        wait up to ``timer`` seconds (None: for ever) for space, then raise.
        A message too large for even an empty queue raises
        :class:`MessageTooLarge` (also a ``MemoryError``) at once.

        A numpy array given here travels as ``str(arr)``, as in pysyncq 0.0.1
        (with a one-time ``UserWarning``): to send the array itself, use
        :meth:`append_array`.
        """
        m = self._m
        if m is None:
            self._member()
        if type(timer) is not float or not timer >= 0:
            timer = check_timer(timer)
        t = msgtype.encode() if type(msgtype) is str else as_bytes(msgtype)
        if type(msg) is str:
            body, kind = msg.encode(), KIND_STR
        elif type(msg) is bytes:
            body, kind = msg, KIND_BYTES
        elif isinstance(msg, (bytes, bytearray, memoryview)):
            body, kind = views.buffer_body(msg), KIND_BYTES
            if type(body) is not bytes:  # a large buffer: copied straight from it
                return views.append_buffer(self, m, t, body, block, timer)
        else:
            if isinstance(msg, np.ndarray):
                _warn_array_as_text()
            body, kind = str(msg).encode(), KIND_STR
        if len(t) > MAX_NAME_BYTES:
            raise ValueError(f"msgtype is {len(t)} bytes long; the limit is {MAX_NAME_BYTES}")
        # self._skips(m, t), written out: this is the hot path.
        if self._skip_at != self._changes[0]:
            self._skip_refresh(m)
        if self._skip_own or (self._skip_types and t in self._skip_types):
            kind |= APPEND_SKIP  # we would screen it: do not pin it either
        if len(body) >= self.copy_outside:
            return views.put_outside(self, m, t, body, kind, block, timer)
        status = _op_append(self._mem, m.token, m.slot, m.sender_bytes, t, body, kind)
        if status & CODE_MASK:
            args = (m.slot, m.sender_bytes, t, body, kind)
            need = len(m.sender_bytes) + len(t) + len(body)
            status = self._append_slow(status, m, kernels.op_append, args, need, block, timer)
        if status & WAKE_BITS:
            wake(self._seg, status)

    def _append_raw(self, sender, mtype, body, kind, block=False, timer=0.5):
        """Append a record as it is: ``sender``, ``mtype`` and ``body`` bytes
        and a ``KIND_*``.  For relays (the Redis bridge), which append in the
        name of the process that wrote the message elsewhere."""
        m = self._m
        if m is None:
            self._member()
        timer = check_timer(timer)
        if len(sender) > MAX_NAME_BYTES or len(mtype) > MAX_NAME_BYTES:
            raise ValueError(f"sender and msgtype are limited to {MAX_NAME_BYTES} bytes")
        if sender in self._scrnsend or mtype in self._scrntype:
            kind |= APPEND_SKIP
        status = _op_append(self._mem, m.token, m.slot, sender, mtype, body, kind)
        if status & CODE_MASK:
            args = (m.slot, sender, mtype, body, kind)
            need = len(sender) + len(mtype) + len(body)
            status = self._append_slow(status, m, kernels.op_append, args, need, block, timer)
        if status & WAKE_BITS:
            wake(self._seg, status)

    def append_array(self, mtype, arr, block=False, timer=0.5):
        """Append a numpy array as it is: dtype (byte order, structured fields),
        shape, order and values, with no pickle.

        Readers' ``pop()`` returns ``(sender, mtype, ndarray)``: a private,
        writable copy equal to ``arr``.  C- and Fortran-ordered arrays are copied
        straight into the queue (Fortran order comes back Fortran-ordered); any
        other layout is sent as a C-ordered copy.  Every dtype without Python
        objects is accepted; object dtypes and non-arrays raise ``TypeError``
        (use ``np.asarray(obj)``).  Full queue, ``block`` and ``timer``: as
        :meth:`append`.
        """
        m = self._m
        if m is None:
            self._member()
        if type(timer) is not float or not timer >= 0:
            timer = check_timer(timer)
        t = msgtype_bytes(mtype)
        desc, data = encode_array(arr, len(m.sender_bytes) + len(t))
        kind = KIND_ARRAY | (APPEND_SKIP if self._skips(m, t) else 0)
        args = (m.slot, m.sender_bytes, t, desc, data, kind)
        # The entry point past numba's dispatcher takes exactly the warm-up's
        # types: a writable flat uint8 view (a read-only array's is not).
        if data.flags.writeable:
            op = _lifecycle.FAST.get("op_append_array") or _lifecycle.fast("op_append_array")
        else:
            op = kernels.op_append_array
        status = op(self._mem, m.token, *args)
        if status & CODE_MASK:
            need = len(m.sender_bytes) + len(t) + len(desc) + len(data)
            op = kernels.op_append_array
            status = self._append_slow(status, m, op, args, need, block, timer)
        if status & WAKE_BITS:
            wake(self._seg, status)

    def loan(self, mtype, shape, dtype=float, block=False, timer=0.5):
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
        return views.loan(self, mtype, shape, dtype, block, timer)

    def pop_view(self, block=False, timer=0.5):
        """Read the next message in place: ``with q.pop_view() as m:``.

        ``m`` is None when nothing arrived in time, else ``(sender, mtype,
        body)``: body a read-only ndarray (array messages) or a read-only
        memoryview (str and bytes messages) over the shared memory itself.
        The message counts as read, and its bytes may be reused, only when the
        block ends; if the block raises, the message stays unread and the
        next pop returns it again.  A memoryview body fails (``ValueError``)
        if used after the block; an array body kept after the block keeps
        its bytes from being reused until it is garbage-collected.  No other
        pop on this handle while the view is open.
        """
        return views.pop_view(self, block, timer)

    def extend(self, mtype, bodies, block=False, timer=0.5):
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
        return batch.extend(self, mtype, bodies, block, timer)

    def _append_slow(self, result, m, op, args, need, block, timer):
        """Everything but an immediate success of ``op(mem, lockval, *args)``
        (whose result is a status, or a tuple led by one): wait for the lock
        or for space, reap, raise; return the result of the success.  ``need``
        is the message's payload in bytes, for the error messages."""
        seg = self._seg
        start = time.monotonic()
        deadline = start + timer if block else start
        lock_deadline = max(deadline, start + _wait.LOCK_PATIENCE)
        # Pops take no lock and wake the writers waiting for space only if
        # they see a W_SPACE bit; so the bit goes up before the look that
        # decides to sleep (the retry below), and stays up for the wait.
        spacebit = False
        try:
            while True:
                status = result[0] if type(result) is tuple else result
                code = status & CODE_MASK
                if code == OK:
                    return result
                wake(seg, status)  # e.g. a lock waiter, even if we raise below
                if code == BUSY:
                    result = locked(seg, m.token, op, args, lock_deadline)
                    continue
                if code == TOO_LARGE:
                    raise MessageTooLarge(
                        f"message of {need} bytes (sender + type + body) can never fit in "
                        f"queue {self.name!r}, which holds at most {self.max_message}; create "
                        f"the queue with a larger size"
                    )
                if code == CORRUPT:
                    self._corrupt(status)
                if code == NOT_MEMBER:
                    self._revoked()
                # FULL: free the slots of dead readers, else wait for space.
                seq = (status >> SEQ_SHIFT) & 0xFFFFFFFF
                now = time.monotonic()
                if now >= self._next_reap:
                    self._next_reap = now + self.reap_interval
                    if reap_dead(seg, m.token, lock_deadline):
                        result = locked(seg, m.token, op, args, lock_deadline)
                        continue
                if m.follow:
                    self._follow_check(m)
                if now >= deadline:
                    raise QueueFull(self._full_message(m, need, block, timer))
                if not spacebit:
                    self._space_bit(m, 1)
                    spacebit = True
                else:
                    timeout = min(deadline - now, self.reap_interval, TICK)
                    _futex.wait(seg.addr + 8 * H_SPACE_SEQ, seq, timeout)
                    if self._m is not m:
                        self._closed_meanwhile()
                result = locked(seg, m.token, op, args, lock_deadline)
        except LockBusy as e:
            raise self._locked_error(e, lock_deadline - start) from None
        finally:
            if spacebit:
                self._space_bit(m, -1)

    def _space_bit(self, m, n):
        """Count this thread in (``n`` = 1) or out (-1) of the handle's
        waiters for space, and store the slot's wait bits."""
        self._count_waiter(m, (W_SPACE,), n)

    def _count_waiter(self, m, bits, n):
        """Count this thread in (``n`` = 1) or out (-1) of the handle's
        waiters on each of ``bits`` and store the slot's wait bits; counting
        in on a handle closed meanwhile raises."""
        with m.lock:
            mem = self._seg.mem
            if self._m is not m or mem is None:
                if n > 0:
                    self._closed_meanwhile()
                return
            for bit in bits:
                m.wait_add(bit, n)
            kernels.set_waiting(mem, m.slot, m.idle)

    def _full_message(self, m, payload, block, timer):
        need = record_bytes(payload)
        w = self._seg.words
        free = self._seg.capacity - int(w[H_WRITE_POS] - w[H_HEAD])
        why = f"waited {timer} s" if block else "block=False"
        head = (
            f"queue {self.name!r} is full ({why}): the message needs {need} bytes, {free} are "
            f"free; "
        )
        readers = [r for r in snapshot(self._seg, self.name).members if r.reader and r.lag]
        if not readers:
            return head + "the slowest reader must pop first"
        r = max(readers, key=lambda r: r.lag)
        who = f"{r.name!r} (pid {r.pid})"
        lag = f"{r.lag} bytes in {r.lag_messages} messages"
        if r.slot == m.slot:
            return head + (
                f"the slowest reader is this handle itself, {who}, which has not passed {lag}: "
                f"pop them (or 'for m in q: pass'), or open(reader=False) in a process that "
                f"only writes"
            )
        if not r.alive:
            return head + (
                f"the slowest reader, {who}, has died with {lag} unread; its slot is freed "
                f"within reap_interval ({self.reap_interval} s)"
            )
        tail = f"the slowest reader is {who}, which has not passed {lag}"
        if "space" in r.waiting:
            return (
                head
                + tail
                + (
                    ", and is itself waiting for space to append: a cycle, which no timer will "
                    "break.  A process that waits for space must keep reading meanwhile (see the "
                    "README's tour), or use two queues, one per direction"
                )
            )
        return head + tail + "; it must pop first"

    def _locked_error(self, e, waited):
        return QueueLocked(
            f"queue {self.name!r} is locked by process {e.pid}, which is alive but has not "
            f"released the lock in {waited:.3g} s (stopped?)"
        )

    def _corrupt(self, status, value=0, pos=0):
        """Raise :class:`QueueCorrupt` for a ``CORRUPT`` status, naming what is
        wrong (or :class:`QueueClosed` if this handle was closed meanwhile)."""
        if self._state.seg is None:
            self._closed_meanwhile()
        raise QueueCorrupt(_segment.corruption(self._seg, (status >> SEQ_SHIFT) & 0xFF, value, pos))

    def pop(self, block=False, timer=0.5, decode=True):
        """Pop the next unread message: ``(sender, type, body)``, or None.

        Messages whose sender is in :attr:`scrnsend` or whose type is in
        :attr:`scrntype` are skipped (and count as read).  With nothing to
        read: return None at once, or with ``block=True`` wait up to ``timer``
        seconds in all (None: for ever).  ``decode=False`` returns bytes; by
        default the fields are decoded from UTF-8 (a field that is not valid
        UTF-8 is returned as bytes rather than lost).
        """
        m = self._m
        if m is None or not m.reader or m.viewing:
            self._not_reader(m)
        if type(timer) is not float or not timer >= 0:
            timer = check_timer(timer)
        if m.unpins:  # arrays of earlier views have gone: drop their pins
            views.drain_unpins(self, m)
        # The hot path, written out (the slow path shares _pop_once): the
        # thread lock keeps another thread's pop from overwriting m.out
        # before the fields are sliced out of it.
        #
        # A blocking pop that finds nothing first watches the data sequence
        # for up to q.spin without arming W_DATA, so that writers make no
        # wake call for a reader that is only watching; a change (a message,
        # or one this handle screens) means look again, with what is left of
        # the spin.  When the spin ends with nothing, _pop_slow arms the bit,
        # looks once more and sleeps.  Where spinning does not pay (more
        # members than CPUs, see spin_for) the pop arms at once, as before.
        lock = m.lock
        spin = block and self._spin_ok and not m.follow and self.spin > 0
        rounds = -1  # spin rounds left (-1: not measured yet)
        while True:
            lock.acquire()
            try:
                scr = self._scr if self._scr_at == self._changes[0] else self._screens()
                status, slen, tlen, blen, kind = _op_pop(
                    self._mem, m.token, m.slot, scr, m.out, m.waits[1 if block and not spin else 0]
                )
                code = status & CODE_MASK
                if not code:
                    out = m.out_mm
                    a = slen + tlen
                    s, t = out[:slen], out[slen:a]
                    if kind & 0xFF == KIND_ARRAY:
                        b = decode_at(out, a, blen)
                    else:
                        b = out[a : a + blen]
                elif block and not spin and (code == EMPTY or code == PENDING):
                    m.wait_add(W_DATA, 1)  # the kernel set W_DATA: this thread sleeps
            finally:
                lock.release()
            if status & WAKE_BITS:
                wake(self._seg, status)
            if not code:
                break
            if code == EMPTY and not block and not m.follow:
                return None
            if spin and (code == EMPTY or code == PENDING):
                mem = self._mem
                if rounds < 0:
                    rounds = _wait.spin_rounds(mem, min(self.spin, timer))
                left = _wait.spin_data(mem, blen, rounds)
                if left > 0:  # the sequence moved: look again
                    rounds = left - 1
                    continue
                if left < 0:
                    self._spin_ok = False  # too many members: arm at once next time
                status = BUSY  # _pop_slow arms the bit and looks again, then sleeps
            got = self._pop_slow(
                m, status & ~WAKE_BITS, slen, blen, block, timer, decode, spin=0.0 if spin else None
            )
            if got is None:
                return None
            s, t, b, _ = got
            break
        # _message(s, t, b, decode), written out: this is the hot path.
        if decode:
            if type(b) is not bytes:
                return (_decode(s), _decode(t), b)
            try:
                return (s.decode(), t.decode(), b.decode())
            except UnicodeDecodeError:
                return (_decode(s), _decode(t), _decode(b))
        return (s, t, b)

    def _pop_raw(self, block=False, timer=0.5):
        """Pop the next record as it is: ``(sender, mtype, body, kind, own)``
        (bytes, bytes, bytes, a ``KIND_*``, and whether this very handle
        appended it), or None.  Screening applies.  For relays."""
        m = self._m
        if m is None or not m.reader:
            self._not_reader(m)
        timer = check_timer(timer)
        got = self._pop_slow(m, BUSY, 0, 0, block, timer)
        if got is None:
            return None
        s, t, b, kind = got
        return s, t, b, kind & 0xFF, (kind >> 8) == m.slot + 1

    def pop_many(self, n, block=False, timer=0.5, decode=True):
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
        return batch.pop_many(self, n, block, timer, decode)

    def _pop_once(self, m, result):
        """Finish one pop kernel call: ``(fields or None, status, a, b)``, where
        ``a, b`` are the kernel's sender and body lengths (what ``EMPTY``,
        ``NEED_SPACE`` and ``CORRUPT`` carry there).

        The kernel copied the record into the handle's buffer, which another
        thread's pop could overwrite: call with the handle's thread lock held.
        """
        status, slen, tlen, blen, kind = result
        if status & CODE_MASK:
            return None, status, slen, blen
        return _fields(m, slen, tlen, blen, kind), status, slen, blen

    def _pop_slow(self, m, status, slen, blen, block, timer, decode=False, spin=None):
        """Everything but an immediate hit: wait, retry, grow the buffer, or
        pop a record too large for the buffer outside the lock.

        Returns ``(sender, type, body, kind)`` or None.  ``body`` is bytes or
        an array, or, for a record popped outside the lock with ``decode``,
        already a str where it is valid UTF-8.

        Sleeping for data takes no call of its own: with ``block``, a pop
        kernel that finds nothing also sets this slot's ``W_DATA`` bit (see
        ``op_pop``), and the pop counts the sleeper in ``m.waiting`` under
        ``m.lock`` (so another thread of this handle keeps the bit), as
        ``pop`` did before calling this; the next pop kernel clears it.  Only
        a wait that ends without a message clears it here.
        """
        seg = self._seg
        start = time.monotonic()
        deadline = start + timer
        lock_deadline = start + max(timer if block else 0.0, _wait.LOCK_PATIENCE)
        got = []
        # Whether this thread is counted in m.waiting[W_DATA] (the kernel set
        # the bit for it): on entry, as pop() left it.
        armed = [bool(block) and status & CODE_MASK in (EMPTY, PENDING)]
        if spin is None:  # pop() has not spun already
            spin = self.spin

        def attempt(mem, lockval, slot, scr):
            # The handle's thread lock only around the kernel call (and the
            # read of m.out), never while waiting for the queue lock.
            with m.lock:
                result = _op_pop(mem, lockval, slot, scr, m.out, m.waits[1 if block else 0])
                got[:] = self._pop_once(m, result)
                if block and result[0] & CODE_MASK in (EMPTY, PENDING):
                    m.wait_add(W_DATA, 1)
                    armed[0] = True
            return result

        if m.unpins:
            views.drain_unpins(self, m)
        try:
            while True:
                if status & WAKE_BITS:
                    wake(seg, status)
                code = status & CODE_MASK
                if code == EMPTY or code == PENDING:
                    now = self._idle(m, code, lock_deadline)
                    if not block or now >= deadline:
                        return None
                    timeout = min(deadline - now, TICK, self.reap_interval)
                    mem = seg.mem
                    if mem is None or self._m is not m:
                        self._closed_meanwhile()
                    if spin:  # once per pop, then sleep
                        left = _wait.spin_data(
                            mem, blen, _wait.spin_rounds(mem, min(spin, timeout))
                        )
                        spin = 0.0
                        if left >= 0:  # it watched: pop() may watch unarmed again
                            self._spin_ok = True
                        if left <= 0:
                            _wait.wait_data(seg, mem, blen, timeout)
                    else:
                        _wait.wait_data(seg, mem, blen, timeout)
                    mem = None
                    if self._m is not m:
                        self._closed_meanwhile()
                    with m.lock:
                        m.wait_add(W_DATA, -1)
                        armed[0] = False
                elif code == NEED_SPACE and blen >= self.copy_outside:
                    # A large record: copied outside the queue lock, once (views.py).
                    fields, status, slen, blen = views.pop_outside(self, m, decode, lock_deadline)
                    if fields is not None:
                        if status & WAKE_BITS:
                            wake(seg, status)
                        return fields
                    if status & CODE_MASK == CORRUPT:
                        self._corrupt(status, slen, blen)
                    # Gone meanwhile (another thread of this handle popped it,
                    # or the slot was freed): pop again below, which also sets
                    # the wait bit as a blocking pop must.
                elif code == NEED_SPACE:
                    with m.lock:
                        m.grow(blen)
                elif code == CORRUPT:
                    self._corrupt(status, slen, blen)
                elif code != BUSY:
                    self._revoked()
                try:
                    locked(seg, m.token, attempt, self._pop_args(m)[2:4], lock_deadline)
                except LockBusy as e:
                    raise self._locked_error(e, lock_deadline - start) from None
                fields, status, slen, blen = got
                if fields is not None:
                    if status & WAKE_BITS:
                        wake(seg, status)
                    return fields
        finally:
            if armed[0]:
                self._disarm(m)

    def _disarm(self, m):
        """A blocking pop ends without a message: uncount it and clear the
        ``W_DATA`` bit its kernel left, unless another thread of this handle
        still sleeps on it."""
        with m.lock:
            m.wait_add(W_DATA, -1)
            mem = self._seg.mem
            if self._m is m and mem is not None:
                kernels.set_waiting(mem, m.slot, m.idle)

    def _pop_args(self, m):
        scr = self._scr if self._scr_at == self._changes[0] else self._screens()
        return self._mem, m.token, m.slot, scr, m.out

    def _closed_meanwhile(self):
        raise QueueClosed(f"queue {self.name!r} was closed (by another thread) meanwhile")

    def _not_reader(self, m):
        if m is None:
            self._member()
        if m.viewing:
            raise RuntimeError(
                f"a pop_view of queue {self.name!r} is open in this handle: pop after its block"
            )
        raise NotOpened(
            f"queue {self.name!r} was opened with reader=False in this process: it cannot pop"
        )

    def _sleep(self, m, bit, word, seq, timeout):
        """Sleep on futex ``word`` while it equals ``seq``, advertising ``bit``.

        The wait bits are written only while this handle still owns the slot:
        ``close()`` clears ``self._m`` and then takes ``m.lock`` to give the
        slot back, so a bit can never land in a slot someone else owns.
        """
        seg = self._seg
        with m.lock:
            mem = seg.mem
            if self._m is not m or mem is None:
                self._closed_meanwhile()
            m.wait_add(bit, 1)
            kernels.set_waiting(mem, m.slot, m.idle)
            addr = seg.addr
        try:
            _futex.wait(addr + 8 * word, seq, timeout)
        finally:
            with m.lock:
                m.wait_add(bit, -1)
                mem = seg.mem
                if self._m is m and mem is not None:
                    kernels.set_waiting(mem, m.slot, m.idle)
        if self._m is not m:
            self._closed_meanwhile()

    def __call__(self, block=False, timer=0.5, decode=True):
        """An iterator that pops until :meth:`pop` returns None.

        ``for m in q(block=True, timer=0.1): ...`` waits up to ``timer`` for
        each next message.
        """
        if self._m is None:
            self._member()
        check_timer(timer)
        return self._iterate(block, timer, decode)

    def _iterate(self, block, timer, decode):
        while (m := self.pop(block, timer, decode)) is not None:
            yield m

    def __iter__(self):
        return self()

    # -- asyncio (pysyncq.aio) -------------------------------------------------

    async def apop(self, timer=0.5, decode=True):
        """``pop(block=True, timer=timer, decode=decode)`` for asyncio: waits
        without blocking the event loop; None when ``timer`` passes."""
        from . import aio

        return await aio.apop(self, timer, decode)

    async def aappend(self, msgtype="", msg="", timer=0.5):
        """``append(msgtype, msg, block=True, timer=timer)`` for asyncio."""
        from . import aio

        await aio.aappend(self, msgtype, msg, timer)

    async def aappend_array(self, mtype, arr, timer=0.5):
        """``append_array(mtype, arr, block=True, timer=timer)`` for asyncio."""
        from . import aio

        await aio.aappend_array(self, mtype, arr, timer)

    def aiter(self, timer=0.5, decode=True):
        """``async for m in q.aiter(timer=0.5)``: :meth:`apop` until nothing
        comes within ``timer`` seconds."""
        from . import aio

        return aio.AsyncIterator(self, timer, decode)

    # -- Coordination and inspection ------------------------------------------

    def wait_for_readers(self, n, timer=10.0, processes=()):
        """Wait until at least ``n`` other live processes have opened the queue as readers.

        Counts the reader slots of live processes other than this handle's own.
        Returns the count; raises ``TimeoutError`` if ``timer`` seconds pass
        first (None: wait for ever).  ``processes`` (``multiprocessing.Process``
        objects, or anything with an ``exitcode``) are the processes expected to
        open: if one of them has exited, :class:`ChildExited` (a
        ``ChildProcessError``) is raised at once, naming its exit code.  Use it in
        a parent before the first append, in place of a guessed ``time.sleep``.
        """
        seg = self._usable()
        n = check_int(n, "n", 0, MAX_SLOTS)
        timer = check_timer(timer)
        processes = list(processes)
        deadline = time.monotonic() + timer
        own = self._m.slot if self._m is not None else -1
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
                    raise ChildExited(self._exited_message(p, count, n))
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(
                    f"only {count} of {n} readers opened queue {self.name!r} within {timer} s; "
                    f"children may have died before opening (look at their stderr, and pass "
                    f"them as wait_for_readers(..., processes=workers) to fail at once)"
                )
            if now >= self._next_reap:
                self._next_reap = now + self.reap_interval
                reap_dead(seg, self._m.token if self._m else None)
            _futex.wait(seg.addr + 8 * H_MEMBER_SEQ, seq, min(deadline - now, TICK))

    def _exited_message(self, p, count, n):
        code = p.exitcode
        how = f"exit code {code}"
        if code < 0:
            try:
                how += f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                pass
        name = getattr(p, "name", None)
        return (
            f"process {name + ' ' if name else ''}(pid {p.pid}) has exited with {how} while "
            f"waiting for {n} readers of queue {self.name!r} ({count} opened); see its "
            f"traceback on stderr.  Under spawn or forkserver, a target defined in __main__ "
            f"of 'python -c' or a notebook cannot be found by the children: define it in an "
            f"importable module"
        )

    def stats(self):
        """A :class:`QueueStats` snapshot, taken without the lock: every member
        with its sender name, pid, liveness, lag in bytes and messages, and
        counters.  Members whose process has ended are reaped first when they can
        be (else they are listed with ``alive=False``).  Works on a corrupt
        queue too (its figures show it)."""
        seg = self._usable()
        stats = snapshot(seg, self.name)
        if not all(r.alive for r in stats.members):
            try:
                own = self._m.token if self._m is not None else None
                if reap_dead(seg, own, time.monotonic() + _wait.LOCK_PATIENCE):
                    stats = snapshot(seg, self.name)
            except LockBusy:
                pass  # a stopped lock holder: report them as dead, unreaped
        return stats

    def __repr__(self):
        state = "closed" if self.closed else ("open" if self._m is not None else "not opened")
        sender = f", sender={self._m.sender!r}" if self._m is not None else ""
        return f"PySyncQ(name={self.name!r}, size={self._seg.capacity}{sender}, {state})"
