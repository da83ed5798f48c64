"""Cold start and exit of a spawned child (PROFILE.md).

    python benchmarks/profile_coldstart.py [--repeat 5] [--cold]

1. In fresh interpreters: ``import numba``, ``import pysyncq`` and
   ``warm_up()``, with the first call of every kernel ``warm_up`` makes timed
   on its own (loading it from numba's cache, or with ``--cold`` compiling it
   into an empty ``NUMBA_CACHE_DIR``).
2. A spawned child given a queue handle: when it was started, had imported
   numba and pysyncq (its ``__mp_main__`` is this file), had attached (the
   handle unpickled: ``warm_up``), had opened, when its first message reached
   the parent, and how long ``join`` took after its target returned, with
   the target ending normally, after ``q.close()``, with ``os._exit(0)``; and
   the same for a child that imports only numba, and one that imports
   neither.  The same with ``fork``.  ``time.perf_counter`` is
   CLOCK_MONOTONIC, one clock for every process.
"""

import time

T_MAIN = time.perf_counter()  # in a spawned child: right after the interpreter started
import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODE = os.environ.get("PQ_COLD_MODE", "full")  # what a spawned child imports
T_NUMBA = T_PQ = None
if MODE in ("full", "numba"):
    import numba  # noqa: E402, F401

    T_NUMBA = time.perf_counter()
if MODE == "full":
    import pysyncq  # noqa: E402, F401

    T_PQ = time.perf_counter()

_IMPORTS = """
import time, sys, json, os
if os.environ.get("PQ_BLOCK_SCIPY"):
    sys.modules["scipy"] = None
sys.path.insert(0, {root!r})
t0 = time.perf_counter(); import numba; t1 = time.perf_counter()
import pysyncq; from pysyncq import _lifecycle, kernels; t2 = time.perf_counter()
loads = {{}}
for name in dir(kernels) if {wrap} else ():
    d = getattr(kernels, name)
    if hasattr(d, "py_func") and hasattr(d, "signatures"):
        def wrap(d=d, name=name):
            def f(*a, **k):
                s = time.perf_counter(); r = d(*a, **k)
                loads[name] = loads.get(name, 0) + time.perf_counter() - s
                return r
            return f
        setattr(kernels, name, wrap())
t3 = time.perf_counter(); _lifecycle.warm_up(); t4 = time.perf_counter()
print(json.dumps(dict(numba=t1 - t0, pysyncq=t2 - t1, warm_up=t4 - t3, kernels=loads)))
"""


def imports(cold, repeat, block_scipy=False):
    env = dict(os.environ)
    if block_scipy:  # numba's first dispatch imports scipy.linalg when it is there
        env["PQ_BLOCK_SCIPY"] = "1"
    runs = []
    for _ in range(repeat):
        tmp = tempfile.mkdtemp(prefix="pq-numba-cache-") if cold else None
        if cold:
            env["NUMBA_CACHE_DIR"] = tmp
        t = time.perf_counter()
        out = subprocess.run(
            # Compiling resolves the kernels' globals: no timing wrappers then.
            [sys.executable, "-c", _IMPORTS.format(root=str(ROOT), wrap=not cold)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        d = json.loads(out.stdout.strip().splitlines()[-1])
        d["interpreter_total"] = time.perf_counter() - t
        runs.append(d)
    return runs


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
        )
        q.append("hello", json.dumps(stamps))
        if variant == "close":
            q.close()
    endv.value = time.perf_counter()
    if variant == "_exit":
        os._exit(0)


def spawned(method, variant, mode, repeat):
    """Timings of ``repeat`` children: (dict of medians, raw)."""
    from pysyncq import PySyncQ

    os.environ["PQ_COLD_MODE"] = mode
    ctx = mp.get_context(method)
    raw = []
    for _ in range(repeat):
        q = PySyncQ(size=1 << 16, start=method) if mode == "full" else None
        try:
            if q is not None:
                q.open("parent")
            t_start = time.perf_counter()
            endv = ctx.Value("d", 0.0, lock=False)
            p = ctx.Process(target=child, args=(q, variant, t_start, endv))
            p.start()
            row = {}
            if q is not None:
                m = q.pop(block=True, timer=60)
                t_first = time.perf_counter()
                st = json.loads(m[2])
                row = {
                    "to_main": (st["main"] or t_start) - t_start,
                    "import_numba": (st["numba"] or 0) - (st["main"] or 0),
                    "import_pysyncq": (st["pysyncq"] or 0) - (st["numba"] or 0),
                    "attach": st["attached"] - (st["pysyncq"] or st["start"]),
                    "open": st["opened"] - st["attached"],
                    "first_message": t_first - t_start,
                }
            p.join(60)
            t_joined = time.perf_counter()
            if p.is_alive():
                p.kill()
                raise RuntimeError("child did not exit")
            row["exit"] = t_joined - endv.value
            row["start_to_joined"] = t_joined - t_start
            raw.append(row)
        finally:
            if q is not None:
                q.close()
    keys = raw[0].keys()
    return {k: statistics.median(r[k] for r in raw) for k in keys}, raw


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also compile into an empty cache")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    doc = {"load_average": os.getloadavg()}
    print(f"load average {os.getloadavg()[0]:.2f}")
    doc["warm"] = w = imports(False, a.repeat)
    med = lambda k, runs: statistics.median(r[k] for r in runs)  # noqa: E731
    print(
        f"warm cache, fresh interpreter: import numba {med('numba', w) * 1e3:.0f} ms, "
        f"import pysyncq {med('pysyncq', w) * 1e3:.0f} ms, warm_up {med('warm_up', w) * 1e3:.0f} ms"
        f" (interpreter start to exit {med('interpreter_total', w) * 1e3:.0f} ms)"
    )
    doc["warm_no_scipy"] = ns = imports(False, a.repeat, block_scipy=True)
    print(
        f"  the same with scipy made unimportable: import numba {med('numba', ns) * 1e3:.0f} ms, "
        f"warm_up {med('warm_up', ns) * 1e3:.0f} ms"
    )
    names = sorted(w[0]["kernels"], key=lambda k: -w[0]["kernels"][k])
    for k in names:
        ms = statistics.median(r["kernels"].get(k, 0) for r in w) * 1e3
        print(f"    {k:22s} {ms:6.1f} ms")
    print(f"    ({len(names)} entry points)")
    if a.cold:
        doc["cold"] = c = imports(True, 1)
        print(
            f"cold cache: import pysyncq {c[0]['pysyncq'] * 1e3:.0f} ms, warm_up "
            f"{c[0]['warm_up'] * 1e3:.0f} ms"
        )
    doc["children"] = {}
    for method, variant, mode in [
        ("spawn", "return", "full"),
        ("spawn", "close", "full"),
        ("spawn", "_exit", "full"),
        ("spawn", "return", "numba"),
        ("spawn", "return", "bare"),
        ("fork", "return", "full"),
    ]:
        medians, raw = spawned(method, variant, mode, a.repeat)
        doc["children"][f"{method}/{variant}/{mode}"] = raw
        print(
            f"{method:5s} child, imports {mode:5s}, ends by {variant:6s}: "
            + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in medians.items())
        )
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
