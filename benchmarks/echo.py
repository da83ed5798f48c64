"""Echo latency: the seed project's benchmark (pysyncq 0.0.1 ``tests/benchmark.py``).

A parent and K children (default 2, as in issue 9).  The parent sends a
message to all children; child 0 echoes it back, the other children read and
discard everything; the parent waits for the echo before sending the next
one.  One-way latency = round-trip time / 2.  For each message size, several
samples of N round trips each are timed (``time.perf_counter``, gc disabled
in every process during the timed loop); a barrier after each sample checks
that every child counted every message.

``python benchmarks/run.py --only echo`` (this file run by hand does the same).
"""

import gc
import sys
import time

import contenders
import harness
from harness import (
    DATA,
    ECHO,
    GC,
    KILL,
    PING,
    Barrier,
    answer_barrier,
    child_setup,
    ints,
    median,
    start_children,
    stop_children,
)

NAME = "echo"
ROLE = contenders.Transport
UNIT, HIGHER_IS_BETTER = "µs one-way", False
ROUNDS, QUICK_SCALE = 3, 0.25
SIZES = [16, 1024, 65536]
CHILDREN = 2
CAPACITY = 1 << 22  # every contender gets 4 MiB of queue per queue
#: Round trips per sample for a contender without its own ``counts["echo"]``
#: (scaled by --scale; sizes above 4 KiB get a quarter).  Aim: about 0.3 s a sample.
ROUND_TRIPS = 500
SAMPLES = 5  # per round
WARMUP = 50


def options(p):
    p.add_argument("--children", type=int, default=CHILDREN, help="echo: children (2)")
    p.add_argument(
        "--sizes",
        "--echo-sizes",
        dest="echo_sizes",
        type=ints,
        default=SIZES,
        help="echo: message sizes in bytes (16,1024,65536)",
    )
    p.add_argument(
        "--samples", type=int, default=None, help="echo: samples per size and round (5; 3 quick)"
    )


def accepts(cls):
    return not cls.one_way  # the copy reference sends one way only


def jobs(opts):
    """``[(variant, worker arguments)]``: one variant, every size in one worker."""
    return [(f"{opts.children} children", ["--children", opts.children])]


def worker_argv(opts, cls):
    n = max(1, int(cls.count(NAME, ROUND_TRIPS) * opts.scale_of(NAME)))
    samples = opts.samples or (3 if opts.quick else SAMPLES)
    sizes = ",".join(map(str, opts.echo_sizes))
    return ["--sizes", sizes, "--n", n, "--samples", samples, "--warmup", min(WARMUP, n)]


def worker_options(p):
    p.add_argument("--children", type=int, default=CHILDREN)
    p.add_argument("--sizes", type=ints, default=SIZES)
    p.add_argument("--n", type=int, default=ROUND_TRIPS)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--warmup", type=int, default=WARMUP)


# -- The worker --------------------------------------------------------------------------


def child(t, i):
    child_setup(t, i)
    recv, send = t.recv, t.send
    echo = i == 0
    count = 0
    try:
        while True:
            typ, body = recv()
            if typ == DATA:
                count += 1
                if echo:
                    send(ECHO, body)
            elif typ == GC or typ == PING:
                answer_barrier(t, typ, body, i, count)
                count = 0
            elif typ == KILL:
                break
    finally:
        t.child_close()


def round_trips(t, msg, n):
    """Time ``n`` round trips; return (total seconds, longest round trip)."""
    send, recv = t.send, t.recv
    pc = time.perf_counter
    ts = [0.0] * n
    gc.disable()
    t0 = pc()
    for j in range(n):
        send(DATA, msg)
        while recv()[0] != ECHO:
            pass
        ts[j] = pc()
    gc.enable()
    longest = max(b - a for a, b in zip([t0, *ts[:-1]], ts, strict=True))
    return ts[-1] - t0, longest


def check(counts, expected, k, size):
    if counts != [expected] * k:
        raise AssertionError(
            f"{size} B: children received {counts} data messages, expected {expected} each"
        )


def work(cls, tag, args):
    k = args.children
    sizes = args.sizes
    t = cls(k, CAPACITY, tag, max(sizes))
    procs, clean = [], False
    out = {"cells": []}
    try:
        procs = start_children(child, lambda i: (t, i), k)
        t.parent_open()
        barrier = Barrier(t, k)
        barrier(PING, repeat=t.needs_repeated_ping)
        for size in sizes:
            msg = bytes(size)
            n = args.n if size <= 4096 else max(1, args.n // 4)
            round_trips(t, msg, args.warmup)
            check(barrier(), args.warmup, k, size)
            samples, longest = [], []
            for _ in range(args.samples):
                total, lng = round_trips(t, msg, n)
                check(barrier(), n, k, size)
                samples.append(total / (2 * n) * 1e6)
                longest.append(lng * 1e6)
            out["cells"].append(
                {"size": size, "samples": samples, "per_sample": n, "longest_us": max(longest)}
            )
            contenders.log(f"  {cls.name:>14} {size:>6} B: {median(samples):8.1f} us one-way")
        clean = True
    finally:
        try:
            out["stuck_children"] = stop_children(t, procs, clean)
        finally:
            t.parent_close()
            out["leftovers_removed_by_worker"] = t.cleanup()
    return out


if __name__ == "__main__":
    sys.exit(harness.worker_main(sys.modules[__name__]))
