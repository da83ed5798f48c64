"""Fanout (broadcast throughput): one writer, R readers (R = 1 and 2 by default).

The writer sends M messages of S bytes (64 B, 4 KiB, 1 MiB) as fast as the
transport allows, blocking when it is full; every reader reads all M, checks
each body's length, and reports the ``time.perf_counter`` at which it had the
M-th (the clock is system-wide, CLOCK_MONOTONIC).  A sample's time runs from
just before the first send until the last reader had all M: messages/s *per
reader* = M / time (each reader receives all M).  After each sample a barrier
checks that every reader counted exactly M.  ``copy-ring``
(contenders/references.py) is the copy reference: one memcpy in by the
writer, one memcpy out by each reader, lock-free counters, nothing else.

``python benchmarks/run.py --only fanout``.
"""

import gc
import sys
import time

import contenders
import harness
from harness import (
    DATA,
    DONE,
    GC,
    KILL,
    PING,
    START,
    Barrier,
    answer_barrier,
    child_setup,
    ints,
    median,
    start_children,
    stop_children,
)

NAME = "fanout"
ROLE = contenders.Transport
UNIT, HIGHER_IS_BETTER = "msg/s per reader", True
ROUNDS, QUICK_SCALE = 3, 0.25
SIZES = [64, 4096, 1 << 20]
READERS = [1, 2]
CAPACITY = 1 << 22  # 4 MiB of queue per queue, or 8 messages if more
#: Messages per sample at 64 B for a contender without its own
#: ``counts["fanout"]`` (scaled by --scale); the aim is about 0.3 s per
#: sample.  Divided by SIZE_DIVISOR for larger sizes.
MESSAGES = 10000
SIZE_DIVISOR = {64: 1, 4096: 2}  # larger: 30 (1 MiB: 2000 pysyncq messages)
SAMPLES = 3  # per round
WARMUP = 500


def options(p):
    p.add_argument("--readers", type=ints, default=READERS, help="fanout: reader counts (1,2)")
    p.add_argument(
        "--fanout-sizes", type=ints, default=SIZES, help="fanout: message sizes (64,4096,1048576)"
    )
    p.add_argument(
        "--tp-samples",
        type=int,
        default=None,
        help="fanout, alltoall: samples per round (3; 2 quick)",
    )


def accepts(cls):
    return True


def jobs(opts):
    return [(f"R={r}", ["--readers", r]) for r in opts.readers]


def worker_argv(opts, cls):
    m = max(2, int(cls.count(NAME, MESSAGES) * opts.scale_of(NAME)))
    samples = opts.tp_samples or (2 if opts.quick else SAMPLES)
    sizes = ",".join(map(str, opts.fanout_sizes))
    return ["--sizes", sizes, "--m", m, "--samples", samples, "--warmup", min(WARMUP, m)]


def worker_options(p):
    p.add_argument("--readers", type=int, default=1)
    p.add_argument("--sizes", type=ints, default=SIZES)
    p.add_argument("--m", type=int, default=MESSAGES)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--warmup", type=int, default=WARMUP)


def rows(cells):
    """Table order: by size, then by variant (R=1, R=2)."""
    variants = list(dict.fromkeys(v for v, _ in cells))
    return sorted(cells, key=lambda c: (c[1], variants.index(c[0])))


# -- The worker --------------------------------------------------------------------------


def capacity_for(size):
    return max(CAPACITY, 8 * size)


def messages_for(m64, size):
    return max(2, m64 // SIZE_DIVISOR.get(size, 30))


def child(t, i):
    child_setup(t, i)
    recv, send = t.recv, t.send
    pc = time.perf_counter
    count, target, size, bad = 0, -1, 0, 0
    try:
        while True:
            typ, body = recv()
            if typ == DATA:
                count += 1
                if len(body) != size:
                    bad += 1
                if count == target:
                    send(DONE, b"%s %d %d" % (repr(pc()).encode(), i, bad))
            elif typ == START:
                target, size = (int(x) for x in bytes(body).split())
                bad = 0
            elif typ == GC or typ == PING:
                answer_barrier(t, typ, body, i, count)
                count = 0
            elif typ == KILL:
                break
    finally:
        t.child_close()


def one_sample(t, barrier, k, msg, m):
    """Send ``m`` messages; return seconds until the last reader had them all."""
    send, send_stream, recv = t.send, t.send_stream, t.recv
    pc = time.perf_counter
    send(START, b"%d %d" % (m, len(msg)))
    gc.disable()
    t0 = pc()
    for _ in range(m):
        send_stream(DATA, msg)
    sent = pc()
    ends, bad = {}, 0
    while len(ends) < k:
        typ, body = recv()
        if typ == DONE:
            ts, child, nbad = bytes(body).split()
            ends[int(child)] = float(ts)
            bad += int(nbad)
    gc.enable()
    counts = barrier()
    if counts != [m] * k or bad:
        raise AssertionError(
            f"{len(msg)} B: readers counted {counts} messages ({bad} of wrong length), "
            f"expected {m} each"
        )
    return max(ends.values()) - t0, sent - t0


def work(cls, tag, args):
    out = {"cells": [], "stuck_children": [], "leftovers_removed_by_worker": []}
    for size in args.sizes:  # a transport per size: the queues are sized for it
        cell, stuck, left = one_size(cls, tag, args, size)
        out["cells"].append(cell)
        out["stuck_children"] += stuck
        out["leftovers_removed_by_worker"] += left
    return out


def one_size(cls, tag, args, size):
    k = args.readers
    t = cls(k, capacity_for(size), f"{tag}_{size}", size)
    procs, clean, stuck, left = [], False, [], []
    try:
        procs = start_children(child, lambda i: (t, i), k)
        t.parent_open()
        barrier = Barrier(t, k)
        barrier(PING, repeat=t.needs_repeated_ping)
        msg = bytes(size)
        m = messages_for(args.m, size)
        one_sample(t, barrier, k, msg, min(m, args.warmup))
        secs = []
        for _ in range(args.samples):
            secs.append(one_sample(t, barrier, k, msg, m)[0])
        rates = [m / s for s in secs]
        contenders.log(
            f"  {cls.name:>14} R={k} {size:>8} B: {median(rates):10.0f} msg/s per reader"
        )
        clean = True
        return {"size": size, "samples": rates, "per_sample": m}, stuck, left
    finally:
        try:
            stuck += stop_children(t, procs, clean)
        finally:
            t.parent_close()
            left += t.cleanup()


if __name__ == "__main__":
    sys.exit(harness.worker_main(sys.modules[__name__]))
