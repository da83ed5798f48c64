"""Checks of the arguments users pass: names, ints, timers, senders, types.

Each check returns the value in the form the rest of pysyncq uses (a bare
name, an int, a float timer, bytes) or raises ``TypeError``/``ValueError``
with a message that says what was wrong and what is accepted.
"""

import math
import numbers
import os

from .layout import MAX_NAME_BYTES
from .screen import as_bytes

#: Longest queue name in bytes (POSIX shared memory names live in /dev/shm).
MAX_QUEUE_NAME = 250


def check_name(name):
    """A queue name without its leading ``/``; None picks a unique one."""
    if name is None:
        return f"psq_{os.getpid()}_{os.urandom(6).hex()}"
    if not isinstance(name, str):
        raise TypeError(f"queue name must be a str, not {type(name).__name__}")
    bare = name[1:] if name.startswith("/") else name
    if not bare or bare in (".", "..") or "/" in bare or "\0" in bare:
        raise ValueError(
            f"invalid queue name {name!r}: use a non-empty name without '/' or NUL characters"
        )
    if len(bare.encode()) > MAX_QUEUE_NAME:
        raise ValueError(
            f"queue name is {len(bare.encode())} bytes long; the limit is {MAX_QUEUE_NAME}"
        )
    return bare


def check_int(value, what, low, high):
    """``value`` as an int in ``[low, high]`` (anything with ``__index__``)."""
    if type(value) is not int:
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise TypeError(f"{what} must be an int, not {type(value).__name__}")
        value = value.__index__()
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low} and {high}, not {value}")
    return value


def check_timer(timer):
    """Validate a timer; return it as a float (inf for None)."""
    if timer is None:
        return math.inf
    if isinstance(timer, bool) or not isinstance(timer, numbers.Real):
        raise TypeError(f"timer must be a number of seconds or None, not {type(timer).__name__}")
    timer = float(timer)
    if not timer >= 0:
        raise ValueError(f"timer must be >= 0 seconds or None (wait for ever), not {timer!r}")
    return timer


def check_processes(processes):
    """Validate a ``processes=`` argument: an iterable of objects with an
    ``exitcode`` (``multiprocessing.Process``); return it as a tuple."""
    try:
        procs = tuple(processes)
    except TypeError:
        raise TypeError(
            f"processes must be an iterable of processes (multiprocessing.Process), "
            f"not {type(processes).__name__}"
        ) from None
    for p in procs:
        if not hasattr(p, "exitcode"):
            raise TypeError(
                f"processes must hold objects with an exitcode (multiprocessing.Process), "
                f"not {type(p).__name__}"
            )
    return procs


def msgtype_bytes(mtype):
    """A message type as the bytes written (str is UTF-8, objects ``str()``)."""
    t = mtype.encode() if type(mtype) is str else as_bytes(mtype)
    if len(t) > MAX_NAME_BYTES:
        raise ValueError(f"msgtype is {len(t)} bytes long; the limit is {MAX_NAME_BYTES}")
    return t


def sender_bytes(sender):
    """An ``open()`` sender name (str or bytes) as the bytes written."""
    if not isinstance(sender, (str, bytes)):
        raise TypeError(f"sender must be a str or bytes, not {type(sender).__name__}")
    b = as_bytes(sender)
    if len(b) > MAX_NAME_BYTES:
        raise ValueError(f"sender is {len(b)} bytes long; the limit is {MAX_NAME_BYTES}")
    return b
