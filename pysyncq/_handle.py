"""A handle's own state in this process: its membership, screens and waiters.

``Member`` is what ``open()`` gives a handle: the slot, the process token,
the sender name and the private buffers pops copy into.  The functions below
are the pieces every call of a handle shares: the screens cache (the compact
table the pop kernels scan, rebuilt only when a screening set changed), the
wait bits a handle advertises in its slot while one of its threads sleeps,
and what a call does when it found nothing (follow the creator, reap a dead
writer's reservation).

Threads: ``m.lock`` guards the member's buffers and its count of sleepers;
``close()`` clears ``q._m`` first and then takes ``m.lock`` to give the slot
back, so a wait bit can never land in a slot someone else owns.
"""

import math
import mmap
import os
import threading
import time
import weakref

import numpy as np

from . import _futex, _proc, _status, kernels
from ._inbox import Inbox
from ._wait import LockBusy, may_judge, reap_dead, wait_bits
from .errors import ChildExited
from .layout import H_CREATOR, PENDING, W_ASYNC, W_DATA, WAITS_EMPTY_SHIFT
from .screen import screen_table

#: Seconds between looks at the creator by a handle opened with follow=True.
FOLLOW_INTERVAL = 0.05
#: The smallest copy buffer a member starts with, in bytes.
FIRST_BUFFER = 4096

#: Every handle of this process, for the fork hooks.
live = weakref.WeakSet()


def _forget_after_fork():
    # A forked child is a new process: the parent's membership and creator
    # hold are not its own.  It keeps the mapping and may open() afresh.
    for q in list(live):
        q._forget_parent()


os.register_at_fork(after_in_child=_forget_after_fork)


def pop_waits(hit, empty):
    """The ``waits`` argument of ``op_pop``: the slot's wait bits to store
    when the pop finds a record (``hit``) and when it finds none (``empty``)."""
    return hit | (empty << WAITS_EMPTY_SHIFT)


class Member:
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
        "views",
        "linger",
        "follow",
        "follow_next",
        "inbox",
    )

    def __init__(self, slot, token, sender, sender_bytes, reader, follow=0):
        self.slot = slot
        self.token = token
        self.sender = sender
        self.sender_bytes = sender_bytes
        self.reader = reader
        self.lock = threading.Lock()  # guards out/out_mm and waiting between threads
        self.waiting = [0] * (W_ASYNC + 1)  # sleepers of this handle, by wait bit
        self.idle = 0  # wait_bits(waiting): what the slot's S_WAIT must hold
        # op_pop's waits for block False, True: a blocking pop that finds
        # nothing also arms W_DATA.
        self.waits = (pop_waits(0, 0), pop_waits(0, W_DATA))
        self.lens = None  # pop_many's buffers (pysyncq.batch), made on first use
        self.pins = []  # positions this handle pins (views, reservations)
        self.unpins = []  # pins of views whose arrays were collected since
        self.viewing = False  # a pop_view is open
        self.views = set()  # positions of records whose views' arrays are alive
        self.linger = None  # once closed with such arrays: the State keeping the slot
        self.follow = follow  # open(follow=True): the creator's token, else 0
        self.follow_next = 0.0  # when to look at the creator next
        self.inbox = Inbox()  # messages moved out of the queue for own writes
        self.grow(FIRST_BUFFER)

    def view_gone(self, pos):
        """The finalizer of the arrays of a view of the record at ``pos``
        (they have all been collected).  It may run at any moment, even
        inside this handle's own locked sections: it only takes note, and
        lets a closed handle's slot go once the last such array is gone."""
        self.unpins.append(pos)
        self.views.discard(pos)
        linger = self.linger
        if linger is not None and not self.views:
            linger.release_lingering()

    def wait_add(self, bit, n):
        """Count ``n`` more (or fewer) sleepers of this handle on ``bit``.
        With ``self.lock``; the caller stores the new bits (``self.idle``),
        or a kernel does."""
        self.waiting[bit] += n
        idle = self.idle = wait_bits(self.waiting)
        self.waits = (pop_waits(idle, idle), pop_waits(idle, idle | W_DATA))

    def grow(self, n):
        size = 1 << max(12, (n - 1).bit_length())
        self.out_mm = mmap.mmap(-1, size)
        self.out = np.frombuffer(self.out_mm, np.uint8)


# -- Screens ------------------------------------------------------------------


def screens(q):
    """The screen table the pop kernels scan, rebuilt if a set changed."""
    if q._scr_at != q._changes[0]:
        q._scr = screen_table(q._scrnsend.keys_bytes(), q._scrntype.keys_bytes())
        q._scr_at = q._changes[0]
    return q._scr


def skips(q, m, t):
    """Whether this handle would screen its own message of type ``t``."""
    if q._skip_at != q._changes[0]:
        skip_refresh(q, m)
    return q._skip_own or t in q._skip_types


def skip_refresh(q, m):
    """Note whether this handle screens its own sender, and which types.

    Every write calls this when the screens changed (``q._skip_at`` stale).
    A ``follow=True`` handle keeps ``q._skip_at`` stale for good, so that its
    writes come here each time and look at the creator (``follow_check``,
    at most every ``FOLLOW_INTERVAL``): a write-only member raises
    ``QueueClosed`` once the creator has left even if the queue never fills,
    at no cost to the writes of other handles."""
    if m.follow:
        follow_check(q, m)
        if q._skip_seen == q._changes[0]:
            return
    q._skip_own = m.sender_bytes in q._scrnsend
    q._skip_types = frozenset(q._scrntype.keys_bytes())
    q._skip_seen = q._changes[0]
    q._skip_at = -1 if m.follow else q._skip_seen


# -- Wait bits ----------------------------------------------------------------


def count_waiter(q, m, bits, n):
    """Count this thread in (``n`` = 1) or out (-1) of the handle's waiters
    on each of ``bits`` and store the slot's wait bits; counting in on a
    handle closed meanwhile raises."""
    with m.lock:
        mem = q._seg.mem
        if q._m is not m or mem is None:
            if n > 0:
                _status.closed_meanwhile(q)
            return
        for bit in bits:
            m.wait_add(bit, n)
        kernels.set_waiting(mem, m.slot, m.idle)


def disarm(q, m):
    """A blocking pop ends without a message: uncount it and clear the
    ``W_DATA`` bit its kernel left, unless another thread of this handle
    still sleeps on it."""
    with m.lock:
        m.wait_add(W_DATA, -1)
        mem = q._seg.mem
        if q._m is m and mem is not None:
            kernels.set_waiting(mem, m.slot, m.idle)


def sleep(q, m, bit, word, seq, timeout):
    """Sleep on futex ``word`` while it equals ``seq``, advertising ``bit``."""
    seg = q._seg
    count_waiter(q, m, (bit,), 1)
    addr = seg.addr
    try:
        _futex.wait(addr + 8 * word, seq, timeout)
    finally:
        count_waiter(q, m, (bit,), -1)
    if q._m is not m:
        _status.closed_meanwhile(q)


# -- When nothing was found ---------------------------------------------------


def idle(q, m, code, lock_deadline=math.inf, procs=None):
    """After a pop found nothing (``EMPTY``, or ``PENDING``: it stopped at
    an unpublished reservation): check the creator a ``follow=True`` handle
    follows and the processes the call watches (``procs``, default the
    handle's ``_procs``), and reap the reservation's writer if it may have
    died (at most every ``reap_interval``).  Returns ``time.monotonic()``."""
    if m.follow:
        follow_check(q, m)
    peers_check(q, q._procs if procs is None else procs)
    now = time.monotonic()
    if code == PENDING and now >= q._next_reap:
        q._next_reap = now + q.reap_interval
        try:
            reap_dead(q._seg, m.token, lock_deadline)
        except LockBusy:
            pass  # best effort: the next look reaps
    return now


def peers_check(q, procs):
    """Raise ``ChildExited`` if one of ``procs`` (objects with an
    ``exitcode``: ``multiprocessing.Process``) has exited with an error: a
    blocked call that waits for what they would send learns of it."""
    for p in procs:
        if p.exitcode:  # None: still running; 0: a normal end
            raise ChildExited(_status.peer_exited_message(q, p))


def follow_check(q, m):
    """Raise ``QueueClosed`` if the creator this handle follows has left:
    closed the queue (``H_CREATOR`` changed: seen at once, so that a
    follower woken by the close ends now) or died (looked at at most every
    ``FOLLOW_INTERVAL`` seconds; a sleep is at most ``TICK``)."""
    seg = q._seg
    creator = int(seg.words[H_CREATOR]) if seg.mem is not None else 0
    if creator == m.follow:
        now = time.monotonic()
        if now < m.follow_next:
            return
        m.follow_next = now + FOLLOW_INTERVAL
        if not may_judge(seg) or _proc.is_alive(creator):
            return
    dead = m.follow > 0 and may_judge(seg) and not _proc.is_alive(m.follow)
    pid = _proc.token_pid(m.follow) if m.follow > 0 else None
    raise _status.creator_gone(q, dead, pid)
