"""Starting the watcher of a queue (``_watcher.py``) when this process creates one.

The watcher removes the segment once no live process holds it, whatever
killed them (issue 18: a lone parent killed by SIGTERM, a daemon producer
killed after its parent closed, a kernel restart).  It is started with
``posix_spawn`` (a few ms, and no ``fork`` of this process: numba's threads
and locks are not copied), in a session of its own, its output to /dev/null,
and forks at once so that it is no child of this process (the first
process, which ends then, is reaped here).  ``PYSYNCQ_WATCH=0`` in the environment
starts none (the segment is then left for the next process that opens the
name, or for ``python -m pysyncq clean``, as before).
"""

import os
import sys
import threading

#: In the environment, ``0`` keeps pysyncq from starting watchers.
ENV = "PYSYNCQ_WATCH"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_watcher.py")
#: The folder that holds the package: the watcher imports pysyncq from it.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(SCRIPT))

#: Pids of the watchers' first processes this process started and has not
#: yet reaped, and the lock of the list (close() may run in any thread).
_started = []
_lock = threading.Lock()


def enabled():
    return os.environ.get(ENV, "1").strip() != "0"


def start(name, instance):
    """Start the watcher of queue ``name`` (segment ``instance``); its pid,
    or None when watchers are off or it could not be started (the queue
    works all the same, as it did without one)."""
    reap()
    if not enabled() or getattr(sys, "frozen", False) or not hasattr(os, "posix_spawn"):
        return None  # (a frozen program's executable is not a Python to run a script)
    if not sys.executable or not os.path.exists(SCRIPT):
        return None
    null = os.devnull
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, null, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, null, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    argv = [sys.executable, "-I", "-S", SCRIPT, name, str(int(instance)), PACKAGE_PARENT]
    try:
        pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions, setsid=True)
    except (OSError, NotImplementedError):
        return None
    with _lock:
        _started.append(pid)
    return pid


def reap():
    """Collect the exit status of the first processes of watchers (each forks
    the watcher proper and ends at once: no zombie of it stays here)."""
    with _lock:
        for pid in list(_started):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # collected by someone else (os.wait())
                done = pid
            if done:
                _started.remove(pid)


def _forget():
    global _lock
    _started.clear()  # a forked child's parent reaps them
    _lock = threading.Lock()  # free, whatever another thread of the parent held


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
