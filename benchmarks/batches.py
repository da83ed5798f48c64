"""Batches: 64 B messages, one writer to one reader, ``extend`` (batches of
1000, ``--batch-chunk``) + ``pop_many(4096)`` against ``append`` + ``pop``
one message at a time; messages/s per reader, from just before the first
send until the reader had the last one.

``python benchmarks/run.py --only batches`` (``python benchmarks/arrays.py``
runs it after the arrays, as it always has).
"""

import sys

import contenders
import harness

NAME = "batches"
ROLE = contenders.BatchContender
UNIT, HIGHER_IS_BETTER = "msg/s per reader", True
ROUNDS, QUICK_SCALE = 5, 0.1
SIZE = 64
CHUNK = 1000
MESSAGES = 200_000


def options(p):
    p.add_argument(
        "--batch-chunk", type=int, default=CHUNK, help="batches: messages an extend (1000)"
    )


def accepts(cls):
    return True


def jobs(opts):
    return [("", [])]


def worker_argv(opts, cls):
    count = max(1000, int(cls.count(NAME, MESSAGES) * opts.scale_of(NAME)))
    return ["--count", count, "--chunk", opts.batch_chunk]


def worker_options(p):
    p.add_argument("--count", type=int, default=MESSAGES)
    p.add_argument("--chunk", type=int, default=CHUNK)


def work(cls, tag, args):
    rate = cls().sample(args.count, tag, args.chunk)
    contenders.log(f"  batch {cls.name:<16} {rate:12,.0f} msgs/s")
    return {
        "cells": [{"variant": "1 → 1", "size": SIZE, "samples": [rate], "per_sample": args.count}]
    }


def table(cells, names):
    """Today's batches table, with the ratio against one message a call."""
    lines = [
        "| 64 B messages, 1 → 1 | M per sample | msgs/s per reader | min – max | vs append+pop |",
        "|---|---:|---:|---:|---:|",
    ]
    for by_c in cells.values():
        base = by_c.get("append+pop", {}).get("samples")
        base = harness.median(base) if base else None
        for n in names:
            x = by_c.get(n, {})
            xs = x.get("samples")
            if not xs:
                lines.append(f"| {n} | | failed | | |")
                continue
            med = harness.median(xs)
            ratio = f"{med / base:.2f}x" if base else "n/a"
            spread = f"{min(xs):,.0f} – {max(xs):,.0f}"
            lines.append(f"| {n} | {x['per_sample']:,} | {med:,.0f} | {spread} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(harness.worker_main(sys.modules[__name__]))
