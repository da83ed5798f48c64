"""Nopython programs over ``pysyncq.jit`` for tests/test_jit.py, and the
process targets that run them (top-level: every start method imports them).

Each program is an ``@njit(cache=True, nogil=True)`` function, as a user
writes one, so the tests also cover both options.  A child reports failure
through its exit code (``SystemExit("why")``).
"""

import numba
import numpy as np

from pysyncq import jit as pqjit

NJIT = {"cache": True, "nogil": True}


@numba.njit(**NJIT)
def send_states(h, n, first, timer):
    """Append ``n`` float64 pairs ``(first + i, (first + i) / 2)`` as "state":
    ``(sent, status)``."""
    x = np.zeros(2)
    for i in range(n):
        x[0] = first + i
        x[1] = x[0] * 0.5
        st = pqjit.append_array(h, "state", x, timer)
        if st != pqjit.OK:
            return i, st
    return n, pqjit.OK


@numba.njit(**NJIT)
def send_array(h, mtype, arr, timer):
    return pqjit.append_array(h, mtype, arr, timer)


@numba.njit(**NJIT)
def send_bytes(h, mtype, buf, timer):
    return pqjit.append_bytes(h, mtype, buf, timer)


@numba.njit(**NJIT)
def pop_into(h, out, timer):
    """One ``pop_array``: the ``Got`` and the shape."""
    got = pqjit.pop_array(h, out, timer)
    return got, pqjit.shape(h).copy()


@numba.njit(**NJIT)
def pop_bytes_into(h, out, timer):
    return pqjit.pop_bytes(h, out, timer)


@numba.njit(**NJIT)
def read_states(h, n, timer):
    """Pop ``n`` "state" pairs, checking that each follows the last and is
    well formed: ``(read, status, sum of x[1])``; status -1 for a pair out
    of order, -2 for another type."""
    out = np.zeros(2)
    want = pqjit.code("state")
    total = 0.0
    last = -1.0
    for i in range(n):
        got = pqjit.pop_array(h, out, timer)
        if got.status != pqjit.OK:
            return i, got.status, total
        if got.mtype != want or got.count != 2:
            return i, -2, total
        if out[0] != last + 1.0 or out[1] != out[0] * 0.5:
            return i, -1, total
        last = out[0]
        total += out[1]
    return n, pqjit.OK, total


@numba.njit(**NJIT)
def code_of(name):
    return pqjit.code(name)


@numba.njit(**NJIT)
def simulate(h, n, stream):
    """The issue's simulation: a 2-float state each step, streamed or not."""
    x = np.zeros(2)
    for i in range(n):
        x[0] += 1.0
        x[1] = x[0] * 0.5
        if stream:
            st = pqjit.append_array(h, "state", x, 1.0)
            if st != pqjit.OK:
                return i, st
    return n, pqjit.OK


# -- Process targets -----------------------------------------------------------


def nopython_reader(q, n, sender="reader", ready=None):
    """Open ``q``, read ``n`` states in nopython code (no pair lost, none out
    of order), close."""
    q.open(sender)
    if ready is not None:
        ready.set()
    h = q.jit_handle()
    got, st, _ = read_states(h, n, 30.0)
    q.close()
    if st != pqjit.OK or got != n:
        raise SystemExit(f"nopython reader: {got} of {n} read, status {st}")


def nopython_writer(q, n, first=0, sender="writer"):
    q.open(sender, reader=False)
    h = q.jit_handle()
    sent, st = send_states(h, n, first, 30.0)
    q.close()
    if st != pqjit.OK or sent != n:
        raise SystemExit(f"nopython writer: {sent} of {n} sent, status {st}")


def python_reader(q, n):
    """Read ``n`` states with the Python API: the arrays nopython code wrote."""
    q.open("pyreader")
    for i in range(n):
        got = q.pop(block=True, timer=30)
        if got is None:
            raise SystemExit(f"python reader: nothing after {i} of {n}")
        s, t, x = got
        if t != "state" or x.dtype != np.float64 or x.shape != (2,) or x[0] != i:
            raise SystemExit(f"python reader: message {i} is {got!r}")
    q.close()


def python_writer(q, n):
    q.open("pywriter", reader=False)
    for i in range(n):
        q.append_array("state", np.array([float(i), i * 0.5]), block=True, timer=30)
    q.close()


def nopython_spinner(q, ready):
    """Append for ever in nopython code (to be killed inside an append)."""
    q.open("spinner", reader=False)
    h = q.jit_handle()
    send_states(h, 1, 0, 1.0)
    ready.set()
    while True:
        send_states(h, 1_000_000, 0, 0.0)
