"""All-to-all: N processes (default 3), each sends M messages of 64 B to all
the others and reads every message of the others.

Every peer sends in bursts of ``BURST`` and after each burst reads whatever
has arrived (without waiting), so that no transport can fill up and stall
the others; when it has sent all M it waits for the rest.  A sample runs
from the start barrier (the earliest peer's clock after it) until the last
peer has read all (N - 1) x M; total msg/s = N x M / that time (messages
sent; each is delivered N - 1 times).

Contenders (contenders.py ``MESHES``): pysyncq (one queue), pyzmq (a PUB per
peer, a SUB connected to all others), Pipe (a duplex Pipe per pair), all one
call per message; and pysyncq-batch, the same queue with a burst sent by one
``extend`` and a drain made by one ``pop_many``.

Run ``python benchmarks/run.py --only alltoall``.
"""

import gc
import multiprocessing as mp
import sys
import time

from harness import join_children, median, start_children, worker_main, worker_parser

NAME = "alltoall"
CONTENDERS = ["pysyncq", "pysyncq-batch", "Pipe", "pyzmq"]
SIZES = [64]
PEERS = 3
CAPACITY = 1 << 22
BURST = 32
#: Messages each peer sends per sample (scaled by --scale): about 0.3 s.
MESSAGES = {"pysyncq": 30000, "pysyncq-batch": 120000, "Pipe": 20000, "pyzmq": 30000}
SAMPLES = 3
DEADLINE = 60.0  # seconds one sample may take before a peer gives up


def peer(mesh, i, n, size, m, samples, barrier, results):
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.disable()
    try:
        mesh.open(i)
        barrier.wait(60)
        msg = bytes(size)
        expected = (n - 1) * m
        send, recv_nowait, recv = mesh.send, mesh.recv_nowait, mesh.recv
        batch = getattr(mesh, "send_many", None)
        burst = [msg] * BURST
        pc = time.perf_counter
        for _ in range(samples + 1):  # the first one warms up
            barrier.wait(60)
            t0 = pc()
            sent = got = bad = 0
            if batch is not None:  # the same loop, a burst and a drain per call
                send_many, recv_many = mesh.send_many, mesh.recv_many
                while sent < m:
                    sent += send_many(burst if m - sent >= BURST else burst[: m - sent])
                    bodies = recv_many()
                    got += len(bodies)
                    bad += sum(len(b) != size for b in bodies)
                while got < expected:
                    bodies = recv_many(DEADLINE)
                    got += len(bodies)
                    bad += sum(len(b) != size for b in bodies)
            while sent < m:
                for _ in range(min(BURST, m - sent)):
                    if not send(msg):
                        break
                    sent += 1
                while True:
                    b = recv_nowait()
                    if b is None:
                        break
                    got += 1
                    bad += len(b) != size
            while got < expected:
                b = recv(DEADLINE)
                got += 1
                bad += len(b) != size
            t1 = pc()
            results.put((i, t0, t1, got, bad))
            barrier.wait(60)
            gc.collect()
        mesh.close()
    except BaseException as e:
        results.put((i, "error", repr(e)))
        raise


def body(contender, tag, args):
    from contenders import MESHES

    n, size, m = args.peers, args.size, args.m
    mesh = MESHES[contender](n, CAPACITY, tag)
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs, stuck, rates = [], [], []
    try:
        procs = start_children(
            peer, lambda i: (mesh, i, n, size, m, args.samples, barrier, results), n
        )
        for k in range(args.samples + 1):
            got = [results.get(timeout=DEADLINE + 60) for _ in range(n)]
            errors = [g for g in got if g[1] == "error"]
            if errors:
                raise RuntimeError(f"peers failed: {errors}")
            if any(g[3] != (n - 1) * m or g[4] for g in got):
                raise AssertionError(f"peers read {[(g[3], g[4]) for g in got]}")
            if k:
                t = max(g[2] for g in got) - min(g[1] for g in got)
                rates.append(n * m / t)
        print(
            f"  {contender:>14} N={n} {size} B: {median(rates):10.0f} msg/s total", file=sys.stderr
        )
    finally:
        stuck = join_children(procs, 10)
        left = mesh.cleanup()
    return {
        "peers": n,
        "sizes": [size],
        "results": {str(size): {"messages_per_peer": m, "msgs_per_s": rates}},
        "stuck_children": stuck,
        "leftovers_removed_by_worker": left,
    }


def variants(opts):
    return [(f"{opts.peers} processes", ["--peers", opts.peers])]


def worker_argv(opts, contender):
    m = max(BURST, int(MESSAGES.get(contender, 10000) * opts.scale))
    return ["--m", m, "--samples", opts.tp_samples, "--size", SIZES[0]]


def table_rows(res, contenders, opts):
    for label, _ in variants(opts):
        yield (
            SIZES[0],
            label,
            {
                c: r["results"][str(SIZES[0])]["msgs_per_s"]
                for c, r in res.get(label, {}).items()
                if "error" not in r
            },
        )


UNIT, HIGHER_IS_BETTER = "msg/s total", True


def main(argv=None):
    p = worker_parser(__doc__)
    p.add_argument("--peers", type=int, default=PEERS)
    p.add_argument("--size", type=int, default=SIZES[0])
    p.add_argument("--m", type=int, default=10000)
    p.add_argument("--samples", type=int, default=SAMPLES)
    return worker_main(p, NAME, body, argv)


if __name__ == "__main__":
    sys.exit(main())
