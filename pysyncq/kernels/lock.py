"""The queue lock: taking it once, releasing it, and what a waiter looks at
before sleeping on it.

The word holds the holder's token; CONTENDED tells the holder that someone
sleeps on H_LOCK_SEQ and must be woken at release.  Each ``op_*``
(pysyncq.kernels.ops) tries it once with ``lock_try``.
"""

import numpy as np

from ..layout import CONTENDED, H_LOCK, H_LOCK_SEQ, SEQ_MASK, WAKE_LOCK
from ._intrinsics import atomic_add, atomic_cas, atomic_load, atomic_xchg
from ._jit import SEGMENT, kernel

#: The lock word of a free lock.
FREE = 0


@kernel(inline=True)
def lock_try(w, lockval):
    """Take the lock if it is free, for ``lockval`` (the caller's token, with
    ``CONTENDED`` if it waited for the lock); True if taken."""
    return atomic_cas(w, H_LOCK, FREE, lockval) == FREE


@kernel(inline=True)
def lock_token(lockval):
    """The caller's token in ``lockval``."""
    return lockval & ~CONTENDED


@kernel()
def lock_release(w):
    """Release the lock; return ``WAKE_LOCK`` if a waiter must be woken."""
    old = atomic_xchg(w, H_LOCK, FREE)
    if old & CONTENDED:
        atomic_add(w, H_LOCK_SEQ, 1)
        return WAKE_LOCK
    return 0


@kernel((SEGMENT,))
def lock_prepare_wait(mem):
    """Before sleeping on a busy lock: mark it contended.

    Returns ``(seq, holder)``: sleep on ``H_LOCK_SEQ`` while it equals
    ``seq``.  ``holder`` is the holder's token, or ``FREE`` (0) if the lock is
    free now (do not sleep, try again).  A plain tuple: see ops.py.
    """
    w = mem.view(np.int64)
    seq = atomic_load(w, H_LOCK_SEQ) & SEQ_MASK
    holder = atomic_load(w, H_LOCK)
    if holder == FREE:
        return seq, FREE
    if not holder & CONTENDED and atomic_cas(w, H_LOCK, holder, holder | CONTENDED) != holder:
        return seq, FREE
    owner = lock_token(holder)
    # CONTENDED alone names no process (a corrupt lock word): report the word
    # itself, whose pid 0 is judged dead and taken over, instead of 0 ("free"),
    # on which the waiter would retry for ever.
    return seq, owner if owner != FREE else holder
