"""The Python side of ``pysyncq.jit``: the handle a user's ``@njit`` code
takes, the waits it hands back to Python, and the one mapping of its
statuses to the exceptions of the Python calls.

A nopython append or pop tries the queue itself (``kernels.user`` and the
``op_*`` kernels); whatever is not an immediate success or a short spin
comes here, through numba's ``objmode``, by the handle's id: waiting for the
lock (a dead holder is replaced, as everywhere), for space (reaping dead
readers, moving the handle's own unread messages to its inbox, following
the creator), for data (with the handle's wait bit, on the same futex
words as every Python call, so that Python and nopython members wake each
other), and turning a failure into the exception the Python call would
have raised, kept for :func:`raise_for`.
"""

import ctypes
import math
import time
import weakref
from collections import namedtuple

import numpy as np

from . import _futex, _handle, _inbox, _retry, _status, _wait
from ._wait import TICK, LockBusy, locked, wake
from .errors import MessageTooLarge, QueueClosed, QueueCorrupt, QueueFull, QueueLocked
from .kernels.user import (
    INFO_COUNT,
    INFO_KIND,
    INFO_NDIM,
    INFO_SENDER,
    INFO_SHAPE,
    INFO_TYPE,
    INFO_WORDS,
    MAX_NDIM,
)
from .layout import (
    BAD_BODY,
    BUSY,
    CODE_MASK,
    CORRUPT,
    EMPTY,
    FULL,
    H_DATA_SEQ,
    H_LOCK,
    H_SPACE_SEQ,
    KIND_ARRAY,
    KIND_BYTES,
    MAX_NAME_BYTES,
    NEED_SPACE,
    NOT_MEMBER,
    OK,
    PENDING,
    SEQ_MASK,
    SEQ_SHIFT,
    TOO_LARGE,
    W_DATA,
    W_SPACE,
    WRONG_DTYPE,
    WRONG_KIND,
)

# -- The statuses nopython calls return (pysyncq.jit re-exports them).
#: The message was written, or read into ``out``.
#: ``EMPTY``: nothing to read within the timer (the Python pop's None).
#: ``FULL``: no space within the timer (QueueFull).
#: ``TOO_LARGE``: the message cannot fit even an empty queue (MessageTooLarge).
#: ``CLOSED``: the handle's membership is gone: closed, or the queue removed.
#: ``NO_ROOM``: ``out`` holds fewer elements (bytes) than the next message.
#: ``CORRUPT``: the queue (or the next message) is corrupt (QueueCorrupt).
#: ``WRONG_KIND``: the next message is not of the kind asked for (an array,
#: bytes); ``WRONG_DTYPE``: an array of another dtype than ``out``'s.  These
#: and ``NO_ROOM`` leave the message unread: the next pop finds it again.
#: ``STALE``: the handle no longer matches its queue handle (the screens grew
#: past its table): make a new one with ``q.jit_handle()``.
#: ``LOCKED``: the lock stayed with a live process past the timer (QueueLocked).
#: ``ERROR``: anything else the Python side raised (``raise_for`` raises it).
#: ``BAD_ARG``: a wrong argument (a type longer than 65,535 bytes, a
#: non-contiguous ``out``, a writer-only handle's pop).
CLOSED = NOT_MEMBER
NO_ROOM = NEED_SPACE
STALE = 13
LOCKED = 14
ERROR = 15
BAD_ARG = 16

#: The handle: a named tuple of arrays and ints, which numba takes as an
#: argument.  ``mem`` the segment, ``token`` and ``slot`` the membership,
#: ``sender`` its name's bytes, ``scr`` two rows of screen tables (the
#: current one named by ``state``), ``state`` words below, ``buf`` scratch
#: for a message's type and descriptor, ``info`` what the last pop found
#: (``kernels.user.INFO_*``).
JitHandle = namedtuple("JitHandle", "mem token slot sender scr state buf info")

# -- ``state``'s words.
S_ID = 0  # the key of this handle in _handles
S_SCR = 1  # the row of ``scr`` that holds the screens now
S_INBOX = 2  # messages in the handle's inbox (kept by _inbox)
S_STALE = 3  # 1: the screens outgrew ``scr``
S_SPACEBIT = 4  # 1 while this handle's writer has its W_SPACE bit up
S_CPUS = 5  # CPUs this process may run on: spin only with no more members
S_FOLLOW = 6  # the handle follows the creator: look every FOLLOW_INTERVAL
S_NEXT_LOOK = 7  # monotonic ns of the next look at the creator (follow)
S_READER = 8  # 1 for a reader
S_SKIP_OWN = 9  # 1: the handle screens its own sender (its writes pass its cursor)
S_TYPES = 10  # the message types it screens (its writes look theirs up)
STATE_WORDS = 16

#: ``buf``: the message type at 0, the descriptor at ``DESC_AT``.
DESC_AT = MAX_NAME_BYTES + 1
BUF_BYTES = DESC_AT + 16 + 8 * MAX_NDIM + 64
#: The least room for screen tables in each of ``scr``'s rows.
MIN_SCREENS = 4096

# -- What the nopython side asks of ``slow``.
ASK_LOCK = 1  # the lock is busy past the spins: wait for it
ASK_SPACE = 2  # the queue is full past the spin: reap, raise the W_SPACE bit, sleep
ASK_SPACE_DONE = 3  # the write is over: lower the W_SPACE bit
ASK_DATA = 4  # nothing to read past the spin: look at the peers, sleep
ASK_FAIL = 5  # a status that no wait mends: keep its exception
ASK_WAKE = 6  # signal the asyncio waiters a status names
ASK_FOLLOW = 7  # look at the creator a follow=True handle follows

_handles = {}  # S_ID -> weakref to the PySyncQ
_next_id = [1]


def make(q):
    """``q.jit_handle()``: the handle of ``q``'s membership in this process
    for nopython code (one per membership: the same one each call)."""
    m = q._m
    if m is None:
        _status.not_member(q)
    held = getattr(q, "_jit", None)
    if held is not None and held[0] is m:
        return held[1]
    hid = _next_id[0]
    _next_id[0] += 1
    state = np.zeros(STATE_WORDS, np.int64)
    state[S_ID] = hid
    state[S_CPUS] = _wait.CPUS
    state[S_FOLLOW] = 1 if m.follow else 0
    state[S_READER] = 1 if m.reader else 0
    table = _handle.screens(q)
    scr = np.zeros((2, max(MIN_SCREENS, 4 * len(table))), np.uint8)
    scr[0, : len(table)] = table
    _note_skips(q, m, state)
    h = JitHandle(
        q._mem,
        m.token,
        m.slot,
        np.frombuffer(m.sender_bytes, np.uint8),
        scr,
        state,
        np.zeros(BUF_BYTES, np.uint8),
        np.zeros(INFO_WORDS, np.int64),
    )
    _handles[hid] = weakref.ref(q)
    weakref.finalize(q, _handles.pop, hid, None)
    m.inbox.flag = state[S_INBOX : S_INBOX + 1]
    m.inbox.flag[0] = len(m.inbox.items)
    q._jit = (m, h)
    q._jit_error = None
    _watch_screens(q)
    return h


class _Changes(list):
    """``q._changes`` once a jit handle exists: a change of the screens also
    rewrites the handle's table (reads stay list reads: nothing is added to
    the Python calls' hot paths)."""

    __slots__ = ("q",)

    def __setitem__(self, i, v):
        super().__setitem__(i, v)
        q = self.q()
        if q is not None:
            _screens_changed(q)


def _watch_screens(q):
    if type(q._changes) is _Changes:
        return
    changes = _Changes(q._changes)
    changes.q = weakref.ref(q)
    q._changes = q._scrnsend._changes = q._scrntype._changes = changes


def _screens_changed(q):
    held = getattr(q, "_jit", None)
    if held is None:
        return
    h = held[1]
    table = _handle.screens(q)
    row = 1 - int(h.state[S_SCR])
    if len(table) > h.scr.shape[1]:
        h.state[S_STALE] = 1
        return
    h.scr[row, : len(table)] = table
    h.state[S_SCR] = row  # the nopython side takes the new row from its next call
    _note_skips(q, held[0], h.state)


def _note_skips(q, m, state):
    """What the handle's writes look at to know whether it screens its own
    message (as ``_handle.skip_refresh`` for the Python writes)."""
    state[S_SKIP_OWN] = 1 if m.sender_bytes in q._scrnsend else 0
    state[S_TYPES] = len(q._scrntype)


# -- The slow path: what nopython code hands to Python ----------------------------


def slow(hid, ask, status, need, left):
    """What a nopython append or pop of handle ``hid`` asks of Python:
    ``ask`` (``ASK_*``), with the status it got, the bytes it needs (writes;
    for ``ASK_DATA`` the data sequence it saw) and the seconds left of its
    timer (< 0: no limit).  Returns ``OK`` (try again at once) or the status
    that ends the call (its exception kept for ``raise_for``)."""
    ref = _handles.get(hid)
    q = ref() if ref is not None else None
    if q is None:
        return CLOSED
    held = getattr(q, "_jit", None)
    m = q._m
    if m is None or held is None or held[0] is not m:
        return _keep(q, CLOSED, _closed(q))
    try:
        return _ASKS[ask](q, m, held[1], status, need, left)
    except QueueFull as e:
        return _keep(q, FULL, e)
    except QueueClosed as e:
        return _keep(q, CLOSED, e)
    except QueueCorrupt as e:
        return _keep(q, CORRUPT, e)
    except MessageTooLarge as e:
        return _keep(q, TOO_LARGE, e)
    except Exception as e:  # noqa: BLE001 - kept for raise_for, as the Python call raises it
        return _keep(q, LOCKED if isinstance(e, QueueLocked) else ERROR, e)


def _keep(q, status, exc):
    q._jit_error = (status, exc)
    return status


def _closed(q):
    return QueueClosed(f"queue {q.name!r}: this jit handle's membership has ended (closed)")


def _deadline(left):
    return math.inf if left < 0 else time.monotonic() + left


def _ask_lock(q, m, h, status, need, left):
    words = q._seg.words

    def free(mem, lockval):
        return BUSY if words[H_LOCK] else OK

    start = time.monotonic()
    deadline = max(_deadline(left), start + _wait.LOCK_PATIENCE)
    try:
        locked(q._seg, m.token, free, (), deadline)
    except LockBusy as e:
        raise _status.locked_error(q, e, time.monotonic() - start) from None
    return OK


def _ask_space(q, m, h, status, need, left):
    deadline = _deadline(left)
    timer = None if left < 0 else left
    lock_deadline = max(deadline, time.monotonic() + _wait.LOCK_PATIENCE)
    now = _retry.full_step(q, m, status, need, left != 0, timer, deadline, lock_deadline)
    if now is None:
        return OK  # a dead reader's slot was freed, or room made: try again
    if not h.state[S_SPACEBIT]:
        # Up before the look that decides to sleep: the retry that follows.
        _handle.count_waiter(q, m, (W_SPACE,), 1)
        h.state[S_SPACEBIT] = 1
        return OK
    timeout = min(deadline - now, q.reap_interval, TICK)
    seq = (status >> SEQ_SHIFT) & SEQ_MASK
    _futex.wait(q._seg.addr + 8 * H_SPACE_SEQ, seq, timeout)
    if q._m is not m:
        _status.closed_meanwhile(q)
    return OK


def _ask_space_done(q, m, h, status, need, left):
    if h.state[S_SPACEBIT]:
        h.state[S_SPACEBIT] = 0
        _handle.count_waiter(q, m, (W_SPACE,), -1)
    return OK


def _ask_data(q, m, h, status, need, left):
    code = status & CODE_MASK
    deadline = _deadline(left)
    lock_deadline = time.monotonic() + max(left if left > 0 else 0.0, _wait.LOCK_PATIENCE)
    now = _handle.idle(q, m, code, lock_deadline)
    if now >= deadline:
        return EMPTY
    if left == 0:
        return EMPTY
    timeout = min(deadline - now, TICK, q.reap_interval)
    _handle.sleep(q, m, W_DATA, H_DATA_SEQ, need & SEQ_MASK, timeout)
    return OK


def _ask_fail(q, m, h, status, need, left):
    code = status & CODE_MASK
    if code == BAD_BODY:
        raise QueueCorrupt(f"queue {q.name!r}: an array message's descriptor is corrupt")
    if code == PENDING or code == EMPTY:
        return EMPTY
    _status.fail(q, status, need=need)
    return CLOSED  # (fail always raises)


def _ask_wake(q, m, h, status, need, left):
    wake(q._seg, status)
    return OK


def _ask_follow(q, m, h, status, need, left):
    _handle.follow_check(q, m)
    return OK


_ASKS = {
    ASK_LOCK: _ask_lock,
    ASK_SPACE: _ask_space,
    ASK_SPACE_DONE: _ask_space_done,
    ASK_DATA: _ask_data,
    ASK_FAIL: _ask_fail,
    ASK_WAKE: _ask_wake,
    ASK_FOLLOW: _ask_follow,
}


def take_inbox(hid, want, addr, size, tlen):
    """A nopython pop of a handle whose inbox holds messages: the first one
    copied to the caller's ``out`` (at address ``addr``, ``size`` elements,
    its dtype text at ``buf[DESC_AT:DESC_AT + tlen]``; ``want``
    ``KIND_ARRAY`` or ``KIND_BYTES``) and taken, its fields to the handle's
    ``info``, as a pop of the queue does; or the status that leaves it there."""
    ref = _handles.get(hid)
    q = ref() if ref is not None else None
    m = q._m if q is not None else None
    if m is None or getattr(q, "_jit", (None,))[0] is not m:
        return CLOSED
    h = q._jit[1]
    dtype = np.dtype(bytes(h.buf[DESC_AT : DESC_AT + tlen]).decode())
    out = np.ctypeslib.as_array(
        ctypes.cast(addr, ctypes.POINTER(ctypes.c_uint8)), (size * dtype.itemsize,)
    )
    out = out.view(dtype)
    info = q._jit[1].info
    with m.lock:
        got = _inbox.first(q, m)
        if got is None:
            return EMPTY  # (all screened meanwhile): read the queue
        s, t, b = got
        if want == KIND_ARRAY:
            if type(b) is not np.ndarray:
                return WRONG_KIND
            if b.dtype.str != out.dtype.str:
                return WRONG_DTYPE
            if b.size > out.size:
                return NO_ROOM
            out.reshape(-1)[: b.size] = b.reshape(-1)
            info[INFO_COUNT] = b.size
            info[INFO_NDIM] = b.ndim
            info[INFO_SHAPE : INFO_SHAPE + b.ndim] = b.shape
            info[INFO_KIND] = KIND_ARRAY
        else:
            if type(b) is np.ndarray:
                return WRONG_KIND
            if len(b) > len(out):
                return NO_ROOM
            out[: len(b)] = np.frombuffer(b, np.uint8)
            info[INFO_COUNT] = len(b)
            info[INFO_NDIM] = 1
            info[INFO_SHAPE] = len(b)
            info[INFO_KIND] = KIND_BYTES
        info[INFO_SENDER] = code(s)
        info[INFO_TYPE] = code(t)
        _inbox.take(q, m)
    return OK


def code(name):
    """The 64-bit code of a sender or a message type (str or bytes) that
    nopython pops report: FNV-1a of its UTF-8 bytes, as ``kernels.user.fnv``."""
    data = name.encode() if isinstance(name, str) else bytes(name)
    h = 0xCBF29CE484222325
    for c in data:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


# -- raise_for ----------------------------------------------------------------------


def raise_for(q, status):
    """``q.raise_for(status)``: raise what the Python call would have raised
    for a nopython call's status (nothing for ``OK`` and ``EMPTY``)."""
    if type(status) is tuple:
        status = status[0]
    status = int(status)
    if status in (OK, EMPTY):
        return
    kept = getattr(q, "_jit_error", None)
    if kept is not None and kept[0] == status:
        q._jit_error = None
        raise kept[1]
    name = q.name
    if status == FULL:
        raise QueueFull(f"queue {name!r} is full (a nopython append gave up)")
    if status == TOO_LARGE:
        raise _status.too_large(q, 0)
    if status == CLOSED:
        raise _closed(q)
    if status == NO_ROOM:
        raise ValueError(f"queue {name!r}: out is too small for the next message")
    if status == WRONG_KIND:
        raise TypeError(f"queue {name!r}: the next message is not of the kind asked for")
    if status == WRONG_DTYPE:
        raise TypeError(f"queue {name!r}: the next array message has another dtype than out")
    if status == CORRUPT:
        raise QueueCorrupt(f"queue {name!r} is corrupt (seen by a nopython call)")
    if status == STALE:
        raise RuntimeError(f"queue {name!r}: this jit handle is stale: make a new one")
    if status == BAD_ARG:
        raise ValueError(
            f"queue {name!r}: a wrong argument to a nopython call (a type over "
            f"{MAX_NAME_BYTES} bytes, a non-contiguous out, a pop of a writer-only handle)"
        )
    raise ValueError(f"{status!r} is not a status of a pysyncq.jit call")
