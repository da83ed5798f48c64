"""asyncio for :class:`~pysyncq.PySyncQ`: ``apop``, ``aappend``,
``aappend_array`` and ``aiter``, the coroutine twins of ``pop``, ``append``,
``append_array`` and iteration (bound as methods of the handle).

Nothing here blocks the event loop or starts a thread:

* Every message is popped (or appended) by one synchronous, non-blocking
  kernel call, never across an ``await``: a coroutine cancelled at any point
  has either returned its message or left it unread for the next pop.
* Waiting for data (or space) advertises ``W_DATA`` (or ``W_SPACE``) and
  ``W_ASYNC`` in the handle's slot and watches the handle's datagram socket
  (:mod:`pysyncq._aiowake`) with ``loop.add_reader``; a writer whose kernel
  saw a waiter sends it a byte.  After advertising, the queue is looked at
  again before the first await, so an append that came in between is never
  missed; every await is bounded by ``TICK`` (0.5 s), so a lost signal costs
  latency, never a hang.  Where the socket cannot be had (no abstract
  namespace, or the handle already waits in another thread's loop) the
  coroutine polls, backing off from 1 ms to 50 ms.
* A busy queue lock is waited for with ``asyncio.sleep``, by the same policy
  as blocking calls (``_wait.LockWatch``: a holder found dead after
  ``LOCK_CHECK`` is replaced), never with a futex sleep.
* Large bodies (``copy_outside`` bytes or more) are reserved and copied
  outside the lock, as ``append`` does; a full queue is handled by the same
  policy as blocking writes (``_retry.full_step``).

Many coroutines may wait on one handle at once: they share its socket, each
wakes on every signal and pops for itself, so each gets a distinct message.
"""

import os
import sys
import threading
import time

from . import _aiowake, _handle, _inbox, _outside, _retry, _status, _wait, kernels
from ._args import check_processes, check_timer, msgtype_bytes
from ._wait import WAKE_BITS, LockBusy, LockWatch, wake
from .codec import encode_array, encode_body, message, record_fields
from .layout import (
    APPEND_SKIP,
    BUSY,
    CODE_MASK,
    CONTENDED,
    EMPTY,
    H_LOCK,
    KIND_ARRAY,
    KIND_MASK,
    NEED_SPACE,
    OK,
    PENDING,
    W_ASYNC,
    W_DATA,
    W_SPACE,
)

#: Polling, where no socket can be had: first and longest pause, in seconds.
POLL_FIRST = 0.001
POLL_MAX = 0.05
_LOCK_SLEEP_FIRST = 0.0005
_LOCK_SLEEP_MAX = 0.01


def _aio():
    """The asyncio module.  Not imported with pysyncq (it is large, and most
    programs never await a queue): a coroutine of this module only runs
    inside a running asyncio loop, so asyncio is imported by then."""
    return sys.modules.get("asyncio") or __import__("asyncio")


_episodes = threading.Lock()  # guards every handle's ``_aio_ep``


def _forget_after_fork():
    # A forked child's handles are not waiting: drop (and close its copy of)
    # any socket the parent's loop was watching.
    for q in list(_handle.live):
        ep = q.__dict__.pop("_aio_ep", None)
        if ep is not None:
            ep.sock.close()


os.register_at_fork(after_in_child=_forget_after_fork)


class _Episode:
    """A handle's socket while some of its coroutines wait, in one loop."""

    __slots__ = ("loop", "sock", "member", "futures", "users")

    def __init__(self, loop, sock, member):
        self.loop = loop
        self.sock = sock
        self.member = member
        self.futures = set()
        self.users = 0

    def readable(self):
        try:
            while self.sock.recv(64):
                pass
        except OSError:  # drained (or closed meanwhile)
            pass
        futures, self.futures = self.futures, set()
        for f in futures:
            if not f.done():
                f.set_result(None)


def _join(q, m, loop):
    """The handle's episode in ``loop`` (made if none), or None: poll."""
    with _episodes:
        ep = q.__dict__.get("_aio_ep")
        if ep is not None:
            if ep.loop is loop and ep.member is m:
                ep.users += 1
                return ep
            return None
        try:
            sock = _aiowake.new_socket()
        except OSError:
            return None
        try:
            sock.bind(_aiowake.address(q._seg.instance, m.slot, m.token))
            ep = _Episode(loop, sock, m)
            loop.add_reader(sock.fileno(), ep.readable)
        except (OSError, NotImplementedError, ValueError):
            sock.close()
            return None
        ep.users = 1
        q._aio_ep = ep
        return ep


def _leave(q, ep):
    with _episodes:
        ep.users -= 1
        if ep.users:
            return
        if q.__dict__.get("_aio_ep") is ep:
            del q._aio_ep
    try:
        ep.loop.remove_reader(ep.sock.fileno())
    except (RuntimeError, ValueError, OSError):  # the loop is closed already
        pass
    ep.sock.close()


def _wake_later(fut):
    if not fut.done():
        fut.set_result(None)


class _Waiter:
    """One coroutine's wait for ``bit`` (``W_DATA`` or ``W_SPACE``).

    Made after an attempt found nothing: it advertises the bit, and the
    caller must :meth:`arm` and try again before its first :meth:`wait`.
    """

    def __init__(self, q, m, bit):
        self.q, self.m, self.bit = q, m, bit
        self.loop = _aio().get_running_loop()
        self.fut = None
        self.delay = POLL_FIRST
        self.ep = _join(q, m, self.loop)
        if self.ep is not None:
            try:
                self._count(1)
            except BaseException:
                _leave(q, self.ep)
                raise

    def _count(self, n):
        _handle.count_waiter(self.q, self.m, (self.bit, W_ASYNC), n)

    def arm(self):
        """Be woken by any signal from now on (call before looking again)."""
        if self.ep is not None and self.fut is None:
            self.fut = self.loop.create_future()
            self.ep.futures.add(self.fut)

    async def wait(self, timeout):
        if self.ep is None:
            pause = min(self.delay, timeout)
            self.delay = min(self.delay * 2, POLL_MAX)
            await _aio().sleep(pause)
            return
        self.arm()
        fut, self.fut = self.fut, None
        if fut.done():
            return
        later = self.loop.call_later(timeout, _wake_later, fut)
        try:
            await fut
        finally:
            later.cancel()
            self.ep.futures.discard(fut)

    def close(self):
        ep, self.ep = self.ep, None
        if ep is None:
            return
        if self.fut is not None:
            ep.futures.discard(self.fut)
            self.fut = None
        try:
            self._count(-1)
        finally:
            _leave(self.q, ep)


class _LockWait:
    """Waiting for a queue lock without blocking the loop: ``LockWatch``'s
    policy, with yields to the loop and sleeps of up to 10 ms."""

    def __init__(self, q, m, start, deadline):
        self.q = q
        self.start = start
        self.watch = LockWatch(q._seg, m.token, deadline)
        self.delay = _LOCK_SLEEP_FIRST

    async def pause(self):
        if self.watch.yielding():
            await _aio().sleep(0)
            return
        q = self.q
        w = q._seg.words
        if w is None:
            _status.closed_meanwhile(q)
        holder = int(w[H_LOCK]) & ~CONTENDED
        if holder:
            try:
                if self.watch.judge(holder):
                    return
            except LockBusy as e:
                raise _status.locked_error(q, e, self.watch.deadline - self.start) from None
        await _aio().sleep(self.delay)
        self.delay = min(self.delay * 2, _LOCK_SLEEP_MAX)


def _try_pop(q, m, procs=None):
    """One pop that never waits: ``(sender, type, body, kind)``, or the code
    ``EMPTY`` (also when stopped at an unpublished reservation) or ``BUSY``.
    Raises as ``pop`` does (``procs``: the processes it watches)."""
    seg = q._seg
    while True:
        with m.lock:
            if m.inbox.items and (got := _inbox.take(q, m)) is not None:
                return got  # moved aside for a write (see _inbox)
            scr = _handle.screens(q)
            status, slen, tlen, blen, kind = kernels.op_pop(
                q._mem, m.token, m.slot, scr, m.out, m.waits[0]
            )
            code = status & CODE_MASK
            fields = None if code else record_fields(m.out_mm, slen, tlen, blen, kind)
        if status & WAKE_BITS:
            wake(seg, status)
        if fields is not None:
            return fields
        if code == EMPTY or code == PENDING:
            _handle.idle(q, m, code, time.monotonic(), procs)  # follow, watch, reap
            return EMPTY
        if code == BUSY:
            return code
        if code == NEED_SPACE:
            with m.lock:
                m.grow(blen)
        else:
            _status.fail(q, status, slen, blen)


def _result(fields, decode):
    s, t, b, _ = fields
    return message(s, t, b, decode)


async def apop(q, timer=0.5, decode=True, *, processes=None):
    """``pop(block=True, timer=timer, decode=decode, processes=processes)``
    for asyncio: waits without blocking the event loop; None when ``timer``
    passes."""
    m = q._m
    if m is None or not m.reader or m.viewing:
        _status.not_reader(q, m)
    timer = check_timer(timer)
    if processes is not None:
        processes = check_processes(processes)
    got = _try_pop(q, m, processes)
    if type(got) is tuple:
        return _result(got, decode)
    start = time.monotonic()
    deadline = start + timer
    lockwait = waiter = None
    try:
        while True:
            if got == BUSY:
                if lockwait is None:
                    lockwait = _LockWait(q, m, start, start + max(timer, _wait.LOCK_PATIENCE))
                await lockwait.pause()
            else:
                lockwait = None
                now = time.monotonic()
                if now >= deadline:
                    return None
                if waiter is None:
                    waiter = _Waiter(q, m, W_DATA)  # then look again before waiting
                else:
                    await waiter.wait(min(deadline - now, _wait.TICK))
                waiter.arm()
            got = _try_pop(q, m, processes)
            if type(got) is tuple:
                return _result(got, decode)
    finally:
        if waiter is not None:
            waiter.close()


async def _append(q, m, op, args, need, timer):
    """Run append kernel ``op(mem, lockval, *args)`` until it succeeds, waiting
    for the lock or for space without blocking the loop; raise as the
    blocking ``append(block=True, timer=timer)`` does.  Returns the kernel's
    result (a status, or a tuple led by one).  ``need``: the payload in
    bytes, for the error messages."""
    seg = q._seg
    result = op(q._mem, m.token, *args)
    status = result[0] if type(result) is tuple else result
    if status & CODE_MASK == OK:
        if status & WAKE_BITS:
            wake(seg, status)
        return result
    start = time.monotonic()
    deadline = start + timer
    lock_deadline = max(deadline, start + _wait.LOCK_PATIENCE)
    lockwait = waiter = None
    try:
        while True:
            if status & WAKE_BITS:
                wake(seg, status)
            code = status & CODE_MASK
            if code == OK:
                return result
            if code == BUSY:
                if lockwait is None:
                    lockwait = _LockWait(q, m, start, lock_deadline)
                await lockwait.pause()
            else:
                lockwait = None
                try:
                    # Reaping never waits for the lock: that would block the loop.
                    now = _retry.full_step(q, m, status, need, True, timer, deadline, 0.0)
                except LockBusy:
                    now = time.monotonic()  # best effort: the next look reaps
                if now is not None:
                    if waiter is None:
                        waiter = _Waiter(q, m, W_SPACE)  # then look again before waiting
                    else:
                        await waiter.wait(min(deadline - now, q.reap_interval, _wait.TICK))
                    waiter.arm()
            result = op(q._mem, m.token, *args)
            status = result[0] if type(result) is tuple else result
    finally:
        if waiter is not None:
            waiter.close()


def _skip(q, m, t, kind):
    """``kind`` with ``APPEND_SKIP`` if this handle screens its own message."""
    return kind | APPEND_SKIP if _handle.skips(q, m, t) else kind


async def aappend(q, msgtype="", msg="", timer=0.5):
    """``append(msgtype, msg, block=True, timer=timer)`` for asyncio: waits
    without blocking the event loop."""
    m = q._m
    if m is None:
        _status.not_member(q)
    timer = check_timer(timer)
    t = msgtype_bytes(msgtype)
    body, kind = encode_body(msg)
    kind = _skip(q, m, t, kind)
    need = len(m.sender_bytes) + len(t) + len(body)
    if len(body) >= q.copy_outside:  # reserved under the lock, copied outside it
        args = (m.slot, m.sender_bytes, t, b"", len(body), kind & KIND_MASK)
        status, pos = await _append(q, m, _outside.reserve_attempt(m), args, need, timer)
        _outside.fill(q, m, pos, t, body, kind)
        return
    args = (m.slot, m.sender_bytes, t, body, kind)
    await _append(q, m, kernels.op_append, args, need, timer)


async def aappend_array(q, mtype, arr, timer=0.5):
    """``append_array(mtype, arr, block=True, timer=timer)`` for asyncio."""
    m = q._m
    if m is None:
        _status.not_member(q)
    timer = check_timer(timer)
    t = msgtype_bytes(mtype)
    desc, data = encode_array(arr, len(m.sender_bytes) + len(t))
    args = (m.slot, m.sender_bytes, t, desc, data, _skip(q, m, t, KIND_ARRAY))
    need = len(m.sender_bytes) + len(t) + len(desc) + len(data)
    await _append(q, m, kernels.op_append_array, args, need, timer)


def aiter(q, timer=0.5, decode=True):
    """``async for m in q.aiter(timer=0.5)``: :meth:`apop` until nothing
    comes within ``timer`` seconds."""
    return AsyncIterator(q, timer, decode)


class AsyncIterator:
    """``async for m in q.aiter(timer=0.5, decode=True)``: ``apop`` until it
    returns None (nothing came within ``timer`` seconds)."""

    def __init__(self, q, timer=0.5, decode=True):
        if q._m is None:
            _status.not_member(q)
        check_timer(timer)
        self.q, self.timer, self.decode = q, timer, decode

    def __aiter__(self):
        return self

    async def __anext__(self):
        m = await apop(self.q, self.timer, self.decode)
        if m is None:
            raise StopAsyncIteration
        return m
