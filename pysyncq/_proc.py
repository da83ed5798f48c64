"""Process identity: a token that names one process for its whole life.

A token is ``pid | start_time << PID_BITS``.  The start time (clock ticks after
boot, from ``/proc/<pid>/stat``) tells a process apart from a later one that was
given the same pid, so a dead process is never mistaken for a live one.  Where
``/proc`` is missing (not Linux) the start time is 0 and liveness falls back to
``os.kill(pid, 0)``.
"""

import os

from .layout import PID_BITS, PID_MASK, START_MASK


def _stat_fields(pid):
    """``(state, start_time)`` of ``pid``, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after
    # its last ')'.  Then field 3 is the state and field 22 the start time.
    rest = data[data.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[19])


_HAVE_PROC = os.path.exists("/proc/self/stat")
_cache = (None, 0)


def token_of(pid):
    """The token of live process ``pid``, or None if it does not exist."""
    if not _HAVE_PROC:
        return pid
    fields = _stat_fields(pid)
    return None if fields is None else pid | (fields[1] & START_MASK) << PID_BITS


def own_token():
    """The token of the calling process (recomputed after a fork)."""
    global _cache
    pid = os.getpid()
    if _cache[0] != pid:
        _cache = (pid, token_of(pid))
    return _cache[1]


_ns_cache = (None, (0, 0))


def namespaces():
    """``(pid namespace inode, time namespace inode)`` of this process; 0 where
    unknown.  Pids and start times mean the same only within one pair."""
    global _ns_cache
    pid = os.getpid()
    if _ns_cache[0] != pid:
        inodes = []
        for kind in ("pid", "time"):
            try:
                inodes.append(os.stat(f"/proc/self/ns/{kind}").st_ino)
            except OSError:
                inodes.append(0)
        _ns_cache = (pid, tuple(inodes))
    return _ns_cache[1]


def token_pid(token):
    return token & PID_MASK


def is_alive(token):
    """False only if the process named by ``token`` has certainly ended.

    A zombie (ended, not yet waited for by its parent) counts as ended.  When
    the answer cannot be known (no permission to look), the process counts as
    alive: reaping a live process would be far worse than waiting.
    """
    pid = token & PID_MASK
    if pid == 0:
        return False
    if not _HAVE_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError, IndexError):
        return True
    if fields is None:
        return False
    state, start = fields
    if state in ("Z", "X", "x"):
        return False
    return (start & START_MASK) == (token >> PID_BITS) & START_MASK
