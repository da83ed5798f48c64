"""Cold start and exit of a process that uses pysyncq (PROFILE.md section 5).

    python benchmarks/profile_coldstart.py [--repeat 5] [--cold N] [--ab /work/main]
                                           [--json out.json]

Every sample runs in a fresh *driver* interpreter that imports the pysyncq of
one tree (this checkout, and with ``--ab`` another one, measured in the same
run, interleaved, alternating which goes first).

* ``fresh``: the driver alone: ``import numba``, ``import pysyncq``, its first
  handle (create, open, append, pop, close), how many kernels it loaded,
  whether numba's compiler setup ran (``numba.np.arraymath`` imported), and
  how long the interpreter took to exit after its last statement.
* ``spawn`` / ``forkserver`` / ``fork``: the driver creates a queue and starts
  one child handed the handle; the child opens, appends one message and
  returns.  ``first_message``: from ``Process.start()`` to the message at the
  driver (the forkserver is started, and has served one child, beforehand; in
  CPython 3.11-3.13 it does not in fact preload ``__main__``, so its children
  import numba and pysyncq themselves, as spawned ones do); its parts as the child
  stamped them (interpreter up, ``import numba``, ``import pysyncq``, handle
  unpickled, opened); ``exit``: from the child's target returning to
  ``join()`` returning.  ``spawn-close``: the child closes the handle first.
  ``parent_create``: the driver's ``PySyncQ()`` and ``open`` before the start
  (a process that forks loads every kernel at its first fork, inside
  ``start()``: counted in ``first_message``).
* ``--cold N``: N spawned children per tree given their own empty
  ``NUMBA_CACHE_DIR`` (so they compile every kernel); ``--repeat 0`` skips the
  rest.
* Reference rows (this tree): a spawned child with ``PYSYNCQ_FAST_EXIT=0``,
  children that import only numba, or nothing, and one that ends with
  ``os._exit(0)``.

``time.perf_counter`` is CLOCK_MONOTONIC: one clock for every process.
Printed: median (min - max) over the repeats, and the ratio of the medians
(this tree / the other).
"""

import time

T_MAIN = time.perf_counter()  # in a spawned child: right after the interpreter started
import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TREE = os.environ.get("PQ_TREE", str(ROOT))  # which pysyncq a driver and its children use
sys.path.insert(0, TREE)
MODE = os.environ.get("PQ_COLD_MODE", "full")  # what a spawned child imports
T_NUMBA = T_PQ = None
if MODE in ("full", "numba"):
    import numba  # noqa: E402, F401

    T_NUMBA = time.perf_counter()
if MODE == "full":
    import pysyncq  # noqa: E402, F401

    T_PQ = time.perf_counter()


def loaded_kernels():
    from pysyncq import kernels

    return sum(len(getattr(d, "overloads", ())) for d in vars(kernels).values())


# -- Driver side (a fresh interpreter per sample) ------------------------------


def fresh():
    """The driver alone: its imports, its first handle, then exit."""
    from pysyncq import PySyncQ

    t0 = time.perf_counter()
    q = PySyncQ(size=1 << 16)
    t1 = time.perf_counter()
    q.open("a", filtself=False)
    q.append("t", "x")
    m = q.pop()
    q.close()
    t2 = time.perf_counter()
    assert m == ("a", "t", "x"), m
    return {
        "import_numba": T_NUMBA - T_MAIN,
        "import_pysyncq": T_PQ - T_NUMBA,
        "create": t1 - t0,
        "open_append_pop_close": t2 - t1,
        "to_first_message": t2 - T_MAIN,
        "kernels_loaded": loaded_kernels(),
        "numba_setup_ran": int("numba.np.arraymath" in sys.modules),
    }


def child(q, variant, t_start, endv):
    t_attached = time.perf_counter()  # the handle was unpickled before this
    if q is not None:
        q.open("child", reader=False)
        t_open = time.perf_counter()
        stamps = dict(
            start=t_start,
            main=T_MAIN,
            numba=T_NUMBA,
            pysyncq=T_PQ,
            attached=t_attached,
            opened=t_open,
            kernels=loaded_kernels(),
            setup=int("numba.np.arraymath" in sys.modules),
        )
        q.append("hello", json.dumps(stamps))
        if variant == "close":
            q.close()
    endv.value = time.perf_counter()
    if variant == "_exit":
        os._exit(0)


def noop():
    pass


def one_child(method, variant):
    """One child started with ``method``: its timings."""
    ctx = mp.get_context(method)
    if method == "forkserver":  # a server that has imported __main__ and is serving
        warm = ctx.Process(target=noop)
        warm.start()
        warm.join(300)
    q = None
    t0 = time.perf_counter()
    if MODE == "full":
        from pysyncq import PySyncQ

        q = PySyncQ(size=1 << 16)
        q.open("parent")
    t_created = time.perf_counter() - t0
    try:
        endv = ctx.Value("d", 0.0, lock=False)
        t_start = time.perf_counter()
        p = ctx.Process(target=child, args=(q, variant, t_start, endv))
        p.start()
        row = {}
        if q is not None:
            m = q.pop(block=True, timer=300)
            t_first = time.perf_counter()
            st = json.loads(m[2])
            # A spawned child imports __main__ itself; so does a forkserver
            # child (CPython 3.11-3.13's server never receives the main path
            # it would preload); a forked one has the driver's stamps.
            spawned = st["main"] > t_start
            row = {
                "parent_create": t_created,
                "first_message": t_first - t_start,
                "to_main": st["main"] - t_start if spawned else 0.0,
                "import_numba": st["numba"] - st["main"] if spawned else 0.0,
                "import_pysyncq": st["pysyncq"] - st["numba"] if spawned else 0.0,
                "attach": st["attached"] - (st["pysyncq"] if spawned else t_start),
                "open": st["opened"] - st["attached"],
                # the stamps' JSON, the append, and the driver waking up
                "append_and_wake": t_first - st["opened"],
                "kernels_loaded": st["kernels"],
                "numba_setup_ran": st["setup"],
            }
        p.join(300)
        t_joined = time.perf_counter()
        if p.exitcode != 0:
            p.kill()
            raise RuntimeError(f"child ended with {p.exitcode}")
        row["exit"] = t_joined - endv.value
        row["start_to_joined"] = t_joined - t_start
        return row
    finally:
        if q is not None:
            q.close()


def driver(scenario):
    if scenario == "fresh":
        row = fresh()
    else:
        method, _, variant = scenario.partition("-")
        row = one_child(method, variant or "return")
    print("RESULT " + json.dumps(row), flush=True)
    return time.perf_counter()


# -- Orchestration ------------------------------------------------------------


def run_driver(tree, scenario, mode="full", cache_dir=None, child_cache_dir=None, **extra):
    env = dict(os.environ, PQ_TREE=str(tree), PQ_COLD_MODE=mode, **extra)
    env.pop("PYTHONPATH", None)
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
    if child_cache_dir:
        env["PQ_CHILD_CACHE"] = child_cache_dir
    proc = subprocess.Popen(
        [sys.executable, __file__, "--driver", scenario],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    row = None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            row = json.loads(line[7:])
        elif line.startswith("END "):
            t_end = float(line[4:])
    _, err = proc.communicate(timeout=600)
    t_exit = time.perf_counter()
    if proc.returncode or row is None:
        raise RuntimeError(f"{scenario} in {tree} failed ({proc.returncode}):\n{err}")
    if scenario == "fresh":
        row["exit"] = t_exit - t_end
    return row


def fmt(values, unit):
    if unit == "n":
        return f"{statistics.median(values):.0f}"
    v = [x * 1e3 for x in values]
    return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"


def report(title, rows_by_tree, keys, labels):
    print(f"\n{title}")
    width = max(len(k) for k in keys) + 2
    head = f"  {'':{width}s}" + "".join(f"{lab:>22s}" for lab in labels)
    if len(labels) == 2:
        head += f"{'ratio':>8s}"
    print(head + "   (ms: median (min-max))")
    for k in keys:
        unit = "n" if k in ("kernels_loaded", "numba_setup_ran") else "ms"
        cols = [rows_by_tree[lab] for lab in labels]
        if any(k not in r[0] for r in cols):
            continue
        line = f"  {k:{width}s}" + "".join(f"{fmt([r[k] for r in c], unit):>22s}" for c in cols)
        if len(labels) == 2 and unit == "ms":
            a, b = (statistics.median(r[k] for r in c) for c in cols)
            line += f"{a / b:>8.2f}" if b > 0 else f"{'-':>8s}"
        print(line)


CHILD_KEYS = [
    "parent_create",
    "first_message",
    "to_main",
    "import_numba",
    "import_pysyncq",
    "attach",
    "open",
    "append_and_wake",
    "exit",
    "start_to_joined",
    "kernels_loaded",
    "numba_setup_ran",
]
FRESH_KEYS = [
    "import_numba",
    "import_pysyncq",
    "create",
    "open_append_pop_close",
    "to_first_message",
    "exit",
    "kernels_loaded",
    "numba_setup_ran",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--cold", type=int, default=0, metavar="N", help="N children per tree with an empty cache"
    )
    ap.add_argument("--ab", type=Path, help="another pysyncq checkout to measure alongside")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--driver", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.driver:
        if os.environ.get("PQ_CHILD_CACHE"):  # spawned children inherit it
            os.environ["NUMBA_CACHE_DIR"] = os.environ["PQ_CHILD_CACHE"]
        print(f"END {driver(a.driver)}", flush=True)
        return
    trees = {"this": ROOT}
    if a.ab:
        trees[a.ab.name or "other"] = a.ab.resolve()
    labels = list(trees)
    doc = {"load_before": os.getloadavg(), "trees": {k: str(v) for k, v in trees.items()}}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # One untimed pass per tree, so that both caches are warm.
    for tree in trees.values():
        run_driver(tree, "fresh")
    scenarios = ["fresh", "spawn", "spawn-close", "forkserver", "fork"] if a.repeat else []
    rows = {s: {lab: [] for lab in labels} for s in scenarios}
    refs = {s: [] for s in ("spawn/no fast_exit", "spawn/numba only", "spawn/bare", "spawn/_exit")}
    t0 = time.perf_counter()
    for r in range(a.repeat):
        for s in scenarios:
            order = labels if r % 2 == 0 else labels[::-1]
            for lab in order:
                rows[s][lab].append(run_driver(trees[lab], s))
        refs["spawn/no fast_exit"].append(run_driver(ROOT, "spawn", PYSYNCQ_FAST_EXIT="0"))
        refs["spawn/numba only"].append(run_driver(ROOT, "spawn", mode="numba"))
        refs["spawn/bare"].append(run_driver(ROOT, "spawn", mode="bare"))
        refs["spawn/_exit"].append(run_driver(ROOT, "spawn-_exit"))
    doc["rows"], doc["refs"] = rows, refs
    for s in scenarios:
        keys = FRESH_KEYS if s == "fresh" else CHILD_KEYS
        what = "fresh interpreter, first handle" if s == "fresh" else f"{s} child"
        report(f"{what} (warm cache, {a.repeat} repeats)", rows[s], keys, labels)
    if a.repeat:
        report("reference children (this tree)", refs, ["exit", "start_to_joined"], list(refs))
    if a.cold:
        cold = {lab: [] for lab in labels}
        for r in range(a.cold):
            for lab in labels if r % 2 == 0 else labels[::-1]:
                tmp = tempfile.mkdtemp(prefix="pq-numba-cache-")
                try:
                    cold[lab].append(run_driver(trees[lab], "spawn", child_cache_dir=tmp))
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        doc["cold"] = cold
        title = f"spawn child, cold cache (its own empty NUMBA_CACHE_DIR, {a.cold} repeats)"
        report(title, cold, CHILD_KEYS, labels)
    doc["seconds"] = time.perf_counter() - t0
    doc["load_after"] = os.getloadavg()
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
