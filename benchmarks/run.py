"""Run the pysyncq benchmarks against their peers, side by side, and tabulate.

    python benchmarks/run.py                      # full run: about 6 minutes on 2 cores
    python benchmarks/run.py --quick              # 1-2 minutes, one round: a smoke run
    python benchmarks/run.py --only echo          # one scenario
    python benchmarks/run.py --only pysyncq,Pipe  # some contenders
    python benchmarks/run.py --install-optional   # pyzmq, faster-fifo, pysyncq 0.0.1
                                                  # into benchmarks/.peers first

Scenarios: echo (latency), fanout (one writer, R readers), alltoall (every
process sends to every other).  Each (scenario, variant, contender) runs in
its own worker interpreter (``harness.py``), and every contender runs once per
round, in rotated order, so that a burst of load does not land on one
contender alone; the samples of the rounds are pooled.  The tables give the
median, the min - max of the samples and the ratio of pysyncq to every peer
of the same run; the raw samples go to ``benchmarks/results/<date>-<host>.json``.
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

import alltoall
import echo
import fanout
import harness
from harness import BASELINE, PQ001_NAME, median

SCENARIOS = {m.NAME: m for m in (echo, fanout, alltoall)}
#: Every contender, in table order.
ALL_CONTENDERS = list(dict.fromkeys(c for m in SCENARIOS.values() for c in m.CONTENDERS))
RESULTS = harness.HERE / "results"
#: The peers an issue-9 target compares with; None: the best of the live peers
#: (every contender but pysyncq, pysyncq-0.0.1 and the copy reference).
TARGETS = [
    # (scenario, size, variant, peer, target ratio, target text)
    ("echo", 16, None, "Pipe", 0.5, "≤ 0.5× Pipe"),
    ("echo", 1024, None, "Pipe", 0.5, "≤ 0.5× Pipe"),
    ("echo", 65536, None, "Pipe", 0.5, "≤ 0.5× Pipe"),
    ("fanout", 64, "R=1", "pyzmq", 1.2, "≥ 1.2× pyzmq"),
    ("fanout", 64, "R=2", "pyzmq", 1.2, "≥ 1.2× pyzmq"),
    ("fanout", 4096, "R=1", None, 2.0, "≥ 2× best peer"),
    ("fanout", 4096, "R=2", None, 2.0, "≥ 2× best peer"),
    ("fanout", 1 << 20, "R=1", "copy-ring", 0.9, "≥ 0.9× copy-ring"),
    ("fanout", 1 << 20, "R=2", "copy-ring", 0.9, "≥ 0.9× copy-ring"),
    ("alltoall", 64, None, "pyzmq", 1.5, "≥ 1.5× pyzmq"),
    # Not a target of its own: the same scenario with pysyncq's batch calls.
    ("alltoall", 64, None, "pyzmq", 1.5, "≥ 1.5× pyzmq", "pysyncq-batch"),
]


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="fewer samples and rounds: under 3 minutes")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"comma-separated scenarios ({', '.join(SCENARIOS)}) and/or contenders "
        f"({', '.join(ALL_CONTENDERS)})",
    )
    p.add_argument("--children", type=int, default=echo.CHILDREN, help="echo: children (2)")
    p.add_argument(
        "--sizes",
        "--echo-sizes",
        dest="echo_sizes",
        type=_ints,
        default=echo.SIZES,
        help="echo: message sizes in bytes (16,1024,65536)",
    )
    p.add_argument("--samples", type=int, default=None, help="echo: samples per size and round (5)")
    p.add_argument(
        "--readers", type=_ints, default=fanout.READERS, help="fanout: reader counts (1,2)"
    )
    p.add_argument(
        "--fanout-sizes",
        type=_ints,
        default=fanout.SIZES,
        help="fanout: message sizes in bytes (64,4096,1048576)",
    )
    p.add_argument("--peers", type=int, default=alltoall.PEERS, help="alltoall: processes (3)")
    p.add_argument(
        "--tp-samples", type=int, default=None, help="fanout, alltoall: samples per round (3)"
    )
    p.add_argument(
        "--scale", type=float, default=None, help="multiply messages per sample (1; 0.25 quick)"
    )
    p.add_argument("--rounds", type=int, default=None, help="rounds (3; 1 with --quick)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per worker (300)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    p.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    p.add_argument(
        "--install-optional",
        action="store_true",
        help="pip install faster-fifo, pyzmq and pysyncq 0.0.1 into benchmarks/.peers first",
    )
    o = p.parse_args(argv)
    quick = o.quick
    o.samples = o.samples or (3 if quick else echo.SAMPLES)
    o.tp_samples = o.tp_samples or (2 if quick else fanout.SAMPLES)
    o.scale = o.scale or (0.25 if quick else 1.0)
    o.rounds = o.rounds or (1 if quick else 3)
    o.timeout = o.timeout or (120 if quick else 300)
    return o


def _ints(s):
    return [int(x) for x in s.split(",") if x]


def select(only):
    names = [x.strip() for arg in only for x in arg.split(",") if x.strip()]
    unknown = [n for n in names if n not in SCENARIOS and n not in ALL_CONTENDERS]
    if unknown:
        sys.exit(f"--only: unknown {unknown}; choose from {list(SCENARIOS)} and {ALL_CONTENDERS}")
    benches = [n for n in names if n in SCENARIOS] or list(SCENARIOS)
    conts = [n for n in names if n in ALL_CONTENDERS] or ALL_CONTENDERS
    return benches, conts


# -- Tables ------------------------------------------------------------------------


def fmt_size(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


def fmt_val(x):
    return f"{x:,.0f}" if x >= 1000 else f"{x:.1f}"


def advantage(mod, ours, theirs):
    """How many times better pysyncq's median is than a peer's (> 1: pysyncq wins)."""
    if not ours or not theirs:
        return float("nan")
    return ours / theirs if mod.HIGHER_IS_BETTER else theirs / ours


def scenario_table(mod, res, contenders, opts):
    lines = [
        f"### {mod.NAME}: {mod.UNIT} ({'higher' if mod.HIGHER_IS_BETTER else 'lower'} is "
        f"better; median of all samples of {opts.rounds} interleaved round(s))",
        "",
        "| size | variant | contender | median | min – max | pysyncq vs it |",
        "|---:|---|---|---:|---:|---|",
    ]
    for size, label, by_c in mod.table_rows(res, contenders, opts):
        base = median(by_c[BASELINE]) if BASELINE in by_c else None
        for c in contenders:
            if c not in mod.CONTENDERS:
                continue
            if c not in by_c:
                failed = c in res.get(label, {})
                lines.append(
                    f"| {fmt_size(size)} | {label} | {c} | {'failed' if failed else '–'} | | |"
                )
                continue
            xs = by_c[c]
            med = median(xs)
            if c == BASELINE:
                rel = "(baseline)"
            else:
                a = advantage(mod, base, med)
                rel = "n/a" if a != a else f"{a:.2f}× ({'faster' if a >= 1 else 'slower'})"
            lines.append(
                f"| {fmt_size(size)} | {label} | {c} | {fmt_val(med)} | "
                f"{fmt_val(min(xs))} – {fmt_val(max(xs))} | {rel} |"
            )
    return "\n".join(lines)


def summary_table(results, opts):
    """Issue 9's table: pysyncq, the peer of the target, the ratio, the target."""
    lines = [
        "| scenario | pysyncq | peer | ratio now | target | met |",
        "|---|---:|---|---:|---|---|",
    ]
    for name, size, variant, peer, goal, text, *who in TARGETS:
        ours_c = who[0] if who else BASELINE
        mod = SCENARIOS[name]
        if name not in results:
            continue
        for s, label, by_c in mod.table_rows(results[name], ALL_CONTENDERS, opts):
            if s != size or (variant and label != variant) or ours_c not in by_c:
                continue
            meds = {c: median(xs) for c, xs in by_c.items()}
            ours = meds[ours_c]
            if peer is None:
                mine = (BASELINE, PQ001_NAME, "copy-ring", "pysyncq-batch")
                live = {c: v for c, v in meds.items() if c not in mine}
                if not live:
                    continue
                best = (max if mod.HIGHER_IS_BETTER else min)(live, key=live.get)
            else:
                best = peer
            if best not in meds:
                continue
            theirs = meds[best]
            # The ratio in the target's own terms: latency pysyncq / peer
            # (lower is better), throughput pysyncq / peer (higher is better).
            ratio = ours / theirs
            met = ratio <= goal if not mod.HIGHER_IS_BETTER else ratio >= goal
            what = f"{name} {fmt_size(size)} {label}"
            if ours_c != BASELINE:
                what += f", {ours_c}"
            lines.append(
                f"| {what} ({mod.UNIT}) | {fmt_val(ours)} | {best} {fmt_val(theirs)} | "
                f"{ratio:.2f}× | {text} | {'yes' if met else 'no'} |"
            )
    return "\n".join(lines)


def notes_for(bench, res):
    notes = []
    for label, by_c in res.items():
        for c, r in by_c.items():
            where = f"{bench}/{label}/{c}"
            if "error" in r:
                notes.append(f"{where}: FAILED: {r['error'].splitlines()[0]}")
                continue
            for rd in r["rounds"]:
                if rd.get("stuck_children"):
                    notes.append(f"{where}: children had to be terminated: {rd['stuck_children']}")
                left = (rd.get("leftovers") or []) + (rd.get("leftovers_removed_by_worker") or [])
                if left:
                    notes.append(f"{where}: shared memory left behind (removed): {left}")
            for size, x in r["results"].items():
                xs = x.get("one_way_us") or x.get("msgs_per_s")
                med = median(xs)
                if med and (max(xs) / med > 2 or min(xs) / med < 0.5):
                    notes.append(
                        f"{where}/{size} B: samples spread widely "
                        f"({min(xs):.4g} – {max(xs):.4g}, median {med:.4g})"
                    )
                stalls = [v for v in x.get("longest_round_trip_us", []) if v > 100_000]
                if stalls:
                    notes.append(
                        f"{where}/{size} B: one round trip took {max(stalls) / 1e3:.0f} ms"
                    )
    return notes


# -- Main ----------------------------------------------------------------------------

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


def git_state():
    def git(*a):
        r = subprocess.run(["git", "-C", str(harness.REPO), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": (git("status", "--porcelain") or "").splitlines(),
    }


def versions():
    v = {"python": sys.version.split()[0]}
    for mod in ("numba", "numpy"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            v[mod] = None
    return v


def run_all(benches, contenders, opts):
    results, failures = {}, []
    for bench in benches:
        mod = SCENARIOS[bench]
        mine = [c for c in contenders if c in mod.CONTENDERS]
        results[bench] = {}
        for label, vargs in mod.variants(opts):
            res = results[bench].setdefault(label, {})
            for rnd in range(opts.rounds):
                k = rnd % len(mine)
                for c in mine[k:] + mine[:k]:
                    if "error" in res.get(c, {}):
                        continue  # failed in an earlier round: do not try again
                    print(f"[{bench} {label} round {rnd + 1}/{opts.rounds}] {c}", file=sys.stderr)
                    r, err = harness.run_worker(
                        harness.HERE / f"{bench}.py",
                        c,
                        [*vargs, *mod.worker_argv(opts, c)],
                        timeout=opts.timeout,
                    )
                    if err:
                        print("\n".join(err.splitlines()[:2]), file=sys.stderr)
                        failures.append(err)
                        res[c] = {"error": err, "partial": r, "earlier_rounds": res.get(c)}
                        continue
                    merge(res, c, r)
    return results, failures


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = parse_args(argv)
    benches, wanted = select(opts.only)
    if opts.install_optional:
        harness.install_optional()
    t_start = time.perf_counter()
    contenders, skipped = harness.available(wanted)
    for c, why in skipped.items():
        print(f"skipping {c}: {why}", file=sys.stderr)
    shm_before = sorted(harness.shm_entries())
    load_before = os.getloadavg()
    print(
        f"contenders: {', '.join(contenders)}; load average {load_before[0]:.2f}", file=sys.stderr
    )

    results, failures = run_all(benches, contenders, opts)

    elapsed = time.perf_counter() - t_start
    shm_after = sorted(harness.shm_entries())
    tables = {b: scenario_table(SCENARIOS[b], results[b], contenders, opts) for b in benches}
    summary = summary_table(results, opts)
    notes = [n for b in benches for n in notes_for(b, results[b])]
    ours = [n for n in shm_after if n.startswith(harness.SHM_PREFIX)]
    if ours:
        notes.append(f"/dev/shm still holds benchmark entries: {ours}")
    now = datetime.now()
    doc = {
        "date": now.isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "command": " ".join([sys.executable, "benchmarks/run.py", *argv]),
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
        "summary": summary,
        "tables": tables,
        "notes": notes,
    }
    path = None
    if not opts.no_save:
        opts.out.mkdir(parents=True, exist_ok=True)
        host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname().split(".")[0] or "host")[:24]
        path = opts.out / f"{now:%Y%m%d-%H%M%S}-{host}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")

    v = doc["versions"]
    print(
        f"\npython {v['python']}, numba {v['numba']}, numpy {v['numpy']}, "
        f"{doc['cpu_count']} CPUs, load average {load_before[0]:.2f} → "
        f"{doc['load_average_after'][0]:.2f}; {elapsed:.0f} s in all\n"
    )
    print("### Issue 9 targets (ratio = pysyncq / peer, same run)\n\n" + summary + "\n")
    for b in benches:
        print(tables[b] + "\n")
    if skipped:
        print("Skipped: " + "; ".join(f"{c} ({why})" for c, why in skipped.items()) + "\n")
    if notes:
        print("Notes:\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    if path:
        print(f"raw results: {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
