"""The guide's multi-process demo, made to run on its own.

A parent and several workers share one small queue.  Each worker makes up
sentences, appends them (waiting briefly when the queue is full), reads what
the others wrote (screening out one neighbour, to show screening) and stops
when the parent says so, or when the parent has gone (``open(follow=True)``).
The parent starts everyone, drains the queue while they talk, and after
``duration`` seconds (or at Ctrl-C) tells them to stop.

    python -m pysyncq demo --workers 4 --duration 5
"""

import multiprocessing as mp
import random
import signal
import sys
import time

from .errors import QueueClosed
from .queue import PySyncQ

DETERMINERS = ("a", "the", "your", "my", "someone's", "no one's")
NOUNS = ("dog", "cat", "computer", "castle", "pear", "shire", "nose")
VERBS = ("ate", "married", "fled", "hid", "shared", "worried", "satisfied")


def sentence(rng):
    d1, d2 = rng.sample(DETERMINERS, 2)
    n1, n2 = rng.sample(NOUNS, 2)
    return f"{d1.capitalize()} {n1} {rng.choice(VERBS)} {d2} {n2}."


def say(line):
    # One write per line, so that lines of different processes do not interleave.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def worker(q, name, ignore, seed):
    """One demo worker; exits cleanly on the stop signal or on Ctrl-C."""
    rng = random.Random(seed)
    try:
        # follow=True: if the parent closes the queue or dies (say, it was
        # killed before it could send "stop"), our next wait raises QueueClosed
        # instead of keeping this worker alive for nothing.
        with q.open(name, follow=True):
            q.scrnsend.add(ignore)
            say(f"{name} opened the queue and screens out {ignore}")
            if q.pop(block=True, timer=60) != ("parent", "user", "start"):
                say(f"{name} got no start signal")
                return
            while True:
                time.sleep(rng.uniform(0.01, 0.3))  # "work"
                try:
                    q.append("sentence", sentence(rng), block=True, timer=0.5)
                except MemoryError:
                    say(f"{name} gives up a write: the queue stayed full for 0.5 s")
                for sender, mtype, body in q(block=True, timer=0.2):
                    if mtype == "stop":
                        say(f"{name} received the stop signal")
                        return
                    say(f'{name} read "{body}" from {sender}')
                else:
                    say(f"{name}: read timer expired")
    except QueueClosed:
        say(f"{name}: the parent has left; stopping")
    except KeyboardInterrupt:
        pass


def main(workers=4, duration=5.0, size=256, start=None):
    """Run the demo; return the process exit status."""
    ctx = mp.get_context(start)
    q = PySyncQ(size=size)
    say(
        f"pysyncq demo: {workers} workers, queue {q.name!r} of {q.size} bytes, "
        f"start method {ctx.get_start_method()}"
    )
    names = [f"Child-{i}" for i in range(workers)]
    procs = [
        ctx.Process(target=worker, args=(q, n, names[(i + 1) % workers], i), name=n)
        for i, n in enumerate(names)
    ]
    status = 0
    try:
        for p in procs:
            p.start()
        q.open("parent")
        q.wait_for_readers(workers, timer=60)
        say("parent: everyone is ready; sending the start signal")
        q.append("user", "start")
        read = 0
        end = time.monotonic() + duration
        while time.monotonic() < end:
            read += sum(1 for _ in q(block=True, timer=0.1))  # keep the queue clear
        say(f"parent: {duration} s are up ({read} sentences passed by); sending stop")
        q.append("stop", block=True, timer=30)
    except KeyboardInterrupt:
        say("parent: interrupted; sending stop")
        status = 130
        if q.sender is not None:
            try:  # workers that did not get the Ctrl-C themselves stop on this
                q.append("stop", block=True, timer=2)
            except (MemoryError, KeyboardInterrupt):
                pass
    finally:
        # The shutdown below is bounded (30 s, then terminate): a second
        # Ctrl-C must not cut it short and leave workers or the queue behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        deadline = time.monotonic() + 30
        for p in procs:
            if p.pid is not None:
                p.join(max(0.1, deadline - time.monotonic()))
                if p.exitcode is None:
                    p.terminate()
                    p.join(5)
        q.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    codes = [p.exitcode for p in procs]
    if status == 0 and any(codes):
        say(f"parent: workers exited with {codes}")
        status = 1
    say("parent: done, queue closed and removed")
    return status


if __name__ == "__main__":
    sys.exit(main())
