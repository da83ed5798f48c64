"""Wake-ups an asyncio loop can watch: one datagram socket per waiting handle.

The futex a blocking ``pop`` sleeps on cannot be watched by a selector.  So a
handle with coroutines waiting (``apop``, ``aappend``; see :mod:`pysyncq.aio`)
binds a non-blocking ``AF_UNIX`` datagram socket in Linux's *abstract*
namespace (no file, gone when the socket closes, even on SIGKILL), registers
it with ``loop.add_reader`` and advertises ``W_ASYNC`` next to ``W_DATA`` or
``W_SPACE`` in its slot's ``S_WAIT`` word.  The kernels see ``W_DATA`` /
``W_SPACE`` as for any sleeper and ask for a wake in their status; ``wake``
(in :mod:`pysyncq._wait`) then calls :func:`signal`, which sends one byte to
the socket of every slot that advertises ``W_ASYNC`` and the bit woken.

The socket's name is derived from the queue's instance id, the slot and the
owner's process token, so a reused name, slot or pid never reaches a stranger.
A send that fails (nobody bound: the waiter died; buffer full: it is readable
already) is ignored: every async wait is bounded by a short tick anyway.
"""

import atexit
import socket
import threading

import numpy as np

from .layout import (
    H_SLOT_HWM,
    HEADER_WORDS,
    S_TOKEN,
    S_WAIT,
    SLOT_WORDS,
    W_ASYNC,
    W_DATA,
    W_SPACE,
    WAKE_ASYNC_DATA,
    WAKE_ASYNC_SPACE,
    WAKE_DATA,
    WAKE_SPACE,
)

_sender = None
_sender_lock = threading.Lock()
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0) | getattr(socket, "SOCK_CLOEXEC", 0)


def address(instance, slot, token):
    """The abstract socket address of the async waiters of ``slot``."""
    return b"\0pysyncq/%x/%d/%x" % (instance, slot, token)


def new_socket():
    """A non-blocking datagram socket (``OSError`` where there is none)."""
    family = getattr(socket, "AF_UNIX", None)
    if family is None:  # pragma: no cover - not POSIX
        raise OSError("no AF_UNIX sockets here")
    s = socket.socket(family, socket.SOCK_DGRAM | _NONBLOCK)
    s.setblocking(False)
    return s


def _sending_socket():
    global _sender
    with _sender_lock:
        if _sender is None:
            _sender = new_socket()
            atexit.register(_sender.close)
        return _sender


def signal(seg, status):
    """Send a byte to every slot waiting in a loop for what ``status`` wakes.

    Reads the slot words without the lock (a writer calls it after its kernel
    returned); costs a short scan of the table, and only runs when a kernel
    saw some waiter.
    """
    w = seg.words
    if w is None:
        return
    want = (W_DATA if status & (WAKE_DATA | WAKE_ASYNC_DATA) else 0) | (
        W_SPACE if status & (WAKE_SPACE | WAKE_ASYNC_SPACE) else 0
    )
    hwm = min(max(int(w[H_SLOT_HWM]), 0), seg.nslots)
    base = HEADER_WORDS + S_WAIT
    slots = range(hwm)
    if hwm > 16:  # numpy's scan beats a Python loop over a long table
        slots = np.flatnonzero(w[base : base + hwm * SLOT_WORDS : SLOT_WORDS] & W_ASYNC).tolist()
    for i in slots:
        bits = int(w[base + i * SLOT_WORDS])
        if bits & W_ASYNC and bits & want:
            token = int(w[HEADER_WORDS + i * SLOT_WORDS + S_TOKEN])
            try:
                s = _sending_socket()
                s.sendto(b"\1", address(seg.instance, i, token))
            except OSError:
                pass
