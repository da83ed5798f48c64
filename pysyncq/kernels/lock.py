"""The queue lock: its release, and what a waiter looks at before sleeping on it.

The word holds the holder's token; CONTENDED tells the holder that someone
sleeps on H_LOCK_SEQ and must be woken at release.  It is taken by one
compare-and-swap in each ``op_*`` (pysyncq.kernels.ops).
"""

import numpy as np

from ..layout import CONTENDED, H_LOCK, H_LOCK_SEQ, WAKE_LOCK
from ._intrinsics import atomic_add, atomic_cas, atomic_load, atomic_xchg
from ._jit import SEGMENT, kernel
from .check import _SEQ32


@kernel()
def lock_release(w):
    """Release the lock; return ``WAKE_LOCK`` if a waiter must be woken."""
    old = atomic_xchg(w, H_LOCK, 0)
    if old & CONTENDED:
        atomic_add(w, H_LOCK_SEQ, 1)
        return WAKE_LOCK
    return 0


@kernel((SEGMENT,))
def lock_prepare_wait(mem):
    """Before sleeping on a busy lock: mark it contended.

    Returns ``(seq, holder)``: sleep on ``H_LOCK_SEQ`` while it equals
    ``seq``.  ``holder`` is the holder's token, or 0 if the lock is free now
    (do not sleep, try again).
    """
    w = mem.view(np.int64)
    seq = atomic_load(w, H_LOCK_SEQ) & _SEQ32
    holder = atomic_load(w, H_LOCK)
    if holder == 0:
        return seq, 0
    if not holder & CONTENDED and atomic_cas(w, H_LOCK, holder, holder | CONTENDED) != holder:
        return seq, 0
    owner = holder & ~CONTENDED
    # CONTENDED alone names no process (a corrupt lock word): report the word
    # itself, whose pid 0 is judged dead and taken over, instead of 0 ("free"),
    # on which the waiter would retry for ever.
    return seq, owner if owner != 0 else holder
