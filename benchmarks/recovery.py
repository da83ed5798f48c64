"""How long after a process dies do the others proceed?

    python benchmarks/recovery.py [--repeat 5]

1. dead reader: a reader that holds a full queue is SIGKILLed while a writer
   is blocked in ``append(block=True)``; time from the kill to the append
   returning.  Bounded by ``PySyncQ.reap_interval`` (1 s by default).
2. dead lock holder: a process dies holding the queue lock (simulated by
   writing its token into the lock word after killing it); time for the next
   ``append`` to take the lock over.  Bounded by ``_wait.LOCK_CHECK`` (0.2 s).
3. dead sleeper: a process SIGKILLed while asleep in ``pop(block=True)``;
   the others' append + pop round is timed before and after.  Until the dead
   slot is reaped (the next time the queue is full) every append makes one
   futex wake for it: a cost of microseconds, never a wait.

Prints the median and range of each over ``--repeat`` runs.
"""

import argparse
import multiprocessing as mp
import os
import signal
import statistics
import threading
import time

from pysyncq import PySyncQ, _proc
from pysyncq.layout import H_LOCK


def idle_reader(q, started):
    q.open("idle")
    started.set()
    time.sleep(3600)


def sleeper(q, started):
    q.open("sleeper")
    q.scrntype.add("n")  # passes the traffic, stays asleep
    started.set()
    q.pop(block=True, timer=None)


def start(target, q):
    started = mp.Event()
    p = mp.get_context("fork").Process(target=target, args=(q, started), daemon=True)
    p.start()
    if not started.wait(60):
        raise RuntimeError("child did not start")
    return p


def dead_reader():
    q = PySyncQ(size=4096)
    try:
        q.open("writer", reader=False)
        p = start(idle_reader, q)
        while True:
            try:
                q.append("fill", "x" * 100)
            except MemoryError:
                break
        killed_at = []

        def kill_soon():
            time.sleep(0.3)  # the writer is asleep by then
            killed_at.append(time.perf_counter())
            os.kill(p.pid, signal.SIGKILL)

        t = threading.Thread(target=kill_soon)
        t.start()
        q.append("after", "x" * 100, block=True, timer=30)
        done = time.perf_counter()
        t.join()
        p.join()
        return done - killed_at[0]
    finally:
        q.close()


def dead_lock_holder():
    q = PySyncQ(size=4096)
    try:
        q.open("writer", reader=False)
        p = start(idle_reader, q)
        token = _proc.token_of(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        q._seg.words[H_LOCK] = token
        t0 = time.perf_counter()
        q.append("after", "x", block=True, timer=30)
        return time.perf_counter() - t0
    finally:
        q.close()


def dead_sleeper():
    q = PySyncQ(size=1 << 20)  # the dead sleeper's slot pins what follows
    r = PySyncQ(q.name, create=False)
    try:
        q.open("writer", reader=False)
        r.open("reader")

        def rounds():
            t0 = time.perf_counter()
            for i in range(2000):
                q.append("n", i)
                r.pop()
            return (time.perf_counter() - t0) / 2000

        p = start(sleeper, q)
        time.sleep(0.2)
        before = rounds()
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        after = rounds()
        return after / before
    finally:
        r.close()
        q.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, fn, unit in (
        ("dead reader -> blocked writer proceeds", dead_reader, "s"),
        ("dead lock holder -> next append proceeds", dead_lock_holder, "s"),
        ("dead sleeper: append+pop time after / before", dead_sleeper, "x"),
    ):
        xs = [fn() for _ in range(args.repeat)]
        print(
            f"{name:48s} median {statistics.median(xs):.3f} {unit} "
            f"(min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"
        )


if __name__ == "__main__":
    main()
