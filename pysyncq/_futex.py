"""Sleeping on a 32-bit word of shared memory until another process changes it.

On Linux this is the futex system call on a shared mapping: ``wait`` sleeps
only while the word still holds the value the caller saw, and ``wake`` wakes
sleepers without waiting for them, so a sleeper that is killed costs the others
nothing (the kernel drops it).  Elsewhere ``wait`` polls with a short sleep.

Both are called without the queue lock held.  A signal (Ctrl-C) ends a wait
early; the caller's loop then lets Python raise ``KeyboardInterrupt``.
"""

import ctypes
import platform
import sys
import time

_INT_MAX = 0x7FFFFFFF
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98, "ppc64le": 221}


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_syscall():
    if not sys.platform.startswith("linux") or sys.byteorder != "little":
        return None, None
    number = _SYS_FUTEX.get(platform.machine())
    if number is None:
        return None, None
    fn = ctypes.CDLL(None, use_errno=True).syscall
    fn.restype = ctypes.c_long
    fn.argtypes = [
        ctypes.c_long,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    return fn, number


_syscall, _NR = _load_syscall()
HAVE_FUTEX = _syscall is not None


def wait(addr, expected, timeout):
    """Sleep while the uint32 at ``addr`` equals ``expected``, at most ``timeout`` s.

    May return early for any reason (a wake, a signal, a changed value): the
    caller always checks its condition again.
    """
    if timeout <= 0:
        return
    if _syscall is None:
        # No futex: poll.  Good enough for the platforms without one.
        time.sleep(min(timeout, 0.0005))
        return
    sec = int(timeout)
    ts = _Timespec(sec, int((timeout - sec) * 1e9))
    _syscall(_NR, addr, _FUTEX_WAIT, expected, ctypes.byref(ts), None, 0)


def wake(addr, count=_INT_MAX):
    """Wake up to ``count`` processes sleeping on ``addr``."""
    if _syscall is not None:
        _syscall(_NR, addr, _FUTEX_WAKE, count, None, None, 0)


__all__ = ["HAVE_FUTEX", "wait", "wake"]
