"""numpy arrays between processes: pysyncq against the ways they travel today.

    python benchmarks/arrays.py [--install-optional] [--quick] [--repeats 5]
                                [--sizes ...] [--readers 1,3] [--only pysyncq,mp.Queue|batches]
                                [--no-batches] [--ab TREE_A TREE_B]

(the same as ``python benchmarks/run.py --only arrays,batches --rounds 5 ...``).

One writer (the worker) sends ``warm + count`` float64 arrays of S bytes to
R reader processes (R = 1 and 3; S = 1 KiB, 64 KiB, 1 MiB, 8 MiB), each
reader receives every array.  The first ``warm`` arrays (enough to go once
around the ring, ``ArrayContender.warm_for``) are not timed, so that every
contender is measured in its steady state, as the ``memcpy`` reference is:
each reader notes the time it has its ``warm``-th array and its last one
(``time.perf_counter``, CLOCK_MONOTONIC), and a sample's time is the longest
of those intervals over the readers; MB/s per reader = count * S / time /
1e6.  (Until 2026-11-30 a sample ran from the first send on a freshly made
transport: pysyncq's first pass over a new ring then paid a page fault per
4 KiB of shared memory, about half of the time at 8 MiB on the 2-core VM,
while ``memcpy`` copied into memory it had already touched.)  Each reader
checks every array's size and its first and last elements, and does not
otherwise read the data (the same for every contender, so that a zero-copy
read is not charged for a pass over the data that a copy makes anyway).
Every sample forks fresh readers; the contenders are the ``ArrayContender``
classes of ``contenders/``, one sample per (size, R) per round.  The batches
(64 B messages, ``extend`` + ``pop_many`` against ``append`` + ``pop``) are
``batches.py``.
"""

import sys

import contenders
import harness
from harness import ints

NAME = "arrays"
ROLE = contenders.ArrayContender
UNIT, HIGHER_IS_BETTER = "MB/s per reader", True
ROUNDS, QUICK_SCALE = 5, 0.1
SIZES = [1 << 10, 64 << 10, 1 << 20, 8 << 20]
READERS = [1, 3]
#: Arrays per sample by size, before --scale: about 0.1-0.5 s for the fast ones.
COUNTS = {1 << 10: 20000, 64 << 10: 2000, 1 << 20: 200, 8 << 20: 24}


def options(p):
    p.add_argument(
        "--arrays-sizes", type=ints, default=SIZES, help="arrays: sizes in bytes (1 KiB ... 8 MiB)"
    )
    p.add_argument("--arrays-readers", type=ints, default=READERS, help="arrays: readers (1,3)")


def accepts(cls):
    return True


def jobs(opts):
    return [("", [])]


def count_for(size, scale):
    return max(3, int(COUNTS.get(size, max(3, (64 << 20) // size)) * scale))


def worker_argv(opts, cls):
    sizes = ",".join(map(str, opts.arrays_sizes))
    readers = ",".join(map(str, opts.arrays_readers))
    return ["--sizes", sizes, "--readers", readers, "--scale", opts.scale_of(NAME)]


def worker_options(p):
    p.add_argument("--sizes", type=ints, default=SIZES)
    p.add_argument("--readers", type=ints, default=READERS)
    p.add_argument("--scale", type=float, default=1.0)


def rows(cells):
    return sorted(cells, key=lambda c: (c[1], int(c[0][2:])))


def work(cls, tag, args):
    """One sample per (size, readers).  A failed cell is reported and the
    others still run; ``Skip`` (the tree lacks a method) ends the worker."""
    c = cls()
    cells = []
    for s in args.sizes:
        count = count_for(s, args.scale)
        for k in args.readers:
            cell = {"variant": f"R={k}", "size": s, "per_sample": count}
            try:
                secs = c.sample(s, k, count, f"{tag}_{s}_{k}")
            except harness.Skip:
                raise
            except Exception as e:  # noqa: BLE001 - note it, go on with the other cells
                import traceback

                cell["error"] = f"{type(e).__name__}: {e}"
                contenders.log(f"{cls.name} {s} B x{k}: FAILED\n{traceback.format_exc()}")
            else:
                cell["samples"] = [count * s / secs / 1e6]
                contenders.log(
                    f"  {cls.name:<17} {s:>8} B x{k}: {cell['samples'][0]:9.0f} MB/s per reader"
                )
            cells.append(cell)
    return {"cells": cells}


def table(cells, names):
    """Today's arrays table: MB/s per reader, and each of ours against each peer."""
    ours = [n for n in names if contenders.get(ROLE, n).ours]
    peers = [n for n in names if n not in ours]
    head = ["size", "readers", "contender", "MB/s per reader", "min – max"]
    head += [f"vs {p}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * 2 + "---|" + "---:|" * (len(head) - 3)]
    for (variant, size), by_c in cells.items():
        meds = {n: harness.median(x["samples"]) for n, x in by_c.items() if x.get("samples")}
        for n in names:
            x = by_c.get(n)
            if x is None:
                continue
            k = variant[2:]
            if not x.get("samples"):
                err = (x.get("error") or "no sample")[:40]
                lines.append(
                    f"| {harness.fmt_size(size)} | {k} | {n} | failed: {err} | |"
                    + " |" * len(peers)
                )
                continue
            xs = x["samples"]
            row = [
                harness.fmt_size(size),
                k,
                n,
                f"{meds[n]:,.0f}",
                f"{min(xs):,.0f} – {max(xs):,.0f}",
            ]
            for p in peers:
                row.append(f"{meds[n] / meds[p]:.2f}x" if n in ours and meds.get(p) else "")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def by_hand(argv):
    """``python benchmarks/arrays.py`` with today's options, as a ``run.py`` command line."""
    out, only, batches = [], [], True
    rename = {"--repeats": "--rounds", "--sizes": "--arrays-sizes", "--readers": "--arrays-readers"}
    it = iter(argv)
    for a in it:
        key, eq, val = a.partition("=")
        if key == "--no-batches":
            batches = False
        elif key == "--only":
            only += [x.strip() for x in (val if eq else next(it, "")).split(",") if x.strip()]
        elif key in rename:
            out += [rename[key], val if eq else next(it, "")]
        else:
            out.append(a)
    names = [x for x in only if x != "batches"]
    scenarios = ["batches"] if only and not names else ["arrays"] + (["batches"] if batches else [])
    if only and "batches" not in only:
        scenarios = ["arrays"]
    return ["--only", ",".join(scenarios + names), *out]


if __name__ == "__main__":
    sys.exit(harness.worker_main(sys.modules[__name__]))
