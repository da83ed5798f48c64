"""Echo latency: the seed project's benchmark (pysyncq 0.0.1 ``tests/benchmark.py``).

A parent and K children (default 2, as in issue 9).  The parent sends a message to all
children; child 0 echoes it back, the other children read and discard
everything; the parent waits for the echo before sending the next one.
One-way latency = round-trip time / 2.  For each message size, several
samples of N round trips each are timed (``time.perf_counter``, gc disabled
in every process during the timed loop) and the median one-way latency of
the samples is reported.

Run ``python benchmarks/run.py --only echo`` (this file alone does the same).
The worker mode (``--worker``) is what ``run.py`` starts in a child
interpreter, once per contender.
"""

import gc
import sys
import time

from harness import (
    DATA,
    ECHO,
    GC,
    KILL,
    PING,
    Barrier,
    answer_barrier,
    child_setup,
    median,
    start_children,
    stop_children,
    worker_main,
    worker_parser,
)

NAME = "echo"
SIZES = [16, 1024, 65536]
CHILDREN = 2
#: Contenders that can run this scenario (the copy reference is one-way only).
CONTENDERS = ["pysyncq", "pysyncq-0.0.1", "Pipe", "mp.Queue", "faster-fifo", "pyzmq"]
CAPACITY = 1 << 22  # every contender gets 4 MiB of queue per queue
#: Round trips per sample, by contender (scaled by --scale).
#: Sizes above 4 KiB get a quarter of these.  The aim: about 0.3 s per sample.
ROUND_TRIPS = {
    "pysyncq": 5000,
    "pysyncq-0.0.1": 1500,
    "Pipe": 5000,
    "mp.Queue": 2500,
    "faster-fifo": 4000,
    "pyzmq": 2000,
}
SAMPLES = 5  # per round; run.py runs 3 rounds
WARMUP = 50


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


def body(contender, tag, args):
    from contenders import TRANSPORTS

    k = args.children
    sizes = args.sizes
    t = TRANSPORTS[contender](k, CAPACITY, tag, max(sizes))
    procs, clean = [], False
    out = {"children": k, "sizes": sizes, "warmup": args.warmup, "results": {}}
    try:
        procs = start_children(child, lambda i: (t, i), k)
        t.parent_open()
        barrier = Barrier(t, k)
        barrier(PING, repeat=getattr(t, "needs_repeated_ping", False))
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
            out["results"][str(size)] = {
                "n": n,
                "one_way_us": samples,
                "longest_round_trip_us": longest,
                "median_us": median(samples),
            }
            print(
                f"  {contender:>14} {size:>6} B: {median(samples):8.1f} us one-way",
                file=sys.stderr,
            )
        clean = True
    finally:
        try:
            out["stuck_children"] = stop_children(t, procs, clean)
        finally:
            t.parent_close()
            out["leftovers_removed_by_worker"] = t.cleanup()
    return out


def check(counts, expected, k, size):
    if counts != [expected] * k:
        raise AssertionError(
            f"{size} B: children received {counts} data messages, expected {expected} each"
        )


def variants(opts):
    """``[(label, worker arguments)]``: one variant, every size in one worker."""
    return [(f"{opts.children} children", ["--children", opts.children])]


def worker_argv(opts, contender):
    n = max(1, int(ROUND_TRIPS.get(contender, 500) * opts.scale))
    return [
        "--sizes",
        ",".join(map(str, opts.echo_sizes)),
        "--n",
        n,
        "--samples",
        opts.samples,
        "--warmup",
        min(WARMUP, n),
    ]


def table_rows(res, contenders, opts):
    """``(size, variant, samples by contender)`` for run.py's tables: one-way µs,
    lower is better."""
    for label, _ in variants(opts):
        for size in opts.echo_sizes:
            yield (
                size,
                label,
                {
                    c: r["results"][str(size)]["one_way_us"]
                    for c, r in res.get(label, {}).items()
                    if "error" not in r
                },
            )


UNIT, HIGHER_IS_BETTER = "µs one-way", False


def main(argv=None):
    p = worker_parser(__doc__)
    p.add_argument("--children", type=int, default=CHILDREN)
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=SIZES)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--warmup", type=int, default=WARMUP)
    return worker_main(p, NAME, body, argv)


if __name__ == "__main__":
    sys.exit(main())
