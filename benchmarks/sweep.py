"""A parameter sweep written with multiprocessing.Pool and with pysyncq.Workers.

    python benchmarks/sweep.py [--rounds 3] [--workers 2] [--seeds 8]

Runs ``sweep/sweep_pool.py`` and ``sweep/sweep_pysyncq.py`` (the same
simulation over the same grid: 60 values of r times ``--seeds`` seeds, 480 by
default) alternately, each in a fresh
interpreter, and prints each script's line count (lines that are neither
blank nor a comment nor a docstring-only line) and the median wall time of
its runs, from start to exit (interpreter, imports and all).  Issue 18:
the pysyncq version must be no longer than the Pool one and no slower.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "sweep"
VARIANTS = {"pool": HERE / "sweep_pool.py", "pysyncq": HERE / "sweep_pysyncq.py"}


def code_lines(path):
    """Lines of code: not blank, not a comment, not the module docstring."""
    lines = [s.strip() for s in path.read_text().splitlines()]
    lines = [s for s in lines if s and not s.startswith("#")]
    return len([s for s in lines if not (s.startswith('"""') and s.endswith('"""'))])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, default=8, help="seeds per r (the grid's size / 60)")
    opts = p.parse_args()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    times = {name: [] for name in VARIANTS}
    outputs = {}
    for _ in range(opts.rounds):
        for name, script in VARIANTS.items():
            t = time.perf_counter()
            r = subprocess.run(
                [sys.executable, str(script), str(opts.workers), str(opts.seeds)],
                capture_output=True,
                text=True,
                timeout=600,
                env=env,
                check=True,
            )
            times[name].append(time.perf_counter() - t)
            outputs[name] = r.stdout.strip()
    for name, script in VARIANTS.items():
        median = statistics.median(times[name])
        print(
            f"{name:8} {code_lines(script):3d} lines  median {median:6.2f} s"
            f"  (runs: {', '.join(f'{t:.2f}' for t in times[name])})  {outputs[name]}"
        )
    if len(set(outputs.values())) != 1:
        sys.exit("the two sweeps disagree")


if __name__ == "__main__":
    main()
