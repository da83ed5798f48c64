"""The wake-up path of a blocked reader, in the echo pattern (PROFILE.md).

    python benchmarks/profile_wake.py [--n 20000] [--repeat 3]

A parent, an echo child and (optionally) a discarding child that screens
the echo type, as in ``echo.py``, on one pysyncq queue.  Counts, per round
trip and per process, the futex sleeps (``_futex.wait``) and wake syscalls
(``_futex.wake``) by wrapping them in this process (pysyncq itself is not
changed), and times variants that only need the public API:

* ``sleep``: ``pop(block=True)`` as the benchmarks do;
* ``spin``: first up to ``--spin`` µs of ``pop(block=False)`` in a loop,
  then ``pop(block=True)``: what a bounded spin would buy (or cost, with
  three processes on two cores).

Also times a bare futex ping-pong between two processes (the floor of any
sleeping design here) and the same with ``os.sched_yield`` polling.
"""

import argparse
import ctypes
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pysyncq import PySyncQ, _futex  # noqa: E402

COUNTS = {"wait": 0, "wake": 0}
_wait0, _wake0 = _futex.wait, _futex.wake


def _count():
    def wait(*a):
        COUNTS["wait"] += 1
        return _wait0(*a)

    def wake(*a):
        COUNTS["wake"] += 1
        return _wake0(*a)

    _futex.wait, _futex.wake = wait, wake


def _popper(q, spin):
    pop = q.pop
    if not spin:
        return lambda: pop(True, 10.0, False)
    pc = time.perf_counter

    def p():
        end = pc() + spin
        while pc() < end:
            m = pop(False, 0.0, False)
            if m is not None:
                return m
        return pop(True, 10.0, False)

    return p


def child(q, role, spin, results):
    _count()
    q.open(role)
    q.scrntype.add("echo")
    pop = _popper(q, spin)
    n = 0
    while True:
        m = pop()
        if m is None:
            break
        if m[1] == b"stop":
            break
        n += 1
        if role == "echo":
            q.append("echo", m[2])
    results.put((role, n, dict(COUNTS)))
    q.close()


def run(n, discarder, spin):
    _count()
    ctx = mp.get_context("fork")
    q = PySyncQ(size=1 << 22)
    results = ctx.Queue()
    roles = ["echo"] + (["discard"] if discarder else [])
    procs = [ctx.Process(target=child, args=(q, r, spin, results)) for r in roles]
    for p in procs:
        p.start()
    q.open("parent")
    q.scrntype.add("data")
    q.wait_for_readers(len(roles), timer=30)
    pop = _popper(q, spin)
    body = b"x" * 16
    for _ in range(200):
        q.append("data", body)
        pop()
    COUNTS.update(wait=0, wake=0)
    t0 = time.perf_counter()
    for _ in range(n):
        q.append("data", body)
        pop()
    dt = time.perf_counter() - t0
    mine = dict(COUNTS)
    q.append("stop", b"")
    got = {}
    for _ in roles:
        role, k, c = results.get(timeout=30)
        got[role] = {key: v / k for key, v in c.items()}
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    q.close()
    got["parent"] = {key: v / n for key, v in mine.items()}
    return dt / n / 2 * 1e6, got


def futex_pingpong(n, yield_poll):
    """Two processes bumping two futex words in turn; one-way µs."""
    buf = mp.RawArray(ctypes.c_uint32, 32)
    addr = ctypes.addressof(buf)
    a, b = addr, addr + 64

    def side(mine, theirs, first, n):
        w = (ctypes.c_uint32 * 1).from_address
        me, them = w(mine), w(theirs)
        for i in range(n):
            if not first:
                while them[0] == i:
                    if yield_poll:
                        os.sched_yield()
                    else:
                        _wait0(theirs, i, 1.0)
            me[0] = i + 1
            if not yield_poll:
                _wake0(mine)
            if first:
                while them[0] == i:
                    if yield_poll:
                        os.sched_yield()
                    else:
                        _wait0(theirs, i, 1.0)

    p = mp.get_context("fork").Process(target=side, args=(b, a, False, n))
    p.start()
    t0 = time.perf_counter()
    side(a, b, True, n)
    dt = time.perf_counter() - t0
    p.join(10)
    return dt / n / 2 * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--spin", type=float, default=50e-6)
    a = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; one-way µs, median of {a.repeat}")
    for label, kw in [
        ("parent + echo child, sleep", dict(discarder=False, spin=0)),
        ("parent + echo + discarding child, sleep", dict(discarder=True, spin=0)),
        ("parent + echo child, spin then sleep", dict(discarder=False, spin=a.spin)),
        ("parent + echo + discarding child, spin then sleep", dict(discarder=True, spin=a.spin)),
    ]:
        runs = [run(a.n, **kw) for _ in range(a.repeat)]
        us = statistics.median(r[0] for r in runs)
        counts = runs[-1][1]
        per = "; ".join(
            f"{who}: {c['wait']:.2f} sleeps, {c['wake']:.2f} wakes" for who, c in counts.items()
        )
        print(f"{label:50s} {us:6.1f} µs   per message received ({per})")
    for label, y in (("bare futex ping-pong", False), ("bare sched_yield ping-pong", True)):
        us = statistics.median(futex_pingpong(a.n, y) for _ in range(a.repeat))
        print(f"{label:50s} {us:6.1f} µs")


if __name__ == "__main__":
    main()
