"""Waiting and waking: the slots' wait bits, the futex wakes a kernel makes
itself, futex sleeps and spinning before a sleep, without the GIL."""

import numpy as np

from ..layout import (
    H_DATA_SEQ,
    H_LOCK_SEQ,
    H_MEMBER_SEQ,
    H_SPACE_SEQ,
    H_WAITERS,
    S_STATE,
    S_WAIT,
    SEQ_MASK,
    SLOT_ACTIVE,
    W_ASYNC,
    W_DATA,
    WAKE_ASYNC_DATA,
    WAKE_ASYNC_SPACE,
    WAKE_DATA,
    WAKE_DONE,
    WAKE_LOCK,
    WAKE_MEMBERS,
    WAKE_SPACE,
)
from ._intrinsics import HAVE_FUTEX, atomic_add, atomic_load, atomic_store, futex
from ._jit import INT, SEGMENT, kernel
from .check import geometry_check, slot_hwm, slot_word, table_slots

#: ``spin_for``'s answers besides the rounds left (+ 1) when the word changed.
SPIN_UNCHANGED = 0
SPIN_REFUSED = -1  # more members than CPUs, or a bad header: it did not spin

# wake_flags' findings among the slots' wait bits.
_SLEEPER = 1
_ASYNC_SLEEPER = 2

#: The futex's number of sleepers to wake that wakes them all (INT_MAX).
_INT_MAX = 0x7FFFFFFF
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
#: A futex wait's timeout that waits for ever (and a wake's, which has none).
_NO_TIMEOUT = -1


@kernel()
def store_wait(w, slot, bits):
    """Store ``bits`` in ``slot``'s ``S_WAIT`` and keep ``H_WAITERS`` (see
    layout.py): raised before the first bit is stored, lowered after the
    last is cleared.  The owner calls this (holding its handle's thread
    lock), or whoever frees the slot, holding the queue lock."""
    sw = slot_word(slot, S_WAIT)
    old = w[sw]
    if old == bits:
        return
    if old == 0:
        atomic_add(w, H_WAITERS, 1)
    atomic_store(w, sw, bits)
    if bits == 0:
        atomic_add(w, H_WAITERS, -1)


@kernel()
def wake_flags(w, bit):
    """The wake bits for the sleepers on ``bit`` (``W_DATA`` or ``W_SPACE``):
    ``WAKE_DATA`` / ``WAKE_SPACE`` if some slot's owner sleeps on it, with
    ``WAKE_ASYNC_*`` too if one of them waits in an asyncio loop; else 0.
    One load of ``H_WAITERS`` when nobody waits, else a look at every slot."""
    if atomic_load(w, H_WAITERS) == 0:
        return 0
    found = 0
    for i in range(slot_hwm(w)):
        b = atomic_load(w, slot_word(i, S_WAIT))
        if b & bit:
            found |= _SLEEPER
            if b & W_ASYNC:
                found |= _ASYNC_SLEEPER
    if found == 0:
        return 0
    if bit == W_DATA:
        return WAKE_DATA | (WAKE_ASYNC_DATA if found & _ASYNC_SLEEPER else 0)
    return WAKE_SPACE | (WAKE_ASYNC_SPACE if found & _ASYNC_SLEEPER else 0)


@kernel((SEGMENT, INT))
def wake_now(mem, status):
    """Make the futex wakes that ``status`` asks for (after the lock is
    released) and add ``WAKE_DONE`` to it, so that ``_wait.wake`` only
    signals the asyncio waiters (``WAKE_ASYNC_*``).  Where there is no futex
    ``status`` is returned as it is."""
    if HAVE_FUTEX and status & (WAKE_DATA | WAKE_SPACE | WAKE_LOCK | WAKE_MEMBERS):
        w = mem.view(np.int64)
        if status & WAKE_DATA:
            futex(w, H_DATA_SEQ, _FUTEX_WAKE, _INT_MAX, _NO_TIMEOUT)
        if status & WAKE_SPACE:
            futex(w, H_SPACE_SEQ, _FUTEX_WAKE, _INT_MAX, _NO_TIMEOUT)
        if status & WAKE_LOCK:
            futex(w, H_LOCK_SEQ, _FUTEX_WAKE, 1, _NO_TIMEOUT)  # one: it takes the lock
        if status & WAKE_MEMBERS:
            futex(w, H_MEMBER_SEQ, _FUTEX_WAKE, _INT_MAX, _NO_TIMEOUT)
        status |= WAKE_DONE
    return status


@kernel()
def active_slots(w):
    """The queue's active slots: the members a spinner counts against the
    CPUs (header checked)."""
    n = 0
    for i in range(slot_hwm(w)):
        if atomic_load(w, slot_word(i, S_STATE)) == SLOT_ACTIVE:
            n += 1
    return n


@kernel((SEGMENT, INT, INT, INT, INT), nogil=True)
def spin_for(mem, index, expected, cpus, rounds):
    """Before a sleep: watch the low 32 bits of header word ``index`` for up
    to ``rounds`` loads while they equal ``expected``, without the GIL, but
    only if the queue has at most ``cpus`` active slots (more members than
    CPUs: a spinner would hold a CPU that a writer needs).  Returns the
    rounds left plus one (>= 1) if the word changed, so that a caller can go
    on watching with what is left; ``SPIN_UNCHANGED`` (0) if it did not
    change; ``SPIN_REFUSED`` (-1) if it did not spin."""
    w = mem.view(np.int64)
    if geometry_check(w) or active_slots(w) > cpus:
        return SPIN_REFUSED
    for i in range(rounds):
        if atomic_load(w, index) & SEQ_MASK != expected:
            return rounds - i
    return SPIN_UNCHANGED


@kernel((SEGMENT, INT, INT, INT), nogil=True)
def futex_wait(mem, index, expected, timeout_ns):
    """Sleep while the low 32 bits of header word ``index`` equal
    ``expected``, at most ``timeout_ns``; without the GIL.  May return early
    (a wake, a signal, a changed word): the caller looks again."""
    if HAVE_FUTEX:
        futex(mem.view(np.int64), index, _FUTEX_WAIT, expected, timeout_ns)


@kernel((SEGMENT, INT))
def seq_load(mem, index):
    """The low 32 bits of header word ``index`` (a futex word)."""
    return atomic_load(mem.view(np.int64), index) & SEQ_MASK


@kernel((SEGMENT, INT, INT))
def set_waiting(mem, slot, bits):
    """Set the owner's wait bits (only the slot's owner calls this)."""
    w = mem.view(np.int64)
    if 0 <= slot < table_slots(w):
        store_wait(w, slot, bits)
