"""extend / pop_many per message and per call, and where a batch's time goes (PROFILE.md §2).

    python benchmarks/profile_batch.py

Each timing refills (or drains) the queue outside the timed statement; best
of 5.  Then cProfile of 3000 extend(10) + pop_many(10) pairs.
"""

import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pysyncq import PySyncQ  # noqa: E402


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


def main():
    w = PySyncQ(size=1 << 24)
    r = PySyncQ(w.name, create=False)
    try:
        w.open("writer", reader=False)
        r.open("reader")
        env = {"w": w, "r": r}
        for k in (10, 100, 1000):
            env[f"b{k}"] = ["x" * 16] * k
        for _ in range(100):
            w.extend("t", env["b10"])
            r.pop_many(10)
        for k in (10, 100, 1000):
            n = 20000 // k
            e = timed(f"w.extend('t', b{k})", f"r.pop_many({k})", n, env)
            p = timed(f"r.pop_many({k})", f"w.extend('t', b{k})", n, env)
            pd = timed(f"r.pop_many({k}, decode=False)", f"w.extend('t', b{k})", n, env)
            print(
                f"batch {k:4d}: extend {e / k * 1e9:5.0f} ns/msg ({e * 1e6:6.1f} µs/call), "
                f"pop_many {p / k * 1e9:5.0f} ns/msg ({p * 1e6:6.1f} µs/call), "
                f"decode=False {pd / k * 1e9:5.0f} ns/msg"
            )
        a = timed("w.append('t', 'x' * 16)", "r.pop()", 20000, env)
        b = timed("r.pop()", "w.append('t', 'x' * 16)", 20000, env)
        print(
            f"for comparison, one append {a * 1e9:.0f} ns, one pop {b * 1e9:.0f} ns (same method)"
        )
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(3000):
            w.extend("t", env["b10"])
            r.pop_many(10)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(12)
    finally:
        r.close()
        w.close()


if __name__ == "__main__":
    main()
