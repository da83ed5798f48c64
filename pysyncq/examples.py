"""Worker functions for the notebooks in ``notebooks/`` (and for your own
experiments): small, real and deterministic.

They live in the package, not in a notebook, because a process started with
``spawn`` or ``forkserver`` (the default on macOS, and on Linux from Python
3.14) imports its target function by name: a function defined in a notebook's
``__main__`` cannot be found there.  Start them as any target::

    import multiprocessing as mp
    from pysyncq import PySyncQ, examples

    q = PySyncQ("sweep", size=1 << 22)
    q.open("parent")
    ps = [mp.Process(target=examples.monte_carlo_worker, args=(q, f"w{i}", i))
          for i in range(3)]
    for p in ps:
        p.start()
    q.wait_for_readers(3, timer=60)

The protocol every worker here speaks:

* the parent appends ``TASK`` messages (``"task"``) and, at the end, one
  ``STOP`` (``"stop"``), which every worker sees, since the queue broadcasts;
* each worker appends one ``RESULT`` (``"result"``) per task and screens the
  other workers' results (``q.scrntype.add("result")``), so they never hold
  space in the queue on its account;
* a worker that hears nothing for ``timer`` seconds closes the queue and
  returns, so a parent that died never leaves workers behind.

**No deadlock at any queue size.**  A writer that finds the queue full does
not just wait: :func:`send` first reads what is waiting for it into a local
inbox (a list), because the space it waits for may be held by messages that it
has not read itself.  Parent and workers both write through :func:`send`, so
every reader keeps moving and the ring always drains; a message that can never
fit raises ``MessageTooLarge`` at once.
"""

import math
import multiprocessing as mp
import time

import numba
import numpy as np

from . import jit as pqjit
from .errors import QueueFull

__all__ = [
    "DONE",
    "MC_RESULT",
    "MC_TASK",
    "OSC_TASK",
    "RESULT",
    "STATE",
    "STOP",
    "TASK",
    "damped_oscillator",
    "gather",
    "lorenz",
    "lorenz_worker",
    "monte_carlo_worker",
    "oscillator_result_dtype",
    "oscillator_worker",
    "pi_hits",
    "send",
    "square_worker",
    "transfer_rate",
]

TASK, RESULT, STOP = "task", "result", "stop"

#: Seconds a worker waits for its next message before it gives up and leaves.
WORKER_TIMER = 60.0

#: One Monte Carlo task: estimate pi with ``n`` points per worker, from ``seed``.
MC_TASK = np.dtype([("task", "<i8"), ("n", "<i8"), ("seed", "<i8")])
#: One worker's share of a Monte Carlo task: how many of its ``n`` points fell
#: inside the quarter circle.
MC_RESULT = np.dtype([("task", "<i8"), ("rank", "<i8"), ("n", "<i8"), ("hits", "<i8")])
#: One damped oscillator of a sweep: ``x'' + 2 zeta omega x' + omega**2 x = 0``
#: with ``x(0) = 1, x'(0) = 0``, integrated to ``t_end`` in ``steps`` RK4 steps.
OSC_TASK = np.dtype(
    [("index", "<i8"), ("zeta", "<f8"), ("omega", "<f8"), ("t_end", "<f8"), ("steps", "<i8")]
)


def oscillator_result_dtype(steps):
    """A result row of the sweep: the task's ``index`` and ``x`` at the
    ``steps + 1`` times ``linspace(0, t_end, steps + 1)`` (a subarray field)."""
    return np.dtype([("index", "<i8"), ("x", "<f8", (int(steps) + 1,))])


# -- Sending without deadlock -------------------------------------------------------


def send(q, mtype, body, inbox, timer=WORKER_TIMER, array=None):
    """Append ``(mtype, body)`` (an ndarray with ``append_array``, anything
    else with ``append``); while the queue is full, pop what is waiting for
    this process into ``inbox`` (a list), then wait a little for space.

    Raises ``QueueFull`` if there is still no room after ``timer`` seconds,
    and ``MessageTooLarge`` at once for a message that can never fit.
    """
    if array is None:
        array = isinstance(body, np.ndarray)
    append = q.append_array if array else q.append
    deadline = time.monotonic() + timer
    while True:
        try:
            append(mtype, body)
            return
        except QueueFull:
            if time.monotonic() >= deadline:
                raise
        # The space we need may be held by our own unread messages: read them.
        got = q.pop_many(1 << 16)
        if got:
            inbox.extend(got)
            continue
        try:
            append(mtype, body, block=True, timer=0.05)
            return
        except QueueFull:
            if time.monotonic() >= deadline:
                raise


def gather(q, n, inbox, mtype=RESULT, timer=WORKER_TIMER):
    """Collect ``n`` messages of type ``mtype``: first from ``inbox`` (what
    :func:`send` set aside, removed from it), then by blocking pops.  Other
    messages stay in (or go to) ``inbox``.  Raises ``TimeoutError`` if the
    ``n`` have not come after ``timer`` seconds."""
    got, left = [], []
    for m in inbox:
        (got if m[1] == mtype and len(got) < n else left).append(m)
    inbox[:] = left
    deadline = time.monotonic() + timer
    while len(got) < n:
        m = q.pop(block=True, timer=max(0.0, deadline - time.monotonic()))
        if m is None:
            raise TimeoutError(f"{len(got)} of {n} {mtype!r} messages came within {timer} s")
        (got if m[1] == mtype else inbox).append(m)
    return got


def _own_screens(q, name):
    """Screen this worker's own messages and the other workers' results, and
    nothing else.  A handle carries its screens into the child it is passed
    to: had the parent opened (``filtself``) before starting the workers,
    they would otherwise screen the parent, and never see a task."""
    q.scrnsend = [name]
    q.scrntype = [RESULT]


def _serve(q, name, handle, timer):
    """The worker loop: open, screen the other workers' results, answer each
    task with ``handle(body)`` until ``STOP`` or ``timer`` seconds of silence."""
    with q.open(name, follow=True):  # ends with the parent (a notebook interrupt)
        _own_screens(q, name)
        inbox = []
        while True:
            m = inbox.pop(0) if inbox else q.pop(block=True, timer=timer)
            if m is None:
                return False  # the parent went quiet: leave
            sender, mtype, body = m
            if mtype == STOP:
                return True
            if mtype == TASK:
                out = handle(body)
                if out is not None:
                    send(q, RESULT, out, inbox, timer)


# -- Quick start: text messages ------------------------------------------------------


def square_worker(q, name, timer=WORKER_TIMER):
    """The user guide's worker: says ``hello``, answers each ``task`` (a
    number, as text) with a ``result`` text, says ``bye`` on ``stop``."""

    def handle(body):
        return f"{name} squared {body}: {int(body) ** 2}"

    with q.open(name, follow=True):  # ends with the parent (a notebook interrupt)
        _own_screens(q, name)
        inbox = []
        send(q, "hello", f"{name} is ready", inbox, timer)
        while True:
            m = inbox.pop(0) if inbox else q.pop(block=True, timer=timer)
            if m is None:
                return False
            sender, mtype, body = m
            if mtype == STOP:
                send(q, "bye", f"{name} got {sender}'s stop", inbox, timer)
                return True
            if mtype == TASK:
                send(q, RESULT, handle(body), inbox, timer)


# -- Monte Carlo: pi from random points ------------------------------------------------


def pi_hits(n, seed, rank=0, chunk=1 << 16):
    """How many of ``n`` uniform points in the unit square fall inside the
    quarter circle, drawn from ``default_rng([seed, rank])`` (independent
    streams per rank, the same numbers on every run).  ``4 * hits / n``
    estimates pi."""
    rng = np.random.default_rng([int(seed), int(rank)])
    hits, left = 0, int(n)
    while left > 0:
        k = min(chunk, left)
        x, y = rng.random(k), rng.random(k)
        hits += int(np.count_nonzero(x * x + y * y < 1.0))
        left -= k
    return hits


def _mc_handle(rank, tasks):
    tasks = np.asarray(tasks, MC_TASK)
    out = np.zeros(len(tasks), MC_RESULT)
    out["task"], out["rank"], out["n"] = tasks["task"], rank, tasks["n"]
    out["hits"] = [pi_hits(t["n"], t["seed"], rank) for t in tasks]
    return out


def monte_carlo_worker(q, name, rank, timer=WORKER_TIMER):
    """Each ``task`` is an ``MC_TASK`` array; every worker draws its own
    ``n`` points per row (stream ``[seed, rank]``) and answers with an
    ``MC_RESULT`` array, so the parent can pool all workers' points."""
    return _serve(q, name, lambda body: _mc_handle(rank, body), timer)


# -- ODE sweep: damped oscillators with RK4 ---------------------------------------------


def damped_oscillator(zeta, omega, t_end, steps):
    """Integrate ``x'' + 2 zeta omega x' + omega**2 x = 0``, ``x(0) = 1``,
    ``x'(0) = 0`` for arrays of ``zeta`` and ``omega`` at once with the
    classical fourth-order Runge-Kutta method, ``steps`` steps up to ``t_end``.
    Returns ``x`` at the ``steps + 1`` times, shape ``(len(zeta), steps + 1)``."""
    zeta = np.asarray(zeta, np.float64)
    omega = np.asarray(omega, np.float64)
    h = float(t_end) / int(steps)
    # RK4 is stable for h |lambda| up to about 2.8 (lambda: the eigenvalues).
    lam = omega * np.where(zeta > 1.0, zeta + np.sqrt(np.maximum(zeta * zeta - 1.0, 0.0)), 1.0)
    if lam.size and h * lam.max() > 2.5:
        raise ValueError(
            f"step {h:.3g} is too long for omega up to {omega.max():.3g}: RK4 would blow "
            f"up; use at least {math.ceil(t_end * lam.max() / 2.5)} steps"
        )
    a, b = 2.0 * zeta * omega, omega * omega

    def f(x, v):
        return v, -a * v - b * x

    x = np.ones_like(zeta)
    v = np.zeros_like(zeta)
    out = np.empty((zeta.size, int(steps) + 1))
    out[:, 0] = x
    for i in range(1, int(steps) + 1):
        k1x, k1v = f(x, v)
        k2x, k2v = f(x + 0.5 * h * k1x, v + 0.5 * h * k1v)
        k3x, k3v = f(x + 0.5 * h * k2x, v + 0.5 * h * k2v)
        k4x, k4v = f(x + h * k3x, v + h * k3v)
        x = x + h / 6.0 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
        v = v + h / 6.0 * (k1v + 2.0 * k2v + 2.0 * k3v + k4v)
        out[:, i] = x
    return out


def _osc_handle(rank, nworkers, tasks):
    tasks = np.asarray(tasks, OSC_TASK)
    mine = tasks[tasks["index"] % nworkers == rank]
    if len(tasks) == 0:
        return None
    steps, t_end = int(tasks["steps"][0]), float(tasks["t_end"][0])
    if (tasks["steps"] != steps).any() or (tasks["t_end"] != t_end).any():
        raise ValueError("all rows of one oscillator task must share t_end and steps")
    out = np.zeros(len(mine), oscillator_result_dtype(steps))
    out["index"] = mine["index"]
    if len(mine):
        out["x"] = damped_oscillator(mine["zeta"], mine["omega"], t_end, steps)
    return out


def oscillator_worker(q, name, rank, nworkers, timer=WORKER_TIMER):
    """Each ``task`` is an ``OSC_TASK`` array (one row per oscillator, all with
    the same ``t_end`` and ``steps``); worker ``rank`` of ``nworkers``
    integrates the rows with ``index % nworkers == rank`` and answers with an
    array of ``oscillator_result_dtype(steps)`` (possibly empty)."""
    return _serve(q, name, lambda body: _osc_handle(rank, nworkers, body), timer)


# -- Array transfer: pysyncq against multiprocessing.Queue ----------------------------


def _pq_reader(q, timer):
    """Pop ``count`` arrays per round (announced by a ``go`` message) and
    answer with the ``perf_counter`` time at which the last one arrived."""
    with q.open("reader", follow=True):
        _own_screens(q, "reader")
        while True:
            m = q.pop(block=True, timer=timer)
            if m is None or m[1] == STOP:
                return
            if m[1] == "go":
                count = int(m[2])
                for _ in range(count):
                    got = q.pop(block=True, timer=timer)
                    if got is None:
                        return
                q.append("done", repr(time.perf_counter()), block=True, timer=timer)


def _mpq_reader(inq, outq, timer):
    while True:
        m = inq.get(timeout=timer)
        if m is None:
            return
        for _ in range(m):
            inq.get(timeout=timer)
        outq.put(time.perf_counter())


def transfer_rate(sizes, budget=32 << 20, ctx=None, timer=60.0, repeats=3, name=None):
    """MB/s of numpy arrays (float64, ``size`` bytes each) from this process to
    one reader process, ``append_array`` + ``pop`` against
    ``multiprocessing.Queue`` ``put`` + ``get`` (pickle), for every size of
    ``sizes``.  About ``budget`` bytes (at least 4 and at most 4000 arrays)
    per measurement; the best of ``repeats``.  One reader process per
    transport serves every size, so a slow ``spawn`` start is not timed.

    ``name`` names the queue (None: a unique name).  Returns
    ``{"pysyncq": [MB/s, ...], "mp.Queue": [MB/s, ...]}`` in the order of
    ``sizes``.
    """
    from .queue import PySyncQ

    ctx = ctx or mp.get_context()
    sizes = [int(s) for s in sizes]
    counts = [max(4, min(4000, budget // s)) for s in sizes]
    out = {"pysyncq": [], "mp.Queue": []}
    # pysyncq: room for a few of the largest arrays
    qsize = max(1 << 20, 4 * (max(sizes) + 4096))
    with PySyncQ(name, size=qsize) as q:
        q.open("parent")
        p = ctx.Process(target=_pq_reader, args=(q, timer), daemon=True)
        p.start()
        try:
            q.wait_for_readers(1, timer=timer)
            for size, count in zip(sizes, counts, strict=True):
                arr = np.arange(size // 8, dtype=np.float64)
                best = math.inf
                for _ in range(repeats):
                    q.append("go", str(count), block=True, timer=timer)
                    t0 = time.perf_counter()
                    for _ in range(count):
                        q.append_array("data", arr, block=True, timer=timer)
                    m = q.pop(block=True, timer=timer)
                    if m is None or m[1] != "done":
                        raise RuntimeError(f"the pysyncq reader did not answer: {m!r}")
                    best = min(best, float(m[2]) - t0)
                out["pysyncq"].append(size * count / best / 1e6)
            q.append(STOP, block=True, timer=timer)
        finally:
            p.join(timer)
            if p.is_alive():
                p.terminate()
                p.join(5)
    inq, outq = ctx.Queue(maxsize=8), ctx.Queue()
    p = ctx.Process(target=_mpq_reader, args=(inq, outq, timer), daemon=True)
    p.start()
    try:
        for size, count in zip(sizes, counts, strict=True):
            arr = np.arange(size // 8, dtype=np.float64)
            best = math.inf
            for _ in range(repeats):
                inq.put(count, timeout=timer)
                t0 = time.perf_counter()
                for _ in range(count):
                    inq.put(arr, timeout=timer)
                best = min(best, outq.get(timeout=timer) - t0)
            out["mp.Queue"].append(size * count / best / 1e6)
        inq.put(None, timeout=timer)
    finally:
        p.join(timer)
        if p.is_alive():
            p.terminate()
            p.join(5)
        for x in (inq, outq):
            x.close()
            x.join_thread()
    return out


# -- A simulation in nopython code that streams its states (pysyncq.jit) ------

#: The message type of a state, and of a worker's last word.
STATE = "state"
DONE = "done"


@numba.njit(cache=True, nogil=True)
def lorenz(h, rank, steps, dt):
    """Integrate the Lorenz system from a start that differs by ``rank`` in
    the 9th digit, appending ``(t, x, y, z)`` to handle ``h`` every step
    from nopython code (waiting up to 10 s for space).  Returns ``(steps
    done, status)``: ``pysyncq.jit.OK``, or what stopped it."""
    s = np.array([0.0, 1.0 + 1e-9 * rank, 1.0, 1.0])
    for i in range(steps):
        x, y, z = s[1], s[2], s[3]
        s[1] = x + dt * 10.0 * (y - x)
        s[2] = y + dt * (x * (28.0 - z) - y)
        s[3] = z + dt * (x * y - 8.0 / 3.0 * z)
        s[0] = (i + 1) * dt
        st = pqjit.append_array(h, STATE, s, 10.0)
        if st != pqjit.OK:
            return i, st
    return steps, pqjit.OK


def lorenz_worker(q, sender, rank, steps, dt=0.002):
    """Open ``q`` as a writer, run :func:`lorenz` there (nopython code
    streaming every state), raise what its status says, and say ``DONE``."""
    q.open(sender, reader=False)
    try:
        h = q.jit_handle()
        done, st = lorenz(h, rank, steps, dt)
        q.raise_for(st)
        q.append(DONE, str(done), block=True, timer=30)
    finally:
        q.close()
