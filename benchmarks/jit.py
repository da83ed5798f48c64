"""The queue inside the user's own ``@numba.njit`` code (``pysyncq.jit``):
64 B messages (an array of 8 float64) appended and popped in nopython code,
against the same programs written with the Python API.

    python benchmarks/jit.py [--rounds 3] [--quick]

(the same as ``python benchmarks/run.py --only jit``).  One worker a round
measures, back to back:

1. **one process**: one njit loop that ``append_array``s on one handle and
   ``pop_array``s the message on a second handle of the same queue (a
   reader opened with another sender name), one message per iteration;
   msg/s.
2. **two processes**, 1 writer -> 1 reader, both forked from the worker:
   the writer is the worker, the reader a child that opened its own handle;
   msg/s per reader from just before the first send until the reader had
   the last message (as batches.py times).  Three programs: both sides in
   nopython code (``append_array`` / ``pop_array``); one Python
   ``q.append_array`` / ``q.pop(block=True)`` a message; Python batches
   ``q.extend`` (1000 bodies a call, ``--batch-chunk``; bodies are the 64
   bytes of the array, as ``extend`` takes bytes) / ``q.pop_many(4096)``.
   Every reader checks the count and the last message's first element.
3. **simulation**: an njit function advances a 2-float state (an
   oscillator, ``--jit-inner`` symplectic Euler sub-steps a step, so that
   200,000 steps take about 0.5 - 1 s on a 2-core VM) for 200,000 steps,
   timed without streaming and with an ``append_array`` of the state every
   step, twice: a Python reader (a child) draining with ``pop_many`` as
   the simulation runs, and a reader that drains only once it is over (so
   that no append has anyone to wake).  The queue holds every step: the
   simulation never waits for space.  s, and the ratios streamed / not
   streamed in the table.

The issue's targets are printed beside the figures, never asserted.  The
njit functions here are compiled in each worker (``cache=False``: a cached
caller would keep the pysyncq code it was compiled with, wrong in an A/B
run), before anything is timed, and before the children are forked.
"""

import signal
import sys
import time

import contenders
import harness
import numba
import numpy as np

NAME = "jit"
ROLE = contenders.Itself
UNIT, HIGHER_IS_BETTER = None, True  # msg/s (higher is better) and s (lower)
ROUNDS, QUICK_SCALE = 3, 0.1
SIZE = 64
ELEMS = SIZE // 8
CHUNK = 1000
TIMER = 30.0  # seconds any single wait may take before the sample fails
QUEUE = 4 << 20
COUNTS = {"one": 2_000_000, "nopython": 2_000_000, "python": 200_000, "batches": 1_000_000}
STEPS = 200_000
INNER = 1000

ONE = "1 process: append_array + pop_array (nopython)"
XP_NOPY = "2 processes: nopython append_array / pop_array"
XP_PY = "2 processes: Python append_array / pop(block=True)"
XP_BATCH = "2 processes: Python extend / pop_many"
SIM_OFF = "simulation, not streamed"
SIM_ON = "simulation, append_array every step, reader draining"
SIM_LATER = "simulation, append_array every step, reader drains after"
ROWS = [ONE, XP_NOPY, XP_PY, XP_BATCH, SIM_OFF, SIM_ON, SIM_LATER]

#: (what, value(medians) -> figure or None, unit, goal, higher is better, text)
TARGETS = [
    ("row 1: 1 process, nopython", lambda m: m.get(ONE), "msg/s", 10e6, True, "≥ 10 M msg/s"),
    ("row 2: nopython, per reader", lambda m: m.get(XP_NOPY), "msg/s", 5e6, True, "≥ 5 M msg/s"),
    ("row 2: nopython / Python", lambda m: _ratio(m, XP_NOPY, XP_PY), "×", 10, True, "≥ 10×"),
    ("row 2: nopython / batches", lambda m: _ratio(m, XP_NOPY, XP_BATCH), "×", 3, True, "≥ 3×"),
    (
        "row 3: streamed / not, reader draining",
        lambda m: _ratio(m, SIM_ON, SIM_OFF),
        "×",
        1.5,
        False,
        "≤ 1.5×",
    ),
    (
        "row 3: streamed / not, reader after",
        lambda m: _ratio(m, SIM_LATER, SIM_OFF),
        "×",
        1.5,
        False,
        "≤ 1.5×",
    ),
]


def _ratio(m, a, b):
    return m[a] / m[b] if m.get(a) and m.get(b) else None


def options(p):
    p.add_argument(
        "--jit-steps", type=int, default=STEPS, help=f"jit: simulation steps ({STEPS:,})"
    )
    p.add_argument(
        "--jit-inner", type=int, default=INNER, help=f"jit: sub-steps a simulation step ({INNER})"
    )


def accepts(cls):
    return True


def jobs(opts):
    return [("", [])]


def worker_argv(opts, cls):
    s = opts.scale_of(NAME)
    counts = [max(1000, int(COUNTS[k] * s)) for k in ("one", "nopython", "python", "batches")]
    chunk = getattr(opts, "batch_chunk", CHUNK)
    steps = max(1000, int(opts.jit_steps * s))
    return [
        "--counts",
        ",".join(map(str, counts)),
        "--chunk",
        chunk,
        "--steps",
        steps,
        "--inner",
        opts.jit_inner,
    ]


def worker_options(p):
    p.add_argument("--counts", type=harness.ints, default=list(COUNTS.values()))
    p.add_argument("--chunk", type=int, default=CHUNK)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--inner", type=int, default=INNER)


# -- The nopython programs (compiled in the worker, before any fork) -----------------------

NJIT = {"cache": False, "nogil": True}


def _programs():
    """The njit functions, made after ``import pysyncq`` (the worker's tree)."""
    from pysyncq import jit as pqjit

    OK = pqjit.OK

    @numba.njit(**NJIT)
    def ping_pong(hw, hr, n, timer):
        """Append on ``hw``, pop it on ``hr``, ``n`` times: (done, status)."""
        x = np.zeros(ELEMS)
        out = np.zeros(ELEMS)
        for i in range(n):
            x[0] = i
            st = pqjit.append_array(hw, "state", x, timer)
            if st != OK:
                return i, st
            got = pqjit.pop_array(hr, out, timer)
            if got.status != OK:
                return i, got.status
            if got.count != ELEMS or out[0] != i:
                return i, -1
        return n, OK

    @numba.njit(**NJIT)
    def produce(h, n, timer):
        x = np.zeros(ELEMS)
        for i in range(n):
            x[0] = i
            st = pqjit.append_array(h, "state", x, timer)
            if st != OK:
                return i, st
        return n, OK

    @numba.njit(**NJIT)
    def consume(h, n, timer):
        """Pop ``n`` arrays: (read, status, first element of the last)."""
        out = np.zeros(ELEMS)
        for i in range(n):
            got = pqjit.pop_array(h, out, timer)
            if got.status != OK:
                return i, got.status, out[0]
            if got.count != ELEMS:
                return i, -1, out[0]
        return n, OK, out[0]

    @numba.njit(**NJIT)
    def simulate(h, n, inner, stream, timer):
        """A harmonic oscillator, ``inner`` symplectic Euler sub-steps a step;
        with ``stream``, ``append_array`` of the state (x, v) every step."""
        s = np.zeros(2)
        s[0] = 1.0
        dt = 1e-4
        w2 = 4.0
        for i in range(n):
            x, v = s[0], s[1]
            for _ in range(inner):
                v -= w2 * x * dt
                x += v * dt
            s[0], s[1] = x, v
            if stream:
                st = pqjit.append_array(h, "state", s, timer)
                if st != OK:
                    return i, st, s[0]
        return n, OK, s[0]

    return ping_pong, produce, consume, simulate


# -- The readers (children forked by run_readers; ``out`` last) ------------------------------


def _child():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the worker's unwinding handler


def _nopy_reader(q, n, consume, ready, out):
    from pysyncq import jit as pqjit

    _child()
    with q.open("reader"):
        h = q.jit_handle()
        ready.wait(TIMER)
        got, st, last = consume(h, n, TIMER)
        bad = 0 if (got, st, last) == (n, pqjit.OK, n - 1) else 1
        if bad:
            contenders.log(f"  nopython reader: {got} of {n}, status {st}, last {last}")
        contenders.ArrayContender.report(out, 0, time.perf_counter(), bad)


def _py_reader(q, n, batched, ready, out):
    _child()
    got, last = 0, None
    with q.open("reader"):
        ready.wait(TIMER)
        if batched:
            pop_many = q.pop_many
            while got < n:
                ms = pop_many(4096, True, TIMER, False)
                if not ms:
                    break
                got += len(ms)
                last = ms[-1][2]
        else:
            pop = q.pop
            while got < n:
                m = pop(True, TIMER, False)
                if m is None:
                    break
                got += 1
                last = m[2]
        t_end = time.perf_counter()
    if last is not None:
        last = np.frombuffer(last, np.float64) if isinstance(last, bytes) else last
    ok = got == n and last is not None and last.size == ELEMS and last[0] == n - 1
    if not ok:
        contenders.log(f"  python reader: {got} of {n}, last {last!r}")
    contenders.ArrayContender.report(out, 0, t_end, 0 if ok else 1)


def _drain(q, n, start, ready, out):
    """The simulation's reader: pop_many until ``n`` states came; with
    ``start``, only once it is set (after the simulation: nobody to wake)."""
    _child()
    got = 0
    with q.open("reader"):
        ready.wait(TIMER)
        if start is not None and not start.wait(TIMER):
            n = -1
        while got < n:
            ms = q.pop_many(4096, True, TIMER, False)
            if not ms:
                break
            got += len(ms)
    contenders.ArrayContender.report(out, 0, time.perf_counter(), int(got != n))


# -- The measures ---------------------------------------------------------------------------


def _queue(tag, k, size=QUEUE):
    from pysyncq import PySyncQ

    return PySyncQ(f"{harness.SHM_PREFIX}{tag}_{k}", size=size)


def _check(q, what, got, st, n):
    from pysyncq import jit as pqjit

    if st != pqjit.OK or got != n:
        try:
            q.raise_for(st)
        except Exception as e:  # noqa: BLE001 - reported with the counts below
            raise RuntimeError(f"{what}: {got} of {n}, status {st}: {e!r}") from e
        raise RuntimeError(f"{what}: {got} of {n}, status {st}")


def one_process(tag, ping_pong, n):
    from pysyncq import PySyncQ

    with _queue(tag, "one") as w, PySyncQ(w.name, create=False) as r:
        w.open("writer", reader=False)
        r.open("reader")
        hw, hr = w.jit_handle(), r.jit_handle()
        _check(w, "ping-pong warm-up", *ping_pong(hw, hr, 1000, TIMER), 1000)
        t0 = time.perf_counter()
        got, st = ping_pong(hw, hr, n, TIMER)
        dt = time.perf_counter() - t0
        _check(w, "ping-pong", got, st, n)
    return n / dt


def across(tag, kind, n, chunk, produce, consume):
    """1 writer (this process) -> 1 reader (a child): msg/s per reader."""
    A = contenders.ArrayContender
    with _queue(tag, kind) as q:
        q.open("writer", filtself=False, reader=False)  # no screens for the child to inherit

        def targets(ready):
            if kind == "nopython":
                return [(_nopy_reader, (q, n, consume, ready))]
            return [(_py_reader, (q, n, kind == "batches", ready))]

        def send():
            if kind == "nopython":
                _check(q, "nopython writer", *produce(q.jit_handle(), n, TIMER), n)
            elif kind == "python":
                x = np.zeros(ELEMS)
                append = q.append_array
                for i in range(n):
                    x[0] = i
                    append("state", x, True, TIMER)
            else:
                whole = [np.zeros(ELEMS).tobytes()] * chunk
                last = np.full(ELEMS, n - 1.0).tobytes()  # what the reader checks
                extend = q.extend
                left = n
                while left:
                    k = min(left, chunk)
                    bodies = whole if k < left else whole[: k - 1] + [last]
                    extend("state", bodies, True, TIMER)
                    left -= k

        return n / A.run_readers(targets, send, 1)


def simulation(tag, simulate, steps, inner):
    """Seconds: (not streamed, streamed to a Python reader draining meanwhile,
    streamed to a reader that drains only after the simulation)."""
    A = contenders.ArrayContender
    # every state in the queue at once, with room to spare: the simulation never waits
    size = max(QUEUE, 1 << (steps * 256).bit_length())
    took = []
    with _queue(tag, "sim", size) as q:
        q.open("sim", filtself=False, reader=False)
        h = q.jit_handle()
        simulate(h, 10, 10, False, TIMER)  # compile (streaming is a run-time flag)
        t0 = time.perf_counter()
        got, st, x = simulate(h, steps, inner, False, TIMER)
        took.append(time.perf_counter() - t0)
        _check(q, "simulation", got, st, steps)
        for later in (False, True):
            start = A.CTX.Event() if later else None

            def send(start=start):
                t0 = time.perf_counter()
                got, st, _ = simulate(h, steps, inner, True, TIMER)
                took.append(time.perf_counter() - t0)
                if start is not None:
                    start.set()
                _check(q, "streamed simulation", got, st, steps)

            A.run_readers(lambda ready, s=start: [(_drain, (q, steps, s, ready))], send, 1)
    return took


def work(cls, tag, args):
    try:
        from pysyncq import jit  # noqa: F401
    except ImportError as e:
        raise harness.Skip(f"this tree has no pysyncq.jit: {e}") from None
    n_one, n_nopy, n_py, n_batch = args.counts
    t0 = time.perf_counter()
    ping_pong, produce, consume, simulate = _programs()
    # Compile every program here, before anything is timed and before the fork.
    with _queue(tag, "warm") as w:
        from pysyncq import PySyncQ

        with PySyncQ(w.name, create=False) as r:
            w.open("writer", reader=False)
            r.open("reader")
            hw, hr = w.jit_handle(), r.jit_handle()
            _check(w, "warm-up", *ping_pong(hw, hr, 10, TIMER), 10)
            _check(w, "warm-up", *produce(hw, 10, TIMER), 10)
            got, st, _ = consume(hr, 10, TIMER)
            _check(r, "warm-up", got, st, 10)
            simulate(hw, 1, 1, True, TIMER)
    contenders.log(f"  compiled in {time.perf_counter() - t0:.1f} s")

    cells = []

    def cell(variant, size, x, unit, higher, per_sample):
        cells.append(
            {
                "variant": variant,
                "size": size,
                "samples": [x],
                "unit": unit,
                "higher_is_better": higher,
                "per_sample": per_sample,
            }
        )
        contenders.log(f"  {variant:52} {x:14,.3f} {unit}")

    cell(ONE, SIZE, one_process(tag, ping_pong, n_one), "msg/s", True, n_one)
    for kind, variant, n in (
        ("nopython", XP_NOPY, n_nopy),
        ("python", XP_PY, n_py),
        ("batches", XP_BATCH, n_batch),
    ):
        rate = across(tag, kind, n, args.chunk, produce, consume)
        cell(variant, SIZE, rate, "msg/s per reader", True, n)
    off, on, on_later = simulation(tag, simulate, args.steps, args.inner)
    cell(SIM_OFF, None, off, "s", False, args.steps)
    cell(SIM_ON, None, on, "s", False, args.steps)
    cell(SIM_LATER, None, on_later, "s", False, args.steps)
    return {"cells": cells}


def rows(keys):
    return sorted(keys, key=lambda k: ROWS.index(k[0]) if k[0] in ROWS else len(ROWS))


def table(cells, names):
    """The figures, then the targets beside what the run measured."""
    lines = [
        "| row | messages (steps) a sample | median | min – max | unit |",
        "|---|---:|---:|---:|---|",
    ]
    meds = {}
    for (variant, _), by_c in cells.items():
        for x in by_c.values():
            xs = x.get("samples")
            if not xs:
                lines.append(f"| {variant} | | {'skipped' if x.get('skipped') else 'failed'} | | |")
                continue
            meds[variant] = med = harness.median(xs)
            f = harness.fmt_val if x.get("unit") != "s" else (lambda v: f"{v:.3f}")
            lines.append(
                f"| {variant} | {x.get('per_sample', 0):,} | {f(med)} | "
                f"{f(min(xs))} – {f(max(xs))} | {x.get('unit', '')} |"
            )
    lines += ["", "| target | now | target | met |", "|---|---:|---|---|"]
    for what, value, unit, goal, higher, text in TARGETS:
        v = value(meds)
        if v is None:
            lines.append(f"| {what} | n/a | {text} | |")
            continue
        now = f"{v / 1e6:.2f} M {unit}" if unit == "msg/s" else f"{v:.2f}{unit}"
        met = v >= goal if higher else v <= goal
        lines.append(f"| {what} | {now} | {text} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(harness.worker_main(sys.modules[__name__]))
