"""Why all-to-all is slow: lock contention counted per message (PROFILE.md).

    python benchmarks/profile_alltoall.py [--m 30000]

Three processes on one queue, each appending M messages of 64 B (bursts of
32, then reading what has arrived), as ``alltoall.py`` does.  In each process
this wraps (without changing pysyncq) ``queue.locked`` (the slow path taken
when a kernel found the queue lock held), ``os.sched_yield`` and the futex
calls, and reports them per message sent and received.
"""

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pysyncq import PySyncQ, _futex  # noqa: E402
from pysyncq import queue as _queue  # noqa: E402
from pysyncq.layout import H_LOCK_SEQ  # noqa: E402

BURST = 32


def instrument(seg_addr, counts):
    locked0, wait0, wake0, yield0 = _queue.locked, _futex.wait, _futex.wake, os.sched_yield

    def locked(*a, **k):
        counts["busy"] += 1
        return locked0(*a, **k)

    def wait(addr, *a):
        counts["sleep_lock" if addr == seg_addr + 8 * H_LOCK_SEQ else "sleep_data"] += 1
        return wait0(addr, *a)

    def wake(addr, *a):
        counts["wake_lock" if addr == seg_addr + 8 * H_LOCK_SEQ else "wake_other"] += 1
        return wake0(addr, *a)

    def yield_():
        counts["yield"] += 1
        return yield0()

    _queue.locked, _futex.wait, _futex.wake, os.sched_yield = locked, wait, wake, yield_
    # _pop_slow and _append_slow look ``locked`` up in the module: covered.
    # views.py has its own import of ``locked``; large bodies are not used here.


def peer(q, i, n, m, barrier, out):
    counts = dict.fromkeys(
        ["busy", "sleep_lock", "sleep_data", "wake_lock", "wake_other", "yield"], 0
    )
    q.open(f"p{i}")
    instrument(q._seg.addr, counts)
    barrier.wait(30)
    body = bytes(64)
    sent = got = full = 0
    t0 = time.perf_counter()
    while sent < m:
        for _ in range(min(BURST, m - sent)):
            try:
                q.append(b"d", body, False)
                sent += 1
            except MemoryError:
                full += 1
                break
        while q.pop(False, 0.0, False) is not None:
            got += 1
    while got < (n - 1) * m:
        if q.pop(True, 10.0, False) is None:
            raise TimeoutError
        got += 1
    counts["full"] = full
    out.put((i, time.perf_counter() - t0, counts))
    q.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--m", type=int, default=30000)
    ap.add_argument("--peers", type=int, default=3)
    a = ap.parse_args()
    n, m = a.peers, a.m
    ctx = mp.get_context("fork")
    q = PySyncQ(size=1 << 22)
    barrier, out = ctx.Barrier(n), ctx.Queue()
    ps = [ctx.Process(target=peer, args=(q, i, n, m, barrier, out)) for i in range(n)]
    for p in ps:
        p.start()
    res = [out.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(10)
    q.close()
    print(f"load average {os.getloadavg()[0]:.2f}; {n} peers x {m} messages of 64 B")
    for i, dt, c in sorted(res):
        per = ", ".join(f"{k} {v / m:.3f}" for k, v in c.items())
        print(f"peer {i}: {n * m / dt:,.0f} msg/s seen by it; per message sent: {per}")


if __name__ == "__main__":
    main()
