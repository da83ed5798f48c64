"""The same parameter sweep with pysyncq.Workers (benchmarks/sweep.py compares them)."""

import sys

import numpy as np

from pysyncq import Workers


def simulate(r, seed):
    """The long-run mean of 20,000 logistic maps x -> r x (1 - x) from random starts."""
    x = np.random.default_rng(seed).random(20_000)
    for _ in range(300):
        x = r * x * (1 - x)
    return float(x.mean())


def worker(q, index, n):
    q.scrntype.add("result")  # the other workers' results
    for _, _, body in q(block=True, timer=None):
        i, r, seed = body.split()
        if int(i) % n == index:  # every worker sees every task: take a share
            q.append("result", f"{r} {seed} {simulate(float(r), int(seed))}")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    grid = [(float(r), s) for r in np.linspace(2.5, 4.0, 60) for s in range(8)]
    with Workers(worker, n, args=(n,)) as q:
        for i, (r, s) in enumerate(grid):
            q.append("task", f"{i} {r} {s}")
        results = [tuple(map(float, q.pop(block=True, timer=None)[2].split())) for _ in grid]
    r, seed, mean = max(results, key=lambda t: t[2])
    print(f"{len(results)} runs; the largest mean {mean:.4f} at r={r:.3f}, seed {int(seed)}")
