"""extend / pop_many: cost per message and per call, and msg/s between processes.

    python benchmarks/profile_batch.py                    # this tree, both parts
    python benchmarks/profile_batch.py --ab /work/main    # A/B: this tree vs another

Part 1 (in one process): each timing refills (or drains) the queue outside the
timed statement; best of 5.  The per-call fixed cost is the time of a call that
moves one message.  Part 2 (``--procs``): a forked reader drains with
``pop_many(k, block=True, decode=False)`` what the parent writes with
``extend`` in batches of ``k`` (64 B bytes bodies); messages/s per reader,
from the reader's first message to its last.  With ``--ab`` both parts run in
fresh interpreters, one per tree, alternating tree by tree for ``--repeats``
rounds, and the medians (min-max) and the ratio are printed side by side.
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = (1, 10, 100, 1000)
BODY = 64
TIMER = 30.0


def _import(tree):
    sys.path.insert(0, str(Path(tree).resolve()))
    import pysyncq

    return pysyncq


def timed(stmt, pre, n, env):
    stmt, pre = compile(stmt, "stmt", "exec"), compile(pre, "pre", "exec")
    best = float("inf")
    for _ in range(5):
        total = 0.0
        for _ in range(n):
            exec(pre, env)
            t = time.perf_counter()
            exec(stmt, env)
            total += time.perf_counter() - t
        best = min(best, total / n)
    return best


def in_process(pq):
    """ns per message and µs per call of extend and pop_many, by batch size."""
    w = pq.PySyncQ(size=1 << 24)
    r = pq.PySyncQ(w.name, create=False)
    res = {}
    try:
        w.open("writer", reader=False)
        r.open("reader")
        env = {"w": w, "r": r}
        for k in SIZES:
            env[f"b{k}"] = [b"x" * BODY] * k
            env[f"s{k}"] = ["x" * BODY] * k
        for _ in range(100):
            w.extend("t", env["b10"])
            r.pop_many(10)
        for k in SIZES:
            n = max(200, 20000 // k)
            res[k] = {
                "extend bytes": timed(f"w.extend('t', b{k})", f"r.pop_many({k})", n, env),
                "extend str": timed(f"w.extend('t', s{k})", f"r.pop_many({k})", n, env),
                "pop_many decode": timed(f"r.pop_many({k})", f"w.extend('t', s{k})", n, env),
                "pop_many raw": timed(
                    f"r.pop_many({k}, decode=False)", f"w.extend('t', b{k})", n, env
                ),
            }
        res["empty pop_many"] = timed("r.pop_many(100)", "pass", 20000, env)
        res["append"] = timed("w.append('t', b1[0])", "r.pop()", 20000, env)
        res["pop"] = timed("r.pop(decode=False)", "w.append('t', b1[0])", 20000, env)
    finally:
        r.close()
        w.close()
    return res


def _reader(q, count, k, out):
    got = 0
    with q.open("r"):
        out.put(("ready", 0.0))
        t0 = None
        while got < count:
            ms = q.pop_many(k, True, TIMER, False)
            if not ms:
                break
            if t0 is None:
                t0 = time.perf_counter()
            got += len(ms)
        out.put((got, time.perf_counter() - t0))


def two_processes(pq, k, count, pop_n=None):
    """msg/s per reader: extend in batches of ``k`` → pop_many(pop_n or k)."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    with pq.PySyncQ(size=4 << 20) as q:
        q.open("writer", filtself=False, reader=False)
        p = ctx.Process(target=_reader, args=(q, count, pop_n or k, out))
        p.start()
        try:
            out.get(timeout=TIMER)
            chunk = [bytes(BODY)] * k
            for _ in range(count // k):
                q.extend("d", chunk, True, TIMER)
            got, secs = out.get(timeout=TIMER)
        finally:
            p.join(TIMER)
            if p.is_alive():
                p.terminate()
                p.join(5)
    if got != count:
        raise RuntimeError(f"the reader got {got} of {count}")
    return count / secs


#: (label, batch size, pop_many's n); the last is arrays.py --only batches'.
PROC_CASES = [("10", 10, 10), ("100", 100, 100), ("1000", 1000, 1000), ("1000→4096", 1000, 4096)]


def procs(pq, count):
    return {label: two_processes(pq, k, count, n) for label, k, n in PROC_CASES}


def one(tree, what, count):
    pq = _import(tree)
    res = {}
    if "in" in what:
        res["in"] = in_process(pq)
    if "procs" in what:
        res["procs"] = procs(pq, count)
    return res


def fmt(xs, scale=1.0, unit=""):
    xs = [x * scale for x in xs]
    return f"{statistics.median(xs):,.0f}{unit} ({min(xs):,.0f}–{max(xs):,.0f})"


def ab(trees, repeats, what, count):
    """Each tree in a fresh interpreter, alternating, ``repeats`` rounds."""
    runs = {t: [] for t in trees}
    for rep in range(repeats):
        for t in trees if rep % 2 == 0 else trees[::-1]:
            cmd = [sys.executable, __file__, "--tree", t, "--json", "--what", what]
            cmd += ["--count", str(count)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if r.returncode:
                sys.exit(f"{t}: failed\n{r.stderr}")
            runs[t].append(json.loads(r.stdout.splitlines()[-1]))
            print(f"[{rep + 1}/{repeats}] {t} done", file=sys.stderr)
    a, b = trees
    print(f"load average {os.getloadavg()[0]:.2f}; A = {a}, B = {b}; medians (min–max)\n")
    if "in" in what:
        print("| batch | what | A ns/msg | B ns/msg | B/A |")
        print("|---:|---|---:|---:|---:|")
        keys = runs[a][0]["in"]
        for k in SIZES:
            for name in keys[str(k)]:
                xa = [r["in"][str(k)][name] / k for r in runs[a]]
                xb = [r["in"][str(k)][name] / k for r in runs[b]]
                ratio = statistics.median(xb) / statistics.median(xa)
                print(f"| {k} | {name} | {fmt(xa, 1e9)} | {fmt(xb, 1e9)} | {ratio:.2f} |")
        for name in ("empty pop_many", "append", "pop"):
            xa = [r["in"][name] for r in runs[a]]
            xb = [r["in"][name] for r in runs[b]]
            ratio = statistics.median(xb) / statistics.median(xa)
            print(f"| – | {name} (ns/call) | {fmt(xa, 1e9)} | {fmt(xb, 1e9)} | {ratio:.2f} |")
        print()
    if "procs" in what:
        print("| 1 writer → 1 reader, 64 B | A msg/s | B msg/s | B/A |")
        print("|---|---:|---:|---:|")
        for label, _, _ in PROC_CASES:
            xa = [r["procs"][label] for r in runs[a]]
            xb = [r["procs"][label] for r in runs[b]]
            ratio = statistics.median(xb) / statistics.median(xa)
            print(
                f"| extend({label.split('→')[0]}) → pop_many({label.split('→')[-1]}) "
                f"| {fmt(xa)} | {fmt(xb)} | {ratio:.2f} |"
            )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", default=str(HERE.parent), help="the checkout to import")
    p.add_argument("--ab", metavar="TREE", help="compare with TREE (A) against --tree (B)")
    p.add_argument("--what", default="in,procs", help="in, procs or both (in,procs)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--count", type=int, default=300_000, help="messages per process sample")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    o = p.parse_args()
    if o.ab:
        ab([o.ab, o.tree], o.repeats, o.what, o.count)
        return
    res = one(o.tree, o.what, o.count)
    if o.json:
        print(json.dumps(res, default=str))
        return
    print(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
