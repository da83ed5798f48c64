"""Cold start and exit of a process that uses pysyncq (PROFILE.md section 5).

    python benchmarks/coldstart.py [--rounds 5] [--coldstart-cold N] [--ab OLD NEW]

(the same as ``python benchmarks/run.py --only coldstart``).  Every sample
runs in a fresh *driver* interpreter (``coldstart.py --driver SCENARIO``,
started by the worker with the worker's own ``PYTHONPATH``: the tree under
test first); one sample of each per round:

* ``fresh``: the driver alone: ``import numba``, ``import pysyncq``, its first
  handle (create, open, append, pop, close), how many kernels it loaded,
  whether numba's compiler setup ran (``numba.np.arraymath`` imported), and
  how long the interpreter took to exit after its last statement.
* ``spawn`` / ``forkserver`` / ``fork``: the driver creates a queue and starts
  one child handed the handle; the child opens, appends one message and
  returns.  ``first_message``: from ``Process.start()`` to the message at the
  driver (the forkserver is started, and has served one child, beforehand; in
  CPython 3.11-3.13 it does not in fact preload ``__main__``, so its children
  import numba and pysyncq themselves, as spawned ones do); its parts as the
  child stamped them (interpreter up, ``import numba``, ``import pysyncq``,
  handle unpickled, opened); ``exit``: from the child's target returning to
  ``join()`` returning.  ``spawn-close``: the child closes the handle first.
  ``parent_create``: the driver's ``PySyncQ()`` and ``open`` before the start
  (a process that forks loads every kernel at its first fork, inside
  ``start()``: counted in ``first_message``).
* References: a spawned child with ``PYSYNCQ_FAST_EXIT=0``, children that
  import only numba, or nothing, and one that ends with ``os._exit(0)``.
* ``--coldstart-cold N``: N spawned children a round given their own empty
  ``NUMBA_CACHE_DIR`` (so that they compile the core kernel family: about
  10 s each on 2 cores).

``time.perf_counter`` is CLOCK_MONOTONIC: one clock for every process.
Times are in ms.
"""

import time

T_MAIN = time.perf_counter()  # in a spawned child: right after the interpreter started
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

MODE = os.environ.get("PQ_COLD_MODE", "full")  # what a driver or spawned child imports
T_NUMBA = T_PQ = None
if __name__ in ("__main__", "__mp_main__"):  # a worker, a driver, or a child of one
    if MODE in ("full", "numba"):
        import numba  # noqa: F401

        T_NUMBA = time.perf_counter()
    if MODE == "full":
        import pysyncq  # noqa: F401

        T_PQ = time.perf_counter()

# A driver and its children import nothing more (their imports are what is timed).
DRIVER = __name__ == "__mp_main__" or sys.argv[1:2] == ["--driver"]
if not DRIVER:
    import contenders
    import harness

NAME = "coldstart"
ROLE = None if DRIVER else contenders.Itself
UNIT, HIGHER_IS_BETTER = None, False  # ms, and counts
ROUNDS, QUICK_SCALE = 5, 1.0
SCENARIOS = ["fresh", "spawn", "spawn-close", "forkserver", "fork"]
REFERENCES = {  # label: (scenario, mode, extra environment)
    "spawn, PYSYNCQ_FAST_EXIT=0": ("spawn", "full", {"PYSYNCQ_FAST_EXIT": "0"}),
    "spawn, numba only": ("spawn", "numba", {}),
    "spawn, bare python": ("spawn", "bare", {}),
    "spawn, os._exit": ("spawn-_exit", "full", {}),
}
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
COUNTS = ("kernels_loaded", "numba_setup_ran")


def options(p):
    p.add_argument(
        "--coldstart-cold",
        type=int,
        default=0,
        metavar="N",
        help="coldstart: N spawned children a round with an empty numba cache",
    )


def accepts(cls):
    return True


def jobs(opts):
    return [("", [])]


def worker_argv(opts, cls):
    return ["--cold", opts.coldstart_cold]


def worker_options(p):
    p.add_argument("--cold", type=int, default=0)


# -- Driver side (a fresh interpreter per sample) ------------------------------------------


def loaded_kernels():
    from pysyncq import kernels

    return sum(len(getattr(d, "overloads", ())) for d in vars(kernels).values())


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
    if os.environ.get("PQ_CHILD_CACHE"):  # spawned children inherit it
        os.environ["NUMBA_CACHE_DIR"] = os.environ["PQ_CHILD_CACHE"]
    if scenario == "fresh":
        row = fresh()
    else:
        method, _, variant = scenario.partition("-")
        row = one_child(method, variant or "return")
    print("RESULT " + json.dumps(row), flush=True)
    print(f"END {time.perf_counter()}", flush=True)


# -- The worker: drivers, one sample each -----------------------------------------------------


def run_driver(scenario, mode="full", child_cache_dir=None, **extra):
    env = dict(os.environ, PQ_COLD_MODE=mode, **extra)
    if child_cache_dir:
        env["PQ_CHILD_CACHE"] = child_cache_dir
    proc = subprocess.Popen(
        [sys.executable, __file__, "--driver", scenario],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    row, t_end = None, None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            row = json.loads(line[7:])
        elif line.startswith("END "):
            t_end = float(line[4:])
    _, err = proc.communicate(timeout=600)
    t_exit = time.perf_counter()
    if proc.returncode or row is None:
        raise RuntimeError(f"{scenario} failed ({proc.returncode}):\n{err[-2000:]}")
    if scenario == "fresh":
        row["exit"] = t_exit - t_end
    return row


def _cells(label, row, keys):
    out = []
    for k in keys:
        if k not in row:
            continue
        count = k in COUNTS
        out.append(
            {
                "variant": f"{label}: {k}",
                "size": None,
                "samples": [row[k] if count else row[k] * 1e3],
                "unit": "n" if count else "ms",
                "higher_is_better": None if count else False,
            }
        )
    return out


def work(cls, tag, args):
    cells = []
    for s in SCENARIOS:
        row = run_driver(s)
        cells += _cells(s, row, FRESH_KEYS if s == "fresh" else CHILD_KEYS)
        first = row.get("to_first_message", row.get("first_message", 0))
        contenders.log(
            f"  {s:12s} first message {first * 1e3:6.0f} ms, exit {row['exit'] * 1e3:5.0f} ms"
        )
    for label, (s, mode, extra) in REFERENCES.items():
        cells += _cells(label, run_driver(s, mode, **extra), ["exit", "start_to_joined"])
    for _ in range(args.cold):
        tmp = tempfile.mkdtemp(prefix="pq-numba-cache-")
        try:
            cells += _cells(
                "spawn, cold cache", run_driver("spawn", child_cache_dir=tmp), CHILD_KEYS
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"cells": cells}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--driver"]:
        driver(sys.argv[2])
    else:
        sys.exit(harness.worker_main(sys.modules[__name__]))
