"""How long after a process dies do the others proceed?

    python benchmarks/recovery.py [--rounds 5]

(the same as ``python benchmarks/run.py --only recovery``; one sample of each
per round):

1. dead reader: a reader that holds a full queue is SIGKILLed while a writer
   is blocked in ``append(block=True)``; time from the kill to the append
   returning.  Bounded by ``PySyncQ.reap_interval`` (1 s by default).
2. dead lock holder: a process dies holding the queue lock (simulated by
   writing its token into the lock word after killing it: this reaches into
   pysyncq's internals, and is skipped where they have moved); time for the
   next ``append`` to take the lock over.  Bounded by ``LOCK_CHECK`` (0.2 s).
3. dead sleeper: a process SIGKILLed while asleep in ``pop(block=True)``;
   the others' append + pop round is timed before and after (the ratio).
   Until the dead slot is reaped (the next time the queue is full) every
   append makes one futex wake for it: a cost of microseconds, never a wait.
"""

import multiprocessing as mp
import os
import signal
import sys
import threading
import time

import contenders
import harness

NAME = "recovery"
ROLE = contenders.Itself
UNIT, HIGHER_IS_BETTER = None, False  # seconds, and a ratio; lower is better
ROUNDS, QUICK_SCALE = 5, 1.0


def options(p):
    pass


def accepts(cls):
    return True


def jobs(opts):
    return [("", [])]


def worker_argv(opts, cls):
    return []


def worker_options(p):
    pass


# -- The worker --------------------------------------------------------------------------


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
    from pysyncq import PySyncQ

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
    from pysyncq import PySyncQ

    try:  # internals: the token of a process and the lock word
        from pysyncq import _proc
        from pysyncq.layout import H_LOCK
    except ImportError as e:
        raise harness.Skip(f"pysyncq internals moved: {e}") from None
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
    from pysyncq import PySyncQ

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


MEASURES = [
    ("dead reader -> blocked writer proceeds", dead_reader, "s"),
    ("dead lock holder -> next append proceeds", dead_lock_holder, "s"),
    ("dead sleeper: append+pop time after / before", dead_sleeper, "×"),
]


def work(cls, tag, args):
    cells = []
    for name, fn, unit in MEASURES:
        cell = {"variant": name, "size": None, "unit": unit}
        try:
            x = fn()
        except (harness.Skip, AttributeError) as e:
            cell["skipped"] = str(e)
        else:
            cell["samples"] = [x]
            contenders.log(f"  {name:48s} {x:.3f} {unit}")
        cells.append(cell)
    return {"cells": cells}


if __name__ == "__main__":
    sys.exit(harness.worker_main(sys.modules[__name__]))
