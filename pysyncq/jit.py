"""pysyncq.jit: the queue inside your own ``@numba.njit`` code.

Make a handle in Python, pass it to a jitted function, and append and pop
there, in nopython mode (also inside ``cache=True`` and ``nogil=True``
functions)::

    import numba, numpy as np
    from pysyncq import PySyncQ, jit as pqjit

    q = PySyncQ("sim"); q.open()
    h = q.jit_handle()              # after open(); numba takes it as an argument

    @numba.njit(cache=True)
    def simulate(h, n):
        x = np.zeros(2)
        for i in range(n):
            x[0] += 1.0; x[1] = x[0] * 0.5
            st = pqjit.append_array(h, "state", x, 1.0)   # waits up to 1 s for space
            if st != pqjit.OK:
                return i, st
        return n, pqjit.OK

    n, st = simulate(h, 200_000)
    q.raise_for(st)                 # what the Python call would have raised, or nothing

Writes: ``append_array(h, mtype, arr, timer)`` (any dtype and shape numba
has; a non-C-contiguous array is sent as a C-ordered copy) and
``append_bytes(h, mtype, buf, timer)`` (a 1-d uint8 array) return a status.
The records are those of the Python calls: a Python ``pop()`` gets the same
ndarray (or bytes).

Reads: ``pop_array(h, out, timer)`` copies the next message, which must be
an array of ``out``'s dtype with at most ``out.size`` elements, into
``out`` (in C order, whatever its shape; ``out`` must be an array numba
knows to be C-contiguous, else ``BAD_ARG``), and
``pop_bytes(h, out, timer)`` the body of a bytes or str message into a
uint8 ``out``.  Both return ``Got(status, count, ndim, sender, mtype)``:
elements (bytes) copied, the message's dimensions (its shape is
``shape(h)``), and the codes of its sender and type (``code("state")``, in
Python or in nopython code, gives the code to compare with).  A message of
another kind or dtype, or too large for ``out``, is a status
(``WRONG_KIND``, ``WRONG_DTYPE``, ``NO_ROOM``) and stays unread.  Screens set
in Python (``q.scrnsend``, ``q.scrntype``) apply, also when changed later.

``timer``: seconds to wait for space or for a message; ``0.0`` does not
wait, a negative or infinite timer waits for ever.  A short wait is a spin
in nopython code (when the queue has no more members than the process has
CPUs); a longer one sleeps in Python on the queue's futex words (numba's
``objmode``: the GIL is taken for it), so Python and nopython members wake
each other; dead lock holders and readers are dealt with there as in every
Python call.

Statuses: ``OK``; ``EMPTY`` (nothing within the timer: a Python pop's
None), ``FULL``, ``TOO_LARGE``, ``CLOSED``, ``NO_ROOM``, ``WRONG_KIND``,
``WRONG_DTYPE``, ``CORRUPT``, ``LOCKED``, ``STALE`` (make a new handle),
``ERROR``, ``BAD_ARG``.  ``q.raise_for(st)`` raises what the Python call
would have raised (the exception itself, where Python made one).

A handle belongs to one membership of one process: make it after
``open()`` in each process (a handle passed to another process is not a
member there).  A handle is for one thread at a time: its calls use
scratch space in it, so threads that append or pop at once need a
``PySyncQ`` membership each.  A pop of the handle in nopython code must not run while a ``pop_view``
block of the same handle is open.  After upgrading pysyncq, clear the
numba cache of your own ``cache=True`` functions that call these (numba
does not see that code they compiled in has changed).
"""

from collections import namedtuple

import numpy as np
from numba import njit, objmode, types
from numba.extending import overload

from . import _jitside
from ._handle import FOLLOW_INTERVAL
from ._jitside import (
    ASK_DATA,
    ASK_FAIL,
    ASK_FOLLOW,
    ASK_LOCK,
    ASK_SPACE,
    ASK_SPACE_DONE,
    ASK_WAKE,
    BAD_ARG,
    CLOSED,
    DESC_AT,
    ERROR,
    LOCKED,
    NO_ROOM,
    S_CPUS,
    S_FOLLOW,
    S_ID,
    S_INBOX,
    S_NEXT_LOOK,
    S_READER,
    S_SCR,
    S_SKIP_OWN,
    S_SPACEBIT,
    S_STALE,
    S_TYPES,
    STALE,
    JitHandle,
)
from .kernels import _jit
from .kernels._intrinsics import atomic_load, cpu_yield, monotonic_ns
from .kernels.ops import op_append_array
from .kernels.read import _screened, pop_free_with
from .kernels.user import (
    INFO_COUNT,
    INFO_NDIM,
    INFO_SENDER,
    INFO_SHAPE,
    INFO_TYPE,
    dtype_text,
    put_desc,
    put_str,
    str_code,
    take_array,
    take_bytes,
)
from .kernels.wait import active_slots, wake_now
from .layout import (
    APPEND_SKIP,
    BUSY,
    CODE_MASK,
    CORRUPT,
    EMPTY,
    FULL,
    H_DATA_SEQ,
    KIND_ARRAY,
    KIND_BYTES,
    NEED_SPACE,
    OK,
    PENDING,
    SEQ_MASK,
    TOO_LARGE,
    WAKE_ASYNC_DATA,
    WAKE_ASYNC_SPACE,
    WRONG_DTYPE,
    WRONG_KIND,
)

__all__ = [
    "BAD_ARG",
    "CLOSED",
    "CORRUPT",
    "EMPTY",
    "ERROR",
    "FULL",
    "LOCKED",
    "NO_ROOM",
    "OK",
    "STALE",
    "TOO_LARGE",
    "WRONG_DTYPE",
    "WRONG_KIND",
    "Got",
    "JitHandle",
    "append_array",
    "append_bytes",
    "code",
    "pop_array",
    "pop_bytes",
    "shape",
]

#: What a pop returns: ``status``, then (``OK`` only; zeros otherwise) the
#: elements (bytes) copied, the message's dimensions, and the codes of its
#: sender and its type (see ``code``).
Got = namedtuple("Got", "status count ndim sender mtype")

#: Tries of a busy lock, each after ``sched_yield``, before Python waits for it.
LOCK_SPINS = 64
#: Nanoseconds a full queue (an empty one) is retried (watched) in nopython
#: code before Python sleeps, where the queue has no more members than CPUs.
SPIN_NS = 50_000
_FOLLOW_NS = int(FOLLOW_INTERVAL * 1e9)
_WAKE_ASYNC = WAKE_ASYNC_DATA | WAKE_ASYNC_SPACE
_NEVER = -1  # a deadline that never comes

_slow = _jitside.slow
_take_inbox = _jitside.take_inbox


def _nopython(fn=None, *, inline=False, nrt=False):
    """``njit``, cached, stamped with the kernels' hash and this file's.
    ``inline``: a helper inlined where it is called (numba's
    ``inline="always"``).  ``nrt``: numba's memory runtime on, for the
    functions that allocate or box (objmode); the others, as the kernels,
    count no references: the caller's arrays outlive the call, and a
    reference count is an atomic add (two per array and call: they were
    most of an append's and a pop's time)."""

    def make(fn):
        options = {"inline": "always"} if inline else {}
        if not nrt:
            options["_nrt"] = False
        disp = njit(cache=True, **options)(fn)
        _jit.stamp(disp, __file__)
        return disp

    return make if fn is None else make(fn)


@_nopython(nrt=True)
def _ask(h, ask, status, need, left):
    """Hand the wait (or the failure) to Python: ``_jitside.slow``."""
    hid = h.state[S_ID]
    with objmode(r="int64"):
        r = _slow(hid, ask, status, need, left)
    return r


@_nopython
def _deadline(timer):
    if timer < 0 or timer == np.inf:
        return _NEVER
    return monotonic_ns() + np.int64(timer * 1e9)


@_nopython
def _left(deadline):
    """Seconds to ``deadline`` (``_NEVER``: -1.0, no limit)."""
    if deadline == _NEVER:
        return -1.0
    return max(deadline - monotonic_ns(), 0) / 1e9


@_nopython
def _may_spin(h):
    return active_slots(h.mem.view(np.int64)) <= h.state[S_CPUS]


@_nopython(inline=True)
def _scr(h):
    return h.scr[h.state[S_SCR]]


@_nopython(inline=True)
def _skips(h, tlen):
    """Whether this handle screens its own message (sent with APPEND_SKIP,
    as Python's append does: its own cursor passes it)."""
    if h.state[S_SKIP_OWN]:
        return True
    if h.state[S_TYPES] == 0:
        return False
    scr = _scr(h)
    sw = scr.view(np.int64)
    return _screened(h.buf, 0, tlen, scr, sw, sw[0], sw[0] + sw[1])


@_nopython
def _follow(h):
    """A follow=True handle: look at the creator every FOLLOW_INTERVAL."""
    now = monotonic_ns()
    if now < h.state[S_NEXT_LOOK]:
        return OK
    h.state[S_NEXT_LOOK] = now + _FOLLOW_NS
    return _ask(h, ASK_FOLLOW, 0, 0, 0.0)


@_nopython(inline=True)
def _write(h, tlen, dlen, data, kind, timer):
    """Append the record: type at ``h.buf[:tlen]``, descriptor at
    ``h.buf[DESC_AT:DESC_AT + dlen]``, then ``data``; wait as ``timer`` says."""
    state = h.state
    if state[S_STALE]:
        return STALE
    if state[S_FOLLOW] and _follow(h) != OK:
        return CLOSED
    mem = h.mem
    mtype = h.buf[:tlen]
    desc = h.buf[DESC_AT : DESC_AT + dlen]
    if _skips(h, tlen):
        kind |= APPEND_SKIP
    need = len(h.sender) + tlen + dlen + len(data)
    deadline = 0
    timed = False
    spins = 0
    spin_until = 0
    result = OK
    while True:
        status = op_append_array(mem, h.token, h.slot, h.sender, mtype, desc, data, kind)
        if status & _WAKE_ASYNC:
            _ask(h, ASK_WAKE, status, 0, 0.0)
        code = status & CODE_MASK
        if code == OK:
            break
        if not timed:
            deadline = _deadline(timer)
            timed = True
        if code == BUSY:
            spins += 1
            if spins <= LOCK_SPINS:
                cpu_yield()
                continue
            spins = 0
            result = _ask(h, ASK_LOCK, status, need, _left(deadline))
        elif code == FULL:
            if timer != 0 and spin_until == 0 and _may_spin(h):
                spin_until = monotonic_ns() + SPIN_NS
                if deadline != _NEVER:
                    spin_until = min(spin_until, deadline)
            if spin_until and monotonic_ns() < spin_until:
                cpu_yield()
                continue
            result = _ask(h, ASK_SPACE, status, need, _left(deadline))
        else:
            result = _ask(h, ASK_FAIL, status, need, 0.0)
        if result != OK:
            break
    if state[S_SPACEBIT]:
        _ask(h, ASK_SPACE_DONE, 0, 0, 0.0)
    return result


def _c_order(arr):
    """``arr`` if it is C-contiguous (known when compiled), else a C copy."""


@overload(_c_order, inline="always")
def _c_order_impl(arr):
    if isinstance(arr, types.Array) and arr.layout == "C":
        return lambda arr: arr
    return lambda arr: np.ascontiguousarray(arr)


@_nopython(nrt=True)
def append_array(h, mtype, arr, timer):
    """Append numpy array ``arr`` as message type ``mtype`` (a str), waiting
    up to ``timer`` seconds for space: a status."""
    return _append_c(h, mtype, _c_order(arr), timer)


@_nopython
def _append_c(h, mtype, a, timer):
    tlen = put_str(h.buf, 0, mtype)
    if tlen < 0:
        return BAD_ARG
    dlen = put_desc(h.buf, DESC_AT, a, len(h.sender) + tlen)
    return _write(h, tlen, dlen, a.reshape(a.size).view(np.uint8), KIND_ARRAY, timer)


@_nopython(nrt=True)
def append_bytes(h, mtype, buf, timer):
    """Append the bytes of the 1-d uint8 array ``buf`` as message type
    ``mtype`` (a str): a Python reader gets ``bytes``.  A status."""
    return _append_bytes_c(h, mtype, _c_order(buf), timer)


@_nopython
def _append_bytes_c(h, mtype, buf, timer):
    tlen = put_str(h.buf, 0, mtype)
    if tlen < 0:
        return BAD_ARG
    return _write(h, tlen, 0, buf, KIND_BYTES, timer)


@_nopython(inline=True)
def _try(h, out, want):
    w = h.mem.view(np.int64)
    if want == KIND_ARRAY:
        return pop_free_with(w, h.mem, h.slot, h.token, _scr(h), take_array, out, h.info)
    return pop_free_with(w, h.mem, h.slot, h.token, _scr(h), take_bytes, out, h.info)


@_nopython(inline=True)
def _from_inbox(h, out, want):
    """The inbox's first message into ``out``, by Python: ``out`` is told by
    its address, size and dtype text (at ``h.buf[DESC_AT:]``), not handed
    over (objmode boxing an array argument misbehaves on a cold cache)."""
    text = dtype_text(out)
    for i in range(len(text)):
        h.buf[DESC_AT + i] = text[i]
    return _inbox_call(h, want, out.ctypes.data, out.size, len(text))


@_nopython(nrt=True)
def _inbox_call(h, want, addr, size, tlen):
    hid = h.state[S_ID]
    with objmode(r="int64"):
        r = _take_inbox(hid, want, addr, size, tlen)
    return r


@_nopython(inline=True)
def _read(h, out, want, timer):
    """Pop the next message into ``out`` (``want`` KIND_ARRAY or KIND_BYTES),
    waiting as ``timer`` says: a status."""
    state = h.state
    if state[S_STALE]:
        return STALE
    if not state[S_READER]:
        return BAD_ARG
    w = h.mem.view(np.int64)
    deadline = 0
    timed = False
    spin_until = 0
    while True:
        if state[S_INBOX]:
            r = _from_inbox(h, out, want)
            if r != EMPTY:
                return r
        status, rep = _try(h, out, want)
        status = wake_now(h.mem, status)
        if status & _WAKE_ASYNC:
            _ask(h, ASK_WAKE, status, 0, 0.0)
        code = status & CODE_MASK
        if code == OK:
            return OK
        if code == EMPTY or code == PENDING:
            if state[S_FOLLOW] and _follow(h) != OK:
                return CLOSED
            if timer == 0:
                if code == PENDING:
                    return _ask(h, ASK_DATA, status, rep.seq, 0.0)
                return EMPTY
            if not timed:
                deadline = _deadline(timer)
                timed = True
            now = monotonic_ns()
            if deadline != _NEVER and now >= deadline:
                return EMPTY
            if spin_until == 0 and _may_spin(h):
                spin_until = now + SPIN_NS
                if deadline != _NEVER:
                    spin_until = min(spin_until, deadline)
            if now < spin_until:
                seq = rep.seq
                while atomic_load(w, H_DATA_SEQ) & SEQ_MASK == seq:
                    if monotonic_ns() >= spin_until:
                        break
                continue
            r = _ask(h, ASK_DATA, status, rep.seq, _left(deadline))
            if r != OK:
                return r
        elif code == BUSY:
            continue  # (RETRY: writers kept moving the cursor)
        elif code == NEED_SPACE or code == WRONG_KIND or code == WRONG_DTYPE:
            return code
        else:
            return _ask(h, ASK_FAIL, status, 0, 0.0)


@_nopython(inline=True)
def _got(h, status):
    if status != OK:
        return Got(status, 0, 0, 0, 0)
    i = h.info
    return Got(status, i[INFO_COUNT], i[INFO_NDIM], i[INFO_SENDER], i[INFO_TYPE])


def _pop_into(h, out, want, timer):
    """A pop into ``out`` if numba knows it is C-contiguous, else ``BAD_ARG``."""


@overload(_pop_into, inline="always")
def _pop_into_impl(h, out, want, timer):
    if isinstance(out, types.Array) and out.layout == "C":
        return lambda h, out, want, timer: _got(h, _read(h, out, want, timer))
    return lambda h, out, want, timer: Got(BAD_ARG, 0, 0, 0, 0)


@_nopython
def pop_array(h, out, timer):
    """Pop the next message, an array of ``out``'s dtype, into ``out``
    (C-contiguous, at least as many elements), waiting up to ``timer``
    seconds: a ``Got``."""
    return _pop_into(h, out, KIND_ARRAY, timer)


@_nopython
def pop_bytes(h, out, timer):
    """Pop the next message, bytes or str, its body into the uint8 array
    ``out``, waiting up to ``timer`` seconds: a ``Got`` (``count``: the
    body's bytes)."""
    return _pop_into(h, out, KIND_BYTES, timer)


@_nopython(nrt=True)
def shape(h):
    """The shape of the array the last ``pop_array`` copied (an int64 view
    into the handle, valid until its next pop)."""
    return h.info[INFO_SHAPE : INFO_SHAPE + h.info[INFO_NDIM]]


@_nopython
def code(name):
    """The code of a sender or message type ``name`` (a str) that ``Got``
    reports: compare ``got.mtype == pqjit.code("state")``."""
    return str_code(name)
