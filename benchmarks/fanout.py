"""Fanout (broadcast throughput): one writer, R readers (R = 1 and 2 by default).

The writer sends M messages of S bytes (64 B, 4 KiB, 1 MiB) as fast as the
transport allows, blocking when it is full; every reader reads all M, checks
each body's length, and reports the ``time.perf_counter`` at which it had the
M-th (the clock is system-wide, CLOCK_MONOTONIC).  A sample's time runs from
just before the first send until the last reader had all M: messages/s *per
reader* = M / time (each reader receives all M); MB/s = that x S.  After each
sample a barrier checks that every reader counted exactly M.

``copy-ring`` (contenders.py) is the copy reference: one memcpy in by the
writer, one memcpy out by each reader, lock-free counters, nothing else.

Run ``python benchmarks/run.py --only fanout``.  ``--worker`` is the mode that
``run.py`` starts once per (contender, R).
"""

import gc
import sys
import time

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
    median,
    start_children,
    stop_children,
    worker_main,
    worker_parser,
)

NAME = "fanout"
SIZES = [64, 4096, 1 << 20]
READERS = [1, 2]
CONTENDERS = [
    "pysyncq",
    "pysyncq-0.0.1",
    "Pipe",
    "mp.Queue",
    "faster-fifo",
    "pyzmq",
    "copy-ring",
]
CAPACITY = 1 << 22  # 4 MiB of queue per queue, or 8 messages if more
#: Messages per sample at 64 B, by contender (scaled by --scale); the aim is
#: about 0.3 s per sample.  Divided by SIZE_DIVISOR for larger sizes.
MESSAGES = {
    "pysyncq": 60000,
    "pysyncq-0.0.1": 12000,
    "Pipe": 40000,
    "mp.Queue": 20000,
    "faster-fifo": 15000,
    "pyzmq": 60000,
    "copy-ring": 30000,
}
SIZE_DIVISOR = {64: 1, 4096: 2}  # larger: 30 (1 MiB: 2000 pysyncq messages)
SAMPLES = 3  # per round; run.py runs 3 rounds
WARMUP = 500


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


def body(contender, tag, args):
    from contenders import TRANSPORTS

    k = args.readers
    out = {"readers": k, "sizes": args.sizes, "results": {}}
    for size in args.sizes:  # a transport per size: the queues are sized for it
        out["results"][str(size)], stuck, left = one_size(contender, tag, args, size, TRANSPORTS)
        out.setdefault("stuck_children", []).extend(stuck)
        out.setdefault("leftovers_removed_by_worker", []).extend(left)
    return out


def one_size(contender, tag, args, size, transports):
    k = args.readers
    t = transports[contender](k, capacity_for(size), f"{tag}_{size}", size)
    procs, clean, stuck, left = [], False, [], []
    try:
        procs = start_children(child, lambda i: (t, i), k)
        t.parent_open()
        barrier = Barrier(t, k)
        barrier(PING, repeat=getattr(t, "needs_repeated_ping", False))
        msg = bytes(size)
        m = messages_for(args.m, size)
        one_sample(t, barrier, k, msg, min(m, args.warmup))
        secs, send_secs = [], []
        for _ in range(args.samples):
            s, ss = one_sample(t, barrier, k, msg, m)
            secs.append(s)
            send_secs.append(ss)
        rates = [m / s for s in secs]
        print(
            f"  {contender:>14} R={k} {size:>8} B: {median(rates):10.0f} msg/s per reader",
            file=sys.stderr,
        )
        clean = True
        return (
            {
                "messages": m,
                "seconds": secs,
                "send_seconds": send_secs,
                "msgs_per_s": rates,
                "mb_per_s": [r * size / 1e6 for r in rates],
            },
            stuck,
            left,
        )
    finally:
        try:
            stuck += stop_children(t, procs, clean)
        finally:
            t.parent_close()
            left += t.cleanup()


def variants(opts):
    return [(f"R={r}", ["--readers", r]) for r in opts.readers]


def worker_argv(opts, contender):
    m = max(2, int(MESSAGES.get(contender, 10000) * opts.scale))
    return [
        "--sizes",
        ",".join(map(str, opts.fanout_sizes)),
        "--m",
        m,
        "--samples",
        opts.tp_samples,
        "--warmup",
        min(WARMUP, m),
    ]


def table_rows(res, contenders, opts):
    for size in opts.fanout_sizes:
        for label, _ in variants(opts):
            yield (
                size,
                label,
                {
                    c: r["results"][str(size)]["msgs_per_s"]
                    for c, r in res.get(label, {}).items()
                    if "error" not in r
                },
            )


UNIT, HIGHER_IS_BETTER = "msg/s per reader", True


def main(argv=None):
    p = worker_parser(__doc__)
    p.add_argument("--readers", type=int, default=1)
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=SIZES)
    p.add_argument("--m", type=int, default=10000)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--warmup", type=int, default=WARMUP)
    return worker_main(p, NAME, body, argv)


if __name__ == "__main__":
    sys.exit(main())
