"""Broadcast throughput: one writer, R readers (default 3).

The writer sends M messages of S bytes as fast as the transport allows
(blocking when it is full); every reader reads all M, checks each body's
length, and reports the ``time.perf_counter`` at which it had the M-th (the
clock is system-wide, CLOCK_MONOTONIC).  A sample's time runs from just
before the first send until the last reader had all M; it gives messages/s
(M / time) and MB/s (M * S / time / 1e6, payload bytes delivered to *each*
reader).  After each sample a barrier checks that every reader counted
exactly M.  The median of the samples is reported.

Run ``python benchmarks/run.py --only throughput`` (this file alone does the
same).  ``--worker`` is the mode that ``run.py`` starts once per contender.
"""

import argparse
import gc
import sys
import time

from contenders import (
    DATA,
    DONE,
    GC,
    KILL,
    PING,
    START,
    Barrier,
    answer_barrier,
    benchmark_main,
    child_setup,
    make_transport,
    quantile,
    start_children,
    stop_children,
    worker_args,
)

NAME = "throughput"
SIZES = [64, 4096]
CAPACITY = 1 << 22  # 4 MiB of queue per queue
#: Messages per sample at 64 B, by contender (scaled by --scale); halved at 4 KiB.
#: The aim: about 0.3 s per sample.
MESSAGES = {
    "pysyncq": 50000,
    "pysyncq-0.0.1": 12000,
    "mp.Queue": 20000,
    "faster-fifo": 15000,
    "pyzmq": 40000,
}
SAMPLES = 3  # per round; run.py runs 3 rounds
WARMUP = 500


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
                target, size = (int(x) for x in body.split())
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
            ts, child, nbad = body.split()
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
    k = args.readers
    sizes = args.sizes
    t = make_transport(contender, k, CAPACITY, tag, msg_size=max(sizes))
    procs, clean = [], False
    out = {"readers": k, "sizes": sizes, "results": {}}
    try:
        procs = start_children(child, t, k)
        t.parent_open()
        barrier = Barrier(t, k)
        barrier(PING, repeat=getattr(t, "needs_repeated_ping", False))
        for size in sizes:
            msg = bytes(size)
            m = max(1, args.m if size <= 64 else args.m // 2)
            one_sample(t, barrier, k, msg, min(m, args.warmup))
            secs, send_secs = [], []
            for _ in range(args.samples):
                s, ss = one_sample(t, barrier, k, msg, m)
                secs.append(s)
                send_secs.append(ss)
            rates = [m / s for s in secs]
            out["results"][str(size)] = {
                "messages": m,
                "seconds": secs,
                "send_seconds": send_secs,
                "msgs_per_s": rates,
                "mb_per_s": [r * size / 1e6 for r in rates],
                "median_msgs_per_s": quantile(rates, 0.5),
                "median_mb_per_s": quantile(rates, 0.5) * size / 1e6,
            }
            print(
                f"  {contender:>14} {size:>6} B: {quantile(rates, 0.5):10.0f} msg/s",
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


def worker_argv(opts, contender):
    m = max(2, int(MESSAGES.get(contender, 10000) * opts.scale))
    return [
        "--readers",
        opts.readers,
        "--sizes",
        ",".join(map(str, opts.tp_sizes)),
        "--m",
        m,
        "--samples",
        opts.tp_samples,
        "--warmup",
        min(WARMUP, m),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    worker_args(p)
    p.add_argument("--readers", type=int, default=3)
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=SIZES)
    p.add_argument("--m", type=int, default=10000)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--warmup", type=int, default=WARMUP)
    return benchmark_main(p, NAME, argv, body)


if __name__ == "__main__":
    sys.exit(main())
