"""A parameter sweep with multiprocessing.Pool (the reference of benchmarks/sweep.py)."""

import multiprocessing as mp
import sys

import numpy as np


def simulate(r, seed):
    """The long-run mean of 20,000 logistic maps x -> r x (1 - x) from random starts."""
    x = np.random.default_rng(seed).random(20_000)
    for _ in range(300):
        x = r * x * (1 - x)
    return float(x.mean())


def task(params):
    r, seed = params
    return r, seed, simulate(r, seed)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    grid = [(float(r), s) for r in np.linspace(2.5, 4.0, 60) for s in range(seeds)]
    with mp.Pool(n) as pool:
        results = pool.map(task, grid)
    r, seed, mean = max(results, key=lambda t: t[2])
    print(f"{len(results)} runs; the largest mean {mean:.4f} at r={r:.3f}, seed {seed}")
