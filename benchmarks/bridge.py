"""Across the Redis bridge vs pyzmq PUB/SUB over tcp, on loopback.

    python benchmarks/bridge.py [--install-optional] [--quick] [--rounds 5]

(the same as ``python benchmarks/run.py --only bridge``).  ``pysyncq bridge``
(contenders/ours.py): a writer appends to local queue A; bridge A relays it
to a Redis stream, bridge B (another process) appends it to local queue B,
where a reader pops it.  Two queues, two bridges, one redis-server on
127.0.0.1 (started by the worker, no persistence), all on this machine.
``pyzmq`` (contenders/pyzmq.py): a PUB socket bound on tcp://127.0.0.1 and
one SUB socket (high-water marks off, so nothing is dropped).  For each size:

* throughput: the writer sends M messages as fast as it may; messages per
  second from its first send to the reader's last receive;
* one-way latency: paced sends (one every few ms, so nothing queues), each
  body stamped with ``time.perf_counter()`` (CLOCK_MONOTONIC, shared by the
  processes of one machine); the reader's receive time minus the stamp.
"""

import sys

import contenders
import harness

NAME = "bridge"
ROLE = contenders.Link
UNIT, HIGHER_IS_BETTER = None, None  # two measures: msg/s and µs
ROUNDS, QUICK_SCALE = 5, 0.1
SIZES = [64, 4096, 1 << 20]
#: Messages per throughput sample, and per latency sample with the pause between them.
THROUGHPUT_M = {64: 20000, 4096: 5000, 1 << 20: 100}
LATENCY_N = {64: (300, 0.002), 4096: (300, 0.002), 1 << 20: (40, 0.02)}
LABEL = {"pysyncq bridge": "pysyncq bridge (Redis)", "pyzmq": "pyzmq PUB/SUB"}


def options(p):
    pass


def accepts(cls):
    return True


def jobs(opts):
    return [("", [])]


def worker_argv(opts, cls):
    return ["--scale", opts.scale_of(NAME)]


def worker_options(p):
    p.add_argument("--scale", type=float, default=1.0)


def work(cls, tag, args):
    link = cls()
    info = link.open(tag)
    cells = []
    try:
        for size in SIZES:
            m = max(10, int(THROUGHPUT_M[size] * args.scale))
            t0, t1, _ = link.sample(size, m, 0)
            n, pause = LATENCY_N[size]
            _, _, lat = link.sample(size, max(10, int(n * args.scale)), pause)
            rate, lat_us = m / (t1 - t0), [x * 1e6 for x in lat]
            cells.append(_cell("msg/s", size, [rate], "msg/s", True, m))
            cells.append(_cell("one-way", size, lat_us, "µs", False, len(lat)))
            contenders.log(
                f"  {cls.name:14} {size:>8} B: {rate:>10,.0f} msg/s, "
                f"latency {harness.median(lat_us):,.0f} µs"
            )
    finally:
        link.close()
    return {"cells": cells, "versions": info}


def _cell(variant, size, samples, unit, higher, per_sample):
    return {
        "variant": variant,
        "size": size,
        "samples": samples,
        "unit": unit,
        "higher_is_better": higher,
        "per_sample": per_sample,
    }


def rows(cells):
    return sorted(cells, key=lambda c: (c[1], c[0] != "msg/s"))


def table(cells, names):
    """Today's table: throughput, MB/s, and the pooled latencies' median and p99."""
    lines = [
        "| size | contender | msgs/s | MB/s | one-way latency µs (median) | p99 µs |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size in sorted({s for _, s in cells}):
        for n in names:
            rate = cells.get(("msg/s", size), {}).get(n, {}).get("samples")
            lat = cells.get(("one-way", size), {}).get(n, {}).get("samples")
            if not rate or not lat:
                lines.append(f"| {harness.fmt_size(size)} | {LABEL.get(n, n)} | failed | | | |")
                continue
            r, q = harness.median(rate), harness.quantile
            lines.append(
                f"| {harness.fmt_size(size)} | {LABEL.get(n, n)} | {r:,.0f} | "
                f"{r * size / 1e6:,.1f} | {q(lat, 0.5):,.0f} | {q(lat, 0.99):,.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(harness.worker_main(sys.modules[__name__]))
