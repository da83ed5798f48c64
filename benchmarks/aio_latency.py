"""Wake-up latency of ``await q.apop()`` against the blocking ``q.pop(block=True)``.

    python benchmarks/aio_latency.py [--aio-n 2000] [--rounds 3] [--quick]

(the same as ``python benchmarks/run.py --only aio_latency``).  One-way: a
writer process appends its ``time.monotonic_ns()`` every 2 ms (so the reader
is always asleep when a message comes), the reader takes the difference on
arrival.  Readers: blocking ``pop``, ``apop`` (socket wake-up), ``apop`` with
50 other coroutines (tasks sleeping in a loop) sharing the loop, and ``apop``
with the polling fallback forced (a tenth of the samples).
"""

import asyncio
import multiprocessing as mp
import sys
import time

import contenders
import harness

NAME = "aio_latency"
ROLE = contenders.Itself
UNIT, HIGHER_IS_BETTER = "µs one-way", False
ROUNDS, QUICK_SCALE = 3, 0.1
KINDS = ["pop(block=True)", "apop", "apop, 50 busy tasks", "apop, polling fallback"]
N = 2000
GAP = 0.002


def options(p):
    p.add_argument("--aio-n", type=int, default=N, help="aio_latency: samples per reader and round")
    p.add_argument("--aio-gap", type=float, default=GAP, help="aio_latency: s between appends")


def accepts(cls):
    return True


def jobs(opts):
    return [("", [])]


def worker_argv(opts, cls):
    n = max(50, int(opts.aio_n * opts.scale_of(NAME)))
    return ["--n", n, "--gap", opts.aio_gap]


def worker_options(p):
    p.add_argument("--n", type=int, default=N)
    p.add_argument("--gap", type=float, default=GAP)


# -- The worker --------------------------------------------------------------------------


def _writer(name, n, gap, ready):
    from pysyncq import PySyncQ

    q = PySyncQ(name, create=False).open("w", reader=False)
    ready.wait(60)
    time.sleep(0.2)
    for _ in range(n):
        time.sleep(gap)
        q.append("t", str(time.monotonic_ns()))
    q.close()


def _blocking(q, n):
    out = []
    for _ in range(n):
        m = q.pop(block=True, timer=5)
        out.append(time.monotonic_ns() - int(m[2]))
    return out


async def _async(q, n, busy):
    async def chatter():
        while True:
            await asyncio.sleep(0.001)

    others = [asyncio.create_task(chatter()) for _ in range(busy)]
    out = []
    try:
        for _ in range(n):
            m = await q.apop(timer=5)
            out.append(time.monotonic_ns() - int(m[2]))
    finally:
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
    return out


def one(kind, n, gap):
    from pysyncq import PySyncQ, aio

    q = PySyncQ(None, size=1 << 16).open("r")
    ready = mp.Event()
    p = mp.get_context("fork").Process(target=_writer, args=(q.name, n, gap, ready))
    p.start()
    ready.set()
    try:
        if kind == "pop(block=True)":
            lat = _blocking(q, n)
        elif kind == "apop":
            lat = asyncio.run(_async(q, n, 0))
        elif kind == "apop, 50 busy tasks":
            lat = asyncio.run(_async(q, n, 50))
        else:  # the fallback: no socket (a private hook of pysyncq.aio)
            join = aio._join
            aio._join = lambda *a: None
            try:
                lat = asyncio.run(_async(q, n, 0))
            finally:
                aio._join = join
    finally:
        p.join(60)
        q.close()
    return [x / 1e3 for x in lat]


def work(cls, tag, args):
    from pysyncq import PySyncQ, aio

    if not hasattr(PySyncQ, "apop"):
        raise harness.Skip("this tree has no PySyncQ.apop")
    cells = []
    for kind in KINDS:
        if "polling" in kind and not hasattr(aio, "_join"):
            contenders.log(
                "  no pysyncq.aio._join in this tree: the polling fallback is not forced"
            )
            continue
        n = args.n if "polling" not in kind else max(50, args.n // 10)
        lat = one(kind, n, args.gap)
        cells.append({"variant": kind, "size": None, "samples": lat})
        contenders.log(f"  {kind:24} {harness.median(lat):8.1f} µs median")
    return {"cells": cells}


def table(cells, names):
    """Today's table: the pooled samples' median, p90 and p99."""
    lines = ["| reader | samples | median µs | p90 µs | p99 µs |", "|---|---:|---:|---:|---:|"]
    for (kind, _), by_c in cells.items():
        for x in by_c.values():
            s = x["samples"]
            if not s:
                lines.append(f"| {kind} | failed | | | |")
                continue
            q = harness.quantile
            lines.append(
                f"| {kind} | {len(s)} | {q(s, 0.5):.1f} | {q(s, 0.9):.1f} | {q(s, 0.99):.1f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(harness.worker_main(sys.modules[__name__]))
