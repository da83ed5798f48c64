"""Run the pysyncq benchmarks against their peers and tabulate the results.

    python benchmarks/run.py            # full run (a few minutes on 2 cores)
    python benchmarks/run.py --quick    # smoke run, under a minute
    python benchmarks/run.py --only echo
    python benchmarks/run.py --only pysyncq,mp.Queue

Each (benchmark, contender) pair runs in its own child interpreter (see
``peers.py``); the raw samples of all of them go to
``benchmarks/results/<date>-<host>.json`` and one markdown table per
benchmark is printed, with a ratio column against ``pysyncq``.
"""

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import echo
import peers
import throughput
from contenders import quantile

BENCHMARKS = {echo.NAME: echo, throughput.NAME: throughput}
RESULTS = peers.HERE / "results"


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sample counts: a smoke run that takes under a minute",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="comma-separated benchmark names (echo, throughput) and/or contender "
        f"names ({', '.join(peers.CONTENDERS)}) to run",
    )
    p.add_argument("--children", type=int, default=3, help="echo: children (default 3)")
    p.add_argument(
        "--sizes",
        type=_ints,
        default=echo.SIZES,
        help="echo: message sizes in bytes (default 16,256,4096,65536)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help=f"echo: samples per size and round (default {echo.SAMPLES})",
    )
    p.add_argument("--readers", type=int, default=3, help="throughput: readers (default 3)")
    p.add_argument(
        "--tp-sizes",
        type=_ints,
        default=throughput.SIZES,
        help="throughput: message sizes in bytes (default 64,4096)",
    )
    p.add_argument(
        "--tp-samples",
        type=int,
        default=None,
        help=f"throughput: samples per size and round (default {throughput.SAMPLES})",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply every contender's round trips / messages per sample "
        "(default 1; 0.1 with --quick)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="run every contender this many times, in rotated order, pooling the "
        "samples (default 3; 1 with --quick)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds one worker may run before it is killed (default 300; 90 with --quick)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    p.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    p.add_argument(
        "--install-optional",
        action="store_true",
        help="pip install faster-fifo and pyzmq into benchmarks/.peers/optional "
        "first (used only by these benchmarks)",
    )
    opts = p.parse_args(argv)
    if opts.samples is None:
        opts.samples = 3 if opts.quick else echo.SAMPLES
    if opts.tp_samples is None:
        opts.tp_samples = 3 if opts.quick else throughput.SAMPLES
    if opts.scale is None:
        opts.scale = 0.1 if opts.quick else 1.0
    if opts.rounds is None:
        opts.rounds = 1 if opts.quick else 3
    if opts.timeout is None:
        opts.timeout = 90 if opts.quick else 300
    return opts


def _ints(s):
    return [int(x) for x in s.split(",") if x]


def select(only):
    names = [x.strip() for arg in only for x in arg.split(",") if x.strip()]
    benches = [n for n in names if n in BENCHMARKS]
    conts = [n for n in names if n in peers.CONTENDERS]
    unknown = [n for n in names if n not in BENCHMARKS and n not in peers.CONTENDERS]
    if unknown:
        sys.exit(
            f"--only: unknown name(s) {unknown}; choose from "
            f"{list(BENCHMARKS)} and {peers.CONTENDERS}"
        )
    return benches or list(BENCHMARKS), conts or None


def git_state():
    def git(*a):
        r = subprocess.run(["git", "-C", str(peers.REPO), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": (git("status", "--porcelain") or "").splitlines(),
    }


def host_tag():
    h = socket.gethostname().split(".")[0] or "host"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", h)[:24]


def versions():
    v = {"python": sys.version.split()[0]}
    for mod in ("numba", "numpy"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            v[mod] = None
    return v


# -- Tables --------------------------------------------------------------------


def ratio_text(r):
    """``r`` = how many times better pysyncq is (>1: the peer is slower)."""
    if r != r or r <= 0:
        return "n/a"
    if abs(r - 1) < 0.05:
        return "about the same"
    return f"{r:.1f}x slower" if r > 1 else f"{1 / r:.1f}x faster"


def fmt_size(n):
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def echo_table(res, contenders, opts):
    lines = [
        f"### Echo: one-way latency, µs (parent + {opts.children} children; "
        f"median of {opts.rounds * opts.samples} samples of N round trips"
        f"{_rounds(opts, opts.samples)}; lower is better)",
        "",
        "| size | contender | N | median µs | min – max µs | vs pysyncq |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for size in opts.sizes:
        base = _echo_median(res.get(peers.BASELINE), size)
        for c in contenders:
            r = res.get(c)
            if r is None or "error" in r:
                lines.append(f"| {fmt_size(size)} | {c} | | failed | | |")
                continue
            xs = r["results"][str(size)]["one_way_us"]
            med = quantile(xs, 0.5)
            rel = "(baseline)" if c == peers.BASELINE else ratio_text(med / base if base else 0)
            n = r["results"][str(size)]["n"]
            lines.append(
                f"| {fmt_size(size)} | {c} | {n} | {med:.1f} | "
                f"{min(xs):.1f} – {max(xs):.1f} | {rel} |"
            )
    return "\n".join(lines)


def _rounds(opts, per):
    return f" = {opts.rounds} rounds × {per}" if opts.rounds > 1 else ""


def _echo_median(r, size):
    if not r or "error" in r:
        return None
    return quantile(r["results"][str(size)]["one_way_us"], 0.5)


def throughput_table(res, contenders, opts):
    lines = [
        f"### Throughput: 1 writer → {opts.readers} readers (median of "
        f"{opts.rounds * opts.tp_samples} samples of M messages"
        f"{_rounds(opts, opts.tp_samples)}; higher is better)",
        "",
        "| size | contender | M | msgs/s | MB/s per reader | min – max msgs/s | vs pysyncq |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for size in opts.tp_sizes:
        b = res.get(peers.BASELINE)
        base = None
        if b and "error" not in b:
            base = quantile(b["results"][str(size)]["msgs_per_s"], 0.5)
        for c in contenders:
            r = res.get(c)
            if r is None or "error" in r:
                lines.append(f"| {fmt_size(size)} | {c} | | failed | | | |")
                continue
            x = r["results"][str(size)]
            rates = x["msgs_per_s"]
            med = quantile(rates, 0.5)
            rel = "(baseline)" if c == peers.BASELINE else ratio_text(base / med if base else 0)
            lines.append(
                f"| {fmt_size(size)} | {c} | {x['messages']} | {med:,.0f} | "
                f"{med * size / 1e6:.1f} | {min(rates):,.0f} – {max(rates):,.0f} | {rel} |"
            )
    return "\n".join(lines)


TABLES = {echo.NAME: echo_table, throughput.NAME: throughput_table}


def notes_for(bench, res):
    """Things worth a look: failures, stuck children, leftovers, spread, long stalls."""
    notes = []
    for c, r in res.items():
        if "error" in r:
            notes.append(f"{bench}/{c}: FAILED: {r['error'].splitlines()[0]}")
            continue
        stuck = [s for rd in r["rounds"] for s in rd["stuck_children"] or []]
        if stuck:
            notes.append(f"{bench}/{c}: children had to be terminated: {stuck}")
        left = [
            n
            for rd in r["rounds"]
            for key in ("leftovers", "leftovers_removed_by_worker")
            for n in rd[key] or []
        ]
        if left:
            notes.append(f"{bench}/{c}: shared memory left behind (removed): {left}")
        for size, x in r["results"].items():
            xs = x.get("one_way_us") or x.get("msgs_per_s")
            med = quantile(xs, 0.5)
            if med and (max(xs) / med > 2 or min(xs) / med < 0.5):
                notes.append(
                    f"{bench}/{c}/{size} B: samples spread widely "
                    f"({min(xs):.4g} – {max(xs):.4g}, median {med:.4g})"
                )
            stalls = [v for v in x.get("longest_round_trip_us", []) if v > 100_000]
            if stalls:
                notes.append(
                    f"{bench}/{c}/{size} B: a single round trip took "
                    f"{max(stalls) / 1e3:.0f} ms (missed wake-up?)"
                )
    return notes


# -- Main --------------------------------------------------------------------


#: Per-round facts of a worker, kept as lists in the merged result.
_PER_ROUND = (
    "env",
    "wall_s",
    "leftovers",
    "leftovers_removed_by_worker",
    "new_shm_entries",
    "stuck_children",
    "stderr",
)


def merge(res, contender, r):
    """Pool the samples of worker result ``r`` into ``res[contender]``."""
    for x in r["results"].values():
        for key in [k for k in x if k.startswith("median_")]:
            del x[key]  # recomputed from the pooled samples
    rounds = {k: r.pop(k, None) for k in _PER_ROUND}
    cur = res.get(contender)
    if cur is None:
        r["rounds"] = [rounds]
        res[contender] = r
        return
    cur["rounds"].append(rounds)
    for size, x in r["results"].items():
        for key, val in x.items():
            if isinstance(val, list):
                cur["results"][size][key].extend(val)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = parse_args(argv)
    benches, wanted = select(opts.only)
    if opts.install_optional:
        peers.install_optional()
    t_start = time.perf_counter()
    contenders, skipped = peers.available_contenders(wanted)
    for c, why in skipped.items():
        print(f"skipping {c}: {why}", file=sys.stderr)
    shm_before = sorted(peers.shm_entries())
    load_before = os.getloadavg()
    print(
        f"contenders: {', '.join(contenders)}; load average {load_before[0]:.2f}", file=sys.stderr
    )

    results, failures = {}, []
    for bench in benches:
        mod = BENCHMARKS[bench]
        results[bench] = {}
        for rnd in range(opts.rounds):
            # Rotate the order each round so that no contender always runs first.
            k = rnd % len(contenders)
            for c in contenders[k:] + contenders[:k]:
                if "error" in results[bench].get(c, {}):
                    continue  # failed in an earlier round: do not try again
                print(f"[{bench} round {rnd + 1}/{opts.rounds}] {c}", file=sys.stderr)
                r, err = peers.run_worker(
                    peers.HERE / f"{bench}.py", c, mod.worker_argv(opts, c), timeout=opts.timeout
                )
                if err:  # its stderr was shown as it came: repeat only the verdict
                    print("\n".join(err.splitlines()[:2]), file=sys.stderr)
                    failures.append(err)
                    results[bench][c] = {
                        "error": err,
                        "partial": r,
                        "earlier_rounds": results[bench].get(c),
                    }
                    continue
                merge(results[bench], c, r)

    elapsed = time.perf_counter() - t_start
    shm_after = sorted(peers.shm_entries())
    tables = {b: TABLES[b](results[b], contenders, opts) for b in benches}
    notes = [n for b in benches for n in notes_for(b, results[b])]
    ours = [n for n in shm_after if n.startswith(peers.SHM_PREFIX)]
    if ours:
        notes.append(f"/dev/shm still holds benchmark entries: {ours}")

    now = datetime.now()
    doc = {
        "date": now.isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "command": " ".join([sys.executable, *sys.argv])
        if argv == sys.argv[1:]
        else " ".join([sys.executable, "benchmarks/run.py", *argv]),
        "argv": argv,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "versions": versions(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "git": git_state(),
        "contenders": contenders,
        "skipped": skipped,
        "elapsed_s": elapsed,
        "shm_before": shm_before,
        "shm_after": shm_after,
        "benchmarks": results,
        "tables": tables,
        "notes": notes,
    }
    path = None
    if not opts.no_save:
        opts.out.mkdir(parents=True, exist_ok=True)
        path = opts.out / f"{now:%Y%m%d-%H%M%S}-{host_tag()}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")

    v = doc["versions"]
    print(
        f"\npython {v['python']}, numba {v['numba']}, numpy {v['numpy']}, "
        f"{doc['cpu_count']} CPUs, load average {load_before[0]:.2f} → "
        f"{doc['load_average_after'][0]:.2f}; {elapsed:.0f} s in all\n"
    )
    for b in benches:
        print(tables[b] + "\n")
    if skipped:
        print("Skipped: " + "; ".join(f"{c} ({why})" for c, why in skipped.items()) + "\n")
    if notes:
        print("Notes:\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    if path:
        try:
            shown = path.relative_to(Path.cwd())
        except ValueError:
            shown = path
        print(f"raw results: {shown}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
