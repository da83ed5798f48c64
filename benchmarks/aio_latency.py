"""Wake-up latency of ``await q.apop()`` against the blocking ``q.pop(block=True)``.

One-way: a writer process appends its ``time.monotonic_ns()`` every 2 ms
(so the reader is always asleep when a message comes), the reader takes the
difference on arrival.  Readers: blocking ``pop``, ``apop`` (socket wake-up),
``apop`` with the polling fallback forced, and ``apop`` with 50 other
coroutines (tasks sleeping in a loop) sharing the loop.

    python benchmarks/aio_latency.py [--n 2000] [--repeats 3]
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pysyncq import PySyncQ, aio  # noqa: E402


def _writer(name, n, gap, ready):
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


def run(kind, n, gap):
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
        else:  # the fallback: no socket
            join = aio._join
            aio._join = lambda *a: None
            try:
                lat = asyncio.run(_async(q, n, 0))
            finally:
                aio._join = join
    finally:
        p.join(60)
        q.close()
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gap", type=float, default=0.002)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    kinds = ["pop(block=True)", "apop", "apop, 50 busy tasks", "apop, polling fallback"]
    samples = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:
            n = args.n if "polling" not in k else max(50, args.n // 10)
            samples[k] += run(k, n, args.gap)
    print("| reader | samples | median µs | p90 µs | p99 µs |\n|---|---:|---:|---:|---:|")
    for k in kinds:
        s = sorted(samples[k])
        q = statistics.quantiles(s, n=100)
        print(
            f"| {k} | {len(s)} | {statistics.median(s) / 1e3:.1f} | {q[89] / 1e3:.1f} | "
            f"{q[98] / 1e3:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(samples))


if __name__ == "__main__":
    main()
