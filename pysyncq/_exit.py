"""A quick exit for processes started by ``multiprocessing``: skip the final GC.

Why
---
A spawned child that used pysyncq takes far longer to exit after its target
returned than a forked one (benchmarks/PROFILE.md section 5).  The time goes
to the interpreter's shutdown garbage collection, which walks every object
alive at exit, numba's typing and code objects included (tens of thousands,
more once numba has set itself up to compile).  A forked child skips it
because multiprocessing ends it with ``os._exit``.

What
----
An ``atexit`` callback, registered when pysyncq is imported, calls
``gc.collect(1)`` and then ``gc.freeze()``: garbage in the young generations
(what the process's last work dropped) is finalized as usual, and everything
still alive is moved out of the collector's reach, so the shutdown collections
have almost nothing to walk.  It runs by default only in processes that
``multiprocessing`` started (spawn, forkserver; ``parent_process()`` is set),
where a parent waits in ``join()``.

What still happens at exit: every ``atexit`` callback (the user's, in their
usual order), ``weakref.finalize`` objects with ``atexit=True``, multiprocessing's
finalizers (they run before the interpreter exits: in a child, right after
its target returns), so pysyncq's own duties too: handles release their slot,
and the creator's hold is dropped before the children are joined.

What does not: objects still alive at exit (or older garbage) that sit in a
reference cycle are not collected, so their ``__del__`` methods and
``weakref`` callbacks do not run.  CPython does not promise that they run at
exit, but a program that relies on it (say, a file in a cycle flushed by its
finalizer) can turn the quick exit off.

Switch: ``PYSYNCQ_FAST_EXIT=0`` in the environment (inherited by spawned
children) or :func:`fast_exit(False) <fast_exit>` in the process itself turns it
off; ``PYSYNCQ_FAST_EXIT=1`` or ``fast_exit(True)`` turns it on in any
process, the main one included.
"""

import atexit
import gc
import multiprocessing
import multiprocessing.util  # registers its exit hook first: it runs after ours
import os

#: The environment variable read at exit when :func:`fast_exit` was not called.
ENV = "PYSYNCQ_FAST_EXIT"

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")
_choice = None  # set by fast_exit(); None: the environment, then the default


def fast_exit(enabled=True):
    """Skip (``True``) or keep (``False``) the interpreter's final garbage
    collection when this process exits; return the previous setting.

    The default, without a call and without ``PYSYNCQ_FAST_EXIT`` in the
    environment, is on in processes started by ``multiprocessing`` and off in
    the main process.  When it is on, objects still alive at exit that are in
    reference cycles are not finalized (their ``__del__`` does not run);
    ``atexit`` callbacks, ``weakref.finalize(atexit=True)`` and multiprocessing's
    finalizers run as usual.  Only this process: set ``PYSYNCQ_FAST_EXIT`` in
    the environment to decide for the children it starts.
    """
    global _choice
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, not {enabled!r}")
    before = enabled_now()
    _choice = enabled
    return before


def enabled_now():
    """Whether this process would skip the final garbage collection if it
    exited now (the call, else the environment, else the default)."""
    if _choice is not None:
        return _choice
    value = os.environ.get(ENV, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    return multiprocessing.parent_process() is not None


def _at_exit():
    if enabled_now():
        gc.collect(1)  # young garbage is finalized as usual
        gc.freeze()


atexit.register(_at_exit)
