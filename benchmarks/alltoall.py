"""All-to-all: N processes (default 3), each sends M messages of 64 B to all
the others and reads every message of the others.

Every peer sends in bursts of ``BURST`` and after each burst reads whatever
has arrived (without waiting), so that no transport can fill up and stall
the others; when it has sent all M it waits for the rest.  A sample runs
from the start barrier (the earliest peer's clock after it) until the last
peer has read all (N - 1) x M; total msg/s = N x M / that time (messages
sent; each is delivered N - 1 times).  A mesh with batch calls
(``pysyncq-batch``) sends a burst with one call and drains with one.

``python benchmarks/run.py --only alltoall``.
"""

import gc
import multiprocessing as mp
import signal
import sys
import time

import contenders
import harness
from harness import join_children, median, start_children

NAME = "alltoall"
ROLE = contenders.Mesh
UNIT, HIGHER_IS_BETTER = "msg/s total", True
ROUNDS, QUICK_SCALE = 3, 0.25
SIZE = 64
PEERS = 3
CAPACITY = 1 << 22
BURST = 32
#: Messages each peer sends per sample without its own ``counts["alltoall"]``
#: (scaled by --scale): about 0.3 s.
MESSAGES = 10000
SAMPLES = 3
DEADLINE = 60.0  # seconds one sample may take before a peer gives up


def options(p):
    p.add_argument("--peers", type=int, default=PEERS, help="alltoall: processes (3)")


def accepts(cls):
    return True


def jobs(opts):
    return [(f"{opts.peers} processes", ["--peers", opts.peers])]


def worker_argv(opts, cls):
    m = max(BURST, int(cls.count(NAME, MESSAGES) * opts.scale_of(NAME)))
    samples = opts.tp_samples or (2 if opts.quick else SAMPLES)
    return ["--m", m, "--samples", samples, "--size", SIZE]


def worker_options(p):
    p.add_argument("--peers", type=int, default=PEERS)
    p.add_argument("--size", type=int, default=SIZE)
    p.add_argument("--m", type=int, default=MESSAGES)
    p.add_argument("--samples", type=int, default=SAMPLES)


# -- The worker --------------------------------------------------------------------------


def peer(mesh, i, n, size, m, samples, barrier, results):
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


def work(cls, tag, args):
    n, size, m = args.peers, args.size, args.m
    mesh = cls(n, CAPACITY, tag)
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
        contenders.log(f"  {cls.name:>14} N={n} {size} B: {median(rates):10.0f} msg/s total")
    finally:
        stuck = join_children(procs, 10)
        left = mesh.cleanup()
    return {
        "cells": [{"size": size, "samples": rates, "per_sample": m}],
        "stuck_children": stuck,
        "leftovers_removed_by_worker": left,
    }


if __name__ == "__main__":
    sys.exit(harness.worker_main(sys.modules[__name__]))
