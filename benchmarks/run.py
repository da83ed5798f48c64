"""Run the pysyncq benchmarks against their peers, side by side, and tabulate.

    python benchmarks/run.py                      # echo, fanout, alltoall: 6 min on 2 cores
    python benchmarks/run.py --quick              # one round, fewer messages: a smoke run
    python benchmarks/run.py --only echo          # one scenario (or several: echo,arrays)
    python benchmarks/run.py --only fanout,pysyncq,Pipe   # some contenders
    python benchmarks/run.py --only all           # every scenario
    python benchmarks/run.py --install-optional   # pyzmq, faster-fifo, pysyncq 0.0.1
                                                  # into benchmarks/.peers first
    python benchmarks/run.py --ab OLD NEW --only messages,arrays,batches
                                                  # A/B: two pysyncq trees, interleaved

Scenarios: echo, fanout, alltoall (the ``messages`` group, the default),
arrays, batches (what ``arrays.py`` runs), jit, bridge, aio_latency, recovery, coldstart.
Each (scenario, variant, contender) runs in its own worker interpreter
(``harness.py``) once per round, in rotated order, so that a burst of load
does not land on one contender alone; the samples of the rounds are pooled.
The tables give the median, the min - max of the samples and the ratio of
pysyncq to every peer of the same run; a summary (medians, ranges, the
configuration, the commit) goes to ``benchmarks/results/<date>-<host>.json``
and the printed tables beside it (``.txt``).

``--ab A B``: the same scenarios against two trees (directories holding a
``pysyncq/`` package, e.g. a ``git worktree`` of an older commit and this
checkout), only the contenders that import the tree (unless ``--only`` names
others), every worker run for A and for B back to back, in the order A B, B A,
A B, ... so that a burst of load lands on both; each tree's numba cache is
warmed first.  One table per scenario: median A, median B, B/A and whether
the difference is within the noise (a Mann-Whitney rank test of the samples,
p >= 0.05).
"""

import argparse
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import aio_latency
import alltoall
import arrays
import batches
import bridge
import coldstart
import contenders
import echo
import fanout
import harness
import jit
import recovery
from harness import fmt_size, fmt_val, median

_ALL = (echo, fanout, alltoall, arrays, batches, jit, bridge, aio_latency, recovery, coldstart)
SCENARIOS = {m.NAME: m for m in _ALL}
GROUPS = {"messages": ["echo", "fanout", "alltoall"], "all": list(SCENARIOS)}
DEFAULT = GROUPS["messages"]
#: The targets of issue 9: (scenario, size, variant, peer, ratio, text[, our contender]);
#: peer None: the best of the live peers (neither ours nor a reference).
TARGETS = [
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
#: p below this: the difference is more than the noise (about 1 cell in 20 by chance).
ALPHA = 0.05


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="one round, fewer messages: a smoke run")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"comma-separated scenarios ({', '.join(SCENARIOS)}), groups ({', '.join(GROUPS)}) "
        f"and/or contenders ({', '.join(contenders.all_names())})",
    )
    p.add_argument(
        "--ab",
        nargs=2,
        type=Path,
        metavar=("TREE_A", "TREE_B"),
        help="A/B: the same scenarios against two pysyncq trees, interleaved",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds (each scenario's own: 3 for messages, 5 for arrays; rounded up to even "
        "with --ab; 1 with --quick)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply messages per sample (times 0.25, or 0.1 for arrays, with --quick)",
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds per worker (300; 120 quick)"
    )
    p.add_argument("--out", type=Path, default=harness.RESULTS, help="folder for the summaries")
    p.add_argument("--no-save", action="store_true", help="do not write the summary")
    p.add_argument(
        "--install-optional",
        action="store_true",
        help="pip install the optional peers and pysyncq 0.0.1 into benchmarks/.peers first",
    )
    for m in SCENARIOS.values():
        m.options(p.add_argument_group(m.NAME))
    o = p.parse_args(argv)
    o.timeout = o.timeout or (120 if o.quick else 300)
    o.scale_of = lambda name: o.scale * (SCENARIOS[name].QUICK_SCALE if o.quick else 1)
    return o


def rounds_of(mod, opts):
    if opts.rounds:
        return opts.rounds
    if opts.quick:
        return 1
    return mod.ROUNDS + (mod.ROUNDS % 2 if opts.ab else 0)


def select(only):
    names = [x.strip() for arg in only for x in arg.split(",") if x.strip()]
    known = contenders.all_names()
    unknown = [n for n in names if n not in SCENARIOS and n not in GROUPS and n not in known]
    if unknown:
        sys.exit(
            f"--only: unknown {unknown}; choose from {list(SCENARIOS)}, {list(GROUPS)} and {known}"
        )
    benches = []
    for n in names:
        for b in GROUPS.get(n, [n] if n in SCENARIOS else []):
            if b not in benches:
                benches.append(b)
    return benches or DEFAULT, [n for n in names if n in known]


# -- Which contenders run, where ---------------------------------------------------------


class Sides:
    """The tree(s) under test: one (this checkout), or A and B."""

    def __init__(self, opts):
        if opts.ab:
            self.trees = {"A": opts.ab[0].resolve(), "B": opts.ab[1].resolve()}
        else:
            self.trees = {"": harness.REPO}
        for side, t in self.trees.items():
            if not harness.is_tree(t):
                sys.exit(f"{side or 'tree'} {t}: no pysyncq/ package there")
        self.names = list(self.trees)
        self._probes = {}

    def order(self, rnd):
        """A, B on even rounds, B, A on odd ones: A B B A A B ..."""
        return self.names if rnd % 2 == 0 else self.names[::-1]

    def env(self, cls, side):
        return harness.worker_env(cls.pysyncq, self.trees[side])

    def probe(self, kind, side, modules):
        key = (kind if kind == "0.0.1" else "tree", side if kind != "0.0.1" else "")
        if key not in self._probes:
            env = harness.worker_env(kind, self.trees[side])
            self._probes[key] = harness.probe(env, modules)
        return self._probes[key]

    def why_not(self, cls, side, modules):
        """None if ``cls`` can run with tree ``side``, else why not."""
        if cls.pysyncq == "0.0.1":
            try:
                harness.ensure_pysyncq001()
            except Exception as e:  # noqa: BLE001 - report it, keep the others
                return f"cannot install pysyncq 0.0.1: {e}"
        info = self.probe(cls.pysyncq, side, modules)
        root = harness.PQ001 if cls.pysyncq == "0.0.1" else self.trees[side]
        if cls.pysyncq and not harness.imports_from(info, root):
            return f"import pysyncq resolved to {info.get('pysyncq_file')}, not {root}"
        for m in cls.requires:
            if info["modules"].get(m):
                return f"not importable ({info['modules'][m]}); try run.py --install-optional"
        return None


def contenders_for(mod, names, sides, opts, skipped):
    """The classes of ``mod``'s role that run: those ``--only`` names (if it
    names any of this role), or with ``--ab`` those that import the tree, or all."""
    role = [c for c in contenders.for_role(mod.ROLE) if mod.accepts(c)]
    mine = [c for c in role if c.name in names]
    if not mine:
        mine = [c for c in role if c.pysyncq == "tree"] if opts.ab else role
    modules = sorted({m for c in contenders._REGISTRY for m in c.requires})
    ok = []
    for c in mine:
        why = next((w for s in sides.names if (w := sides.why_not(c, s, modules))), None)
        if why:
            skipped[f"{mod.NAME}/{c.name}"] = why
        else:
            ok.append(c)
    return ok


# -- Running -------------------------------------------------------------------------------


class Pool:
    """Samples pooled over rounds: ``cells[scenario][(variant, size)][contender][side]``."""

    def __init__(self):
        self.cells = {}
        self.notes, self.failures, self.envs = [], [], {}
        self.skipped = {}
        self.failed = set()  # (scenario, contender, side) whose worker failed

    def add(self, mod, label, name, side, r):
        where = f"{mod.NAME}/{label or '-'}/{name}{'/' + side if side else ''}"
        self.envs.setdefault(side, r.get("env"))
        if r.get("stuck_children"):
            self.notes.append(f"{where}: children had to be terminated: {r['stuck_children']}")
        left = (r.get("leftovers") or []) + (r.get("leftovers_removed_by_worker") or [])
        if left:
            self.notes.append(f"{where}: shared memory left behind (removed): {left}")
        by_cell = self.cells.setdefault(mod.NAME, {})
        for c in r.get("cells", []):
            key = (c.get("variant") or label, c.get("size"))
            x = by_cell.setdefault(key, {}).setdefault(name, {}).setdefault(side, {"samples": []})
            for k in ("per_sample", "unit", "higher_is_better"):
                if k in c:
                    x.setdefault(k, c[k])
            if "error" in c:
                x["error"] = c["error"]
                self.failures.append(f"{where}/{fmt_size(key[1])}: {c['error']}")
            if "skipped" in c:
                x["skipped"] = c["skipped"]
                self.notes.append(f"{where}/{key[0]}: skipped: {c['skipped']}")
            x["samples"] += c.get("samples", [])
            if c.get("longest_us", 0) > 100_000:
                took = c["longest_us"] / 1e3
                self.notes.append(f"{where}/{fmt_size(key[1])}: one round trip took {took:.0f} ms")

    def fail(self, mod, name, side, err):
        self.failures.append(err)
        self.failed.add((mod.NAME, name, side))

    def spread_notes(self):
        """Cells whose samples spread beyond half or twice their median."""
        notes = []
        for bench, cells in self.cells.items():
            for (variant, size), by_c in cells.items():
                for name, by_side in by_c.items():
                    for side, x in by_side.items():
                        xs = x["samples"]
                        med = median(xs) if xs else 0
                        if len(xs) > 100:  # a distribution (latencies), not repeated runs
                            continue
                        if med and len(xs) > 1 and (max(xs) / med > 2 or min(xs) / med < 0.5):
                            where = "/".join(w for w in (bench, variant, name, side) if w)
                            notes.append(
                                f"{where}/{fmt_size(size)}: samples spread widely "
                                f"({min(xs):.4g} – {max(xs):.4g}, median {med:.4g})"
                            )
        return notes


def run_all(benches, chosen, sides, opts, pool):
    for bench in benches:
        mod = SCENARIOS[bench]
        mine = chosen[bench]
        if not mine:
            continue
        n = rounds_of(mod, opts)
        for label, jargs in mod.jobs(opts):
            dead = set()  # (contender, side) that failed or cannot run: not tried again
            for rnd in range(n):
                k = rnd % len(mine)
                for cls in mine[k:] + mine[:k]:
                    for side in sides.order(rnd):
                        if (cls.name, side) in dead:
                            continue
                        what = f"{bench}{' ' + label if label else ''} round {rnd + 1}/{n}"
                        print(f"[{what}] {cls.name}{' ' + side if side else ''}", file=sys.stderr)
                        r, err = harness.run_worker(
                            harness.HERE / f"{bench}.py",
                            cls.name,
                            [*jargs, *mod.worker_argv(opts, cls)],
                            timeout=opts.timeout,
                            env=sides.env(cls, side),
                        )
                        got = (r or {}).get("env", {}).get("pysyncq_file")
                        if (
                            not err
                            and cls.pysyncq == "tree"
                            and not harness.imports_from({"pysyncq_file": got}, sides.trees[side])
                        ):
                            err = f"{cls.name}: imported {got}, not {sides.trees[side]}"
                        if err:
                            print("\n".join(err.splitlines()[:2]), file=sys.stderr)
                            pool.fail(mod, cls.name, side, err)
                            dead.add((cls.name, side))
                        elif r.get("skipped"):
                            pool.skipped[f"{bench}/{cls.name}{'/' + side if side else ''}"] = r[
                                "skipped"
                            ]
                            dead.add((cls.name, side))
                        else:
                            pool.add(mod, label, cls.name, side, r)


# -- Tables ----------------------------------------------------------------------------------


def ordered(mod, cells):
    keys = list(cells)
    keys = mod.rows(keys) if hasattr(mod, "rows") else keys
    return {k: cells[k] for k in keys}


def unit_of(mod, x):
    return x.get("unit") or mod.UNIT


def higher_of(mod, x):
    h = x.get("higher_is_better")
    return mod.HIGHER_IS_BETTER if h is None and "higher_is_better" not in x else h


def flat(by_c, side):
    """``{contender: pooled}`` for one side."""
    return {n: s[side] for n, s in by_c.items() if side in s}


def generic_table(mod, cells, names, side, rounds, failed):
    """Median and min - max by cell and contender, and pysyncq's advantage over
    each other contender of the cell (columns without content are left out)."""
    mixed = mod.UNIT is None
    sized = any(size is not None for _, size in cells)
    ratios = len(names) > 1
    what = mod.UNIT or "mixed units"
    if not mixed:
        what += f" ({'higher' if mod.HIGHER_IS_BETTER else 'lower'} is better)"
    cols = ["size"] * sized + ["variant", "contender"] + ["unit"] * mixed
    cols += ["median", "min – max"] + ["pysyncq vs it"] * ratios
    align = {"size": "---:", "median": "---:", "min – max": "---:"}
    lines = [
        f"### {mod.NAME}: {what}; median of all samples of {rounds} interleaved round(s)",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join(align.get(c, "---") for c in cols) + "|",
    ]
    for (variant, size), by_c in cells.items():
        got = flat(by_c, side)
        base_name = "pysyncq" if "pysyncq" in got else next(iter(got), None)
        base = got.get(base_name, {}).get("samples")
        for n in names:
            x = got.get(n)
            row = [fmt_size(size)] * sized + [variant, n]
            if x is None or not x["samples"]:
                if x is not None or (mod.NAME, n, side) in failed:
                    word = "skipped" if x and x.get("skipped") else "failed"
                    lines.append("| " + " | ".join(row + [word]) + " |")
                continue
            xs = x["samples"]
            med = median(xs)
            row += [unit_of(mod, x)] * mixed + [
                fmt_val(med),
                f"{fmt_val(min(xs))} – {fmt_val(max(xs))}",
            ]
            if ratios:
                if n == base_name:
                    rel = "(baseline)"
                elif not base or not med or higher_of(mod, x) is None:
                    rel = ""
                else:
                    a = median(base) / med if higher_of(mod, x) else med / median(base)
                    rel = f"{a:.2f}× ({'faster' if a >= 1 else 'slower'})"
                row.append(rel)
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets_table(pool):
    """Issue 9's table: pysyncq, the peer of the target, the ratio, the target."""
    lines = [
        "| scenario | pysyncq | peer | ratio now | target | met |",
        "|---|---:|---|---:|---|---|",
    ]
    for name, size, variant, peer, goal, text, *who in TARGETS:
        ours_c = who[0] if who else "pysyncq"
        mod = SCENARIOS[name]
        for (label, s), by_c in pool.cells.get(name, {}).items():
            if s != size or (variant and label != variant):
                continue
            meds = {c: median(x["samples"]) for c, x in flat(by_c, "").items() if x["samples"]}
            if ours_c not in meds:
                continue
            if peer is None:
                live = {c: v for c, v in meds.items() if _is_peer(mod, c)}
                if not live:
                    continue
                best = (max if mod.HIGHER_IS_BETTER else min)(live, key=live.get)
            else:
                best = peer
            if best not in meds:
                continue
            ours, theirs = meds[ours_c], meds[best]
            # The ratio in the target's own terms: latency pysyncq / peer
            # (lower is better), throughput pysyncq / peer (higher is better).
            ratio = ours / theirs
            met = ratio >= goal if mod.HIGHER_IS_BETTER else ratio <= goal
            what = f"{name} {fmt_size(size)} {label}" + (f", {ours_c}" if who else "")
            lines.append(
                f"| {what} ({mod.UNIT}) | {fmt_val(ours)} | {best} {fmt_val(theirs)} | "
                f"{ratio:.2f}× | {text} | {'yes' if met else 'no'} |"
            )
    return "\n".join(lines) if len(lines) > 2 else None


def _is_peer(mod, name):
    c = contenders.get(mod.ROLE, name)
    return not c.ours and not c.reference


def verdict(mod, x_a, x_b):
    """``(B/A, p, verdict)`` of one cell."""
    a, b = x_a.get("samples") or [], x_b.get("samples") or []
    if not a or not b:
        if x_a.get("skipped") or x_b.get("skipped"):
            return float("nan"), float("nan"), "skipped"
        return float("nan"), float("nan"), "failed" if x_a.get("error") or x_b.get("error") else "-"
    ratio = median(b) / median(a) if median(a) else float("nan")
    p = harness.rank_test(a, b)
    higher = higher_of(mod, x_a)
    if 2 / math.comb(len(a) + len(b), len(a)) >= ALPHA:
        word = "too few"  # no order of so few samples could reach p < ALPHA
    elif p >= ALPHA or p != p:
        word = "noise"
    elif higher is None:
        word = "differs"
    else:
        word = "B faster" if (ratio > 1) == bool(higher) else "B slower"
    return ratio, p, word


def ab_table(mod, cells, names, rounds):
    lines = [
        f"### {mod.NAME}: {mod.UNIT or 'mixed units'}"
        + (f", {'higher' if mod.HIGHER_IS_BETTER else 'lower'} is better" if mod.UNIT else "")
        + f"; {rounds} round(s), A and B interleaved",
        "",
        "| size | variant | contender | A median | A min – max | B median | B min – max "
        "| B/A | p | verdict |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    sized = any(size is not None for _, size in cells)
    if not sized:
        lines[2], lines[3] = lines[2][len("| size ") :], lines[3][len("|---:") :]
    counts = {}
    for (variant, size), by_c in cells.items():
        for n in names:
            if n not in by_c:
                continue
            x_a, x_b = by_c[n].get("A", {}), by_c[n].get("B", {})
            ratio, p, word = verdict(mod, x_a, x_b)
            counts[word] = counts.get(word, 0) + 1

            def rng(x):
                xs = x.get("samples")
                if not xs:
                    return "–", ""
                return fmt_val(median(xs)), f"{fmt_val(min(xs))} – {fmt_val(max(xs))}"

            (ma, ra), (mb, rb) = rng(x_a), rng(x_b)
            lines.append(
                (f"| {fmt_size(size)} " if sized else "")
                + f"| {variant} | {n} | {ma} | {ra} | {mb} | {rb} | "
                f"{'' if ratio != ratio else f'{ratio:.3f}'} | {'' if p != p else f'{p:.2f}'} "
                f"| {word} |"
            )
    return "\n".join(lines), counts


# -- Summaries -------------------------------------------------------------------------------


def summary_cells(sides, ab):
    out = []
    for bench, cells in POOL.cells.items():
        mod = SCENARIOS[bench]
        for (variant, size), by_c in ordered(mod, cells).items():
            for name, by_side in by_c.items():
                any_x = next(iter(by_side.values()))
                row = {"scenario": bench, "variant": variant, "size": size, "contender": name}
                row.update(unit=unit_of(mod, any_x), higher_is_better=higher_of(mod, any_x))
                if "per_sample" in any_x:
                    row["per_sample"] = any_x["per_sample"]
                for side in sides.names:
                    x = by_side.get(side, {})
                    st = harness.stats(x["samples"]) if x.get("samples") else {}
                    if x.get("error"):
                        st["error"] = x["error"]
                    if x.get("skipped"):
                        st["skipped"] = x["skipped"]
                    if ab:
                        row[side] = _rounded(st)
                    else:
                        row.update(_rounded(st))
                if ab:
                    ratio, p, word = verdict(mod, by_side.get("A", {}), by_side.get("B", {}))
                    row.update(ratio=_r(ratio), p=_r(p), verdict=word)
                out.append(row)
    return out


def _r(x):
    """Two decimals (the tables show fewer), four significant digits below 1."""
    return None if x != x else round(x, 2) if abs(x) >= 1 else float(f"{x:.4g}")


def _rounded(st):
    return {k: (_r(v) if isinstance(v, float) else v) for k, v in st.items()}


POOL = Pool()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = parse_args(argv)
    benches, names = select(opts.only)
    if opts.install_optional:
        harness.install_optional(contenders.pip_packages())
    t_start = time.perf_counter()
    sides = Sides(opts)
    load_before = os.getloadavg()
    skipped = POOL.skipped
    chosen = {b: contenders_for(SCENARIOS[b], names, sides, opts, skipped) for b in benches}
    for c, why in skipped.items():
        print(f"skipping {c}: {why}", file=sys.stderr)
    warmed = {}
    if any(c.pysyncq == "tree" for cs in chosen.values() for c in cs):
        for side, tree in sides.trees.items():
            print(f"warming numba's cache of {tree} ...", file=sys.stderr)
            t0 = time.perf_counter()
            line = harness.warm(tree)
            warmed[side] = round(time.perf_counter() - t0, 1)
            print(f"  {line}", file=sys.stderr)
    print(
        "contenders: "
        + "; ".join(f"{b}: {', '.join(c.name for c in cs)}" for b, cs in chosen.items())
        + f"; load average {load_before[0]:.2f}",
        file=sys.stderr,
    )

    run_all(benches, chosen, sides, opts, POOL)

    elapsed = time.perf_counter() - t_start
    load_after = os.getloadavg()
    out = []
    m = harness.machine()
    v = m["versions"]
    trees = {s: harness.git_state(t) for s, t in sides.trees.items()}
    head = (
        f"python {v['python']}, numba {v['numba']}, numpy {v['numpy']}, {m['cpu_count']} CPUs, "
        f"load average {load_before[0]:.2f} → {load_after[0]:.2f}; {elapsed:.0f} s in all"
    )
    for s, g in trees.items():
        commit = (g["commit"] or "no git")[:9] + (" (modified)" if g["dirty"] else "")
        head += f"\n{s + ' = ' if s else 'tree '}{g['tree']} at {commit}"
    out.append(head + "\n")
    counts = {}
    if opts.ab:
        for b in benches:
            mod = SCENARIOS[b]
            if b not in POOL.cells:
                continue
            t, c = ab_table(
                mod, ordered(mod, POOL.cells[b]), [x.name for x in chosen[b]], rounds_of(mod, opts)
            )
            out.append(t + "\n")
            for k, n in c.items():
                counts[k] = counts.get(k, 0) + n
        total = sum(counts.values())
        out.append(
            f"{total} cells: "
            + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            + f".  'noise': the rank test finds no difference (p ≥ {ALPHA}); at that level "
            "about 1 cell in 20 is flagged by chance alone: rerun a flagged cell before "
            "believing it.  'too few': too few samples a side for the test to find "
            "anything (more rounds).\n"
        )
    else:
        t = targets_table(POOL)
        if t:
            out.append("### Issue 9 targets (ratio = pysyncq / peer, same run)\n\n" + t + "\n")
        for b in benches:
            mod = SCENARIOS[b]
            if b not in POOL.cells:
                continue
            cells = ordered(mod, POOL.cells[b])
            cnames = [c.name for c in chosen[b]]
            n = rounds_of(mod, opts)
            if hasattr(mod, "table"):
                head = f"### {mod.NAME}: {mod.UNIT or 'mixed units'} (median of {n} round(s))\n\n"
                t = mod.table({k: flat(v, "") for k, v in cells.items()}, cnames)
            else:
                head, t = "", generic_table(mod, cells, cnames, "", n, POOL.failed)
            out.append(head + t + "\n")
        POOL.notes += POOL.spread_notes()
    if skipped:
        out.append("Skipped: " + "; ".join(f"{c} ({why})" for c, why in skipped.items()) + "\n")
    ours = [n for n in harness.shm_entries() if n.startswith(harness.SHM_PREFIX)]
    if ours:
        POOL.notes.append(f"/dev/shm still holds benchmark entries: {ours}")
    if POOL.failures:
        POOL.notes += [f"FAILED: {f.splitlines()[0]}" for f in POOL.failures]
    if POOL.notes:
        out.append("Notes:\n" + "\n".join(f"- {n}" for n in POOL.notes) + "\n")
    now = datetime.now()
    doc = {
        "kind": "ab" if opts.ab else "run",
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/run.py", *argv]),
        "options": {
            k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if k == "ab" and v else v)
            for k, v in vars(opts).items()
            if k != "scale_of"
        },
        "rounds": {b: rounds_of(SCENARIOS[b], opts) for b in benches},
        **m,
        "trees": {(k or "tree"): v for k, v in trees.items()},
        "worker_env": {(k or "tree"): v for k, v in POOL.envs.items()},
        "warm_up_s": {(k or "tree"): v for k, v in warmed.items()},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "elapsed_s": round(elapsed, 1),
        "contenders": {b: [c.name for c in cs] for b, cs in chosen.items()},
        "skipped": skipped,
        "notes": POOL.notes,
        "cells": summary_cells(sides, bool(opts.ab)),
    }
    text = "\n".join(out)
    print("\n" + text)
    if not opts.no_save:
        prefix = "-".join(b for b in benches) if benches != DEFAULT else ""
        prefix = ("ab-" + prefix if prefix else "ab") if opts.ab else prefix
        path = harness.write_summary(doc, harness.result_path(opts.out, prefix, now), text)
        rel = path.relative_to(harness.REPO) if path.is_relative_to(harness.REPO) else path
        print(f"summary: {rel} (and the tables above: {rel.with_suffix('.txt')})")
    return 1 if POOL.failures else 0


if __name__ == "__main__":
    sys.exit(main())
