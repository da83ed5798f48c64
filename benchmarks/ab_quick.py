"""One quick figure for one checkout of pysyncq, for A/B runs by hand.

    python benchmarks/ab_quick.py TREE SCENARIO      # prints one number

TREE is a checkout (its ``pysyncq`` is imported); SCENARIO is one of
``echo`` (one-way µs, parent + echo child + a child that screens the
echoes, 16 B, as echo.py), ``echo1`` (the same without the screening
child), ``fanout`` (msg/s, 1 writer to 1 reader, 64 B; ``SPIN=0`` in the
environment turns the reader's spin off) and ``a2a`` (msg/s total, 3 peers
each sending 30,000 x 64 B in bursts of 32, as alltoall.py).  Interleave A
and B yourself, e.g.::

    for i in 1 2 3; do python benchmarks/ab_quick.py /tmp/a echo; \
        python benchmarks/ab_quick.py . echo; done
"""

import gc
import multiprocessing as mp
import os
import sys
import time

N = 20000
CTX = mp.get_context("fork")


def echo_child(q, screen):
    gc.disable()
    q.open(f"c{screen}")
    if screen:
        q.scrntype.add("pong")
        for m in q(True, 5.0, False):
            if m[1] == b"stop":
                return
    else:
        while True:
            m = q.pop(True, 5.0, False)
            if m is None or m[1] == b"stop":
                return
            q.append("pong", m[2])


def echo(kids=(0, 1)):
    q = PySyncQ(None, size=1 << 20, start="fork")
    ps = [CTX.Process(target=echo_child, args=(q, i)) for i in kids]
    for p in ps:
        p.start()
    q.open("p")
    q.scrntype.add("ping")
    q.wait_for_readers(len(kids), 10, processes=ps)
    body = b"x" * 16
    for _ in range(500):
        q.append("ping", body)
        q.pop(True, 5.0, False)
    t = time.perf_counter()
    for _ in range(N):
        q.append("ping", body)
        q.pop(True, 5.0, False)
    dt = time.perf_counter() - t
    q.append("stop", b"")
    for p in ps:
        p.join(10)
    q.close()
    return dt / N / 2 * 1e6


def a2a_peer(q, i, m, bar, res):
    gc.disable()
    q.open(f"p{i}")
    bar.wait(30)
    append, pop = q.append, q.pop
    body = bytes(64)
    sent = got = 0
    t0 = time.perf_counter()
    while sent < m:
        for _ in range(min(32, m - sent)):
            try:
                append(b"d", body, False)
                sent += 1
            except MemoryError:
                break
        while pop(False, 0.0, False) is not None:
            got += 1
    while got < 2 * m:
        if pop(True, 10.0, False) is None:
            break
        got += 1
    res.put((t0, time.perf_counter(), got))


def a2a():
    m = 30000
    q = PySyncQ(None, size=1 << 22, start="fork")
    bar, res = CTX.Barrier(3), CTX.Queue()
    ps = [CTX.Process(target=a2a_peer, args=(q, i, m, bar, res)) for i in range(3)]
    for p in ps:
        p.start()
    r = [res.get(timeout=60) for _ in ps]
    for p in ps:
        p.join(10)
    q.close()
    return 3 * m / (max(x[1] for x in r) - min(x[0] for x in r))


def fan_reader(q, m, ready):
    gc.disable()
    q.open("r")
    ready.set()
    if os.environ.get("SPIN"):
        q.spin = float(os.environ["SPIN"])
    for _ in range(m):
        if q.pop(True, 10.0, False) is None:
            break


def fanout():
    m = 200000
    q = PySyncQ(None, size=1 << 20, start="fork")
    ready = CTX.Event()
    p = CTX.Process(target=fan_reader, args=(q, m, ready))
    p.start()
    q.open("w", reader=False)
    ready.wait(10)
    body = bytes(64)
    t = time.perf_counter()
    for _ in range(m):
        q.append("d", body, True, None)
    p.join(60)
    dt = time.perf_counter() - t
    q.close()
    return m / dt


if __name__ == "__main__":
    tree, which = sys.argv[1], sys.argv[2]
    sys.path.insert(0, tree)
    from pysyncq import PySyncQ

    scenarios = {"echo1": lambda: echo((0,)), "echo": echo, "a2a": a2a, "fanout": fanout}
    print(scenarios[which]())
