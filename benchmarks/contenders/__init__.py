"""The contenders: one class each, grouped by whose code they run.

A contender is a subclass of one *role*, the protocol a scenario drives:

=================  =====================================================================
role               scenarios, and what a contender provides
=================  =====================================================================
``Transport``      echo, fanout: one parent, K children (a star); see the class
``Mesh``           alltoall: N peers, each sending to every other
``ArrayContender`` arrays: one writer, R readers of numpy arrays; ``sample() -> seconds``
``BatchContender`` batches: 64 B messages 1 -> 1; ``sample() -> msg/s``
``Link``           bridge: one writer and one reader, possibly on two hosts
``Itself``         aio, recovery, coldstart: pysyncq's own behaviour, no peer
=================  =====================================================================

Adding a peer is one class: subclass the role, give it a ``name`` (how tables
and ``--only`` call it), say which pysyncq its worker imports (``pysyncq``),
which modules it needs and which pip packages provide them (``requires``,
``pip``: ``run.py --install-optional`` installs them into
``benchmarks/.peers/optional``), and, where the scenario's default does not
suit it, the work per sample (``counts``).  Put it in the module of its
library (or a new module here: every module of this package is imported).
Configure it as its own users would at their best, and say how in its
docstring (benchmarks/README.md's table of contenders summarises them).

Modules: ``ours`` (pysyncq, this tree's and 0.0.1), ``stdlib``
(``multiprocessing``), ``references`` (copy-ring, memcpy: floors, not
queues), ``pyzmq``, ``fasterfifo``.
"""

import importlib
import multiprocessing as mp
import pkgutil
import queue
import struct
import sys
import time

import numpy as np

#: Table order (and the order of the first round); a name not here goes last.
ORDER = [
    "pysyncq",
    "pysyncq-batch",
    "pysyncq bytes",
    "pysyncq pop_view",
    "pysyncq loan",
    "extend+pop_many",
    "append+pop",
    "pysyncq bridge",
    "pysyncq-0.0.1",
    "Pipe",
    "mp.Queue",
    "mp.Pipe",
    "faster-fifo",
    "pyzmq",
    "shared_memory",
    "copy-ring",
    "memcpy",
    "memcpy shm",
]

_REGISTRY = []


class Contender:
    #: How tables and ``--only`` call it (unique within its role).
    name = None
    #: Which pysyncq its worker imports: "tree" (the tree under test: this
    #: checkout, or A and B of an A/B run), "0.0.1" (the PyPI release, from
    #: ``benchmarks/.peers/pysyncq001``) or None (it uses none; its worker
    #: still gets the tree first on its path).
    pysyncq = None
    #: Modules it needs, and the pip packages that provide them.
    requires = ()
    pip = ()
    #: pysyncq's own code (its ratios are against the others); a reference
    #: floor, not a queue (never "the best peer").
    ours = False
    reference = False
    #: Work per sample by scenario name, where the scenario's default does not suit.
    counts = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__ and cls.name:
            _REGISTRY.append(cls)

    @classmethod
    def count(cls, scenario, default):
        return cls.counts.get(scenario, default)


class Transport(Contender):
    """A star: one parent, K children (echo.py, fanout.py).

    * made in the parent before the children are forked:
      ``cls(nchildren, capacity, tag, msg_size)``;
    * parent: ``parent_open()``, ``send(type, body)`` to every child,
      ``send_stream(type, body)`` (the same, for a writer that never reads),
      ``recv() -> (type, body)`` from any child, ``send_kill()``;
    * child ``i``: ``child_open(i)``, ``recv()`` from the parent, ``send(type,
      body)`` to the parent;
    * ``child_close()``, ``parent_close()``, ``cleanup()`` (unlink whatever
      is left, returning its names);
    * ``needs_repeated_ping``: the first barrier resends until all answered.

    Types and bodies are bytes (a body may come back as a memoryview).  Every
    blocking call blocks (no busy polling) unless the class says otherwise,
    and every one has a deadline.
    """

    #: Only parent -> children (fanout, not echo).
    one_way = False
    needs_repeated_ping = False


class Mesh(Contender):
    """N peers, each sending to all others (alltoall.py).

    Made before the fork: ``cls(n, capacity, tag)``; in peer ``i``:
    ``open(i)``, ``send(body) -> bool`` (False: full, drain and try again),
    ``recv_nowait() -> body or None``, ``recv(timeout) -> body`` (raises
    ``TimeoutError``), ``close()``; in the parent ``cleanup()``.  A mesh with
    ``send_many(bodies) -> sent`` and ``recv_many(timeout=None) -> bodies``
    is driven by bursts and drains of one call each.
    """


class ArrayContender(Contender):
    """One writer (the worker) sends ``warm + count`` float64 arrays of S bytes
    to R reader processes (arrays.py).

    ``sample(size, k, count, tag) -> seconds``: the slowest reader's time from
    its ``warm``-th array to its last (``run_readers``), so that every
    contender is timed in its steady state.  Each reader checks every array's
    size and first and last elements (``check``), and reads nothing else.
    """

    TIMER = 60.0  # seconds any single wait may take before the sample fails
    HEADER = struct.Struct("<16sq")  # dtype.str, element count (1-d arrays here)
    CTX = mp.get_context("fork")

    @staticmethod
    def ring_bytes(size):
        """Capacity of the pysyncq ring, and what the bounded peers may hold."""
        return max(16 << 20, 4 * (size + 4096))

    @classmethod
    def warm_for(cls, size):
        """Untimed arrays before a sample: once around the ring, and one more."""
        return cls.ring_bytes(size) // size + 1

    @staticmethod
    def source(size):
        return np.arange(size // 8, dtype=np.float64)

    @staticmethod
    def check(arr, n):
        return arr.size == n and arr[0] == 0.0 and arr[-1] == n - 1

    @staticmethod
    def report(out, i, t_end, bad, t_warm=None):
        out.put((i, t_warm, t_end, bad))

    @classmethod
    def run_readers(cls, targets, send, k):
        """Start the readers ``targets(ready) -> [(function, args)]`` (each is
        called with ``out`` appended and reports through ``report``), release
        them together, run ``send()`` and return seconds: the slowest reader's
        timed part (from its ``warm``-th array to its last) where the readers
        report one, else from just before ``send()`` to the moment the last
        reader had its last message (batches)."""
        ctx, timer = cls.CTX, cls.TIMER
        out = ctx.Queue()
        ready = ctx.Barrier(k + 1)
        procs = [ctx.Process(target=t, args=(*a, out), daemon=True) for t, a in targets(ready)]
        for p in procs:
            p.start()
        try:
            ready.wait(timer)
            t0 = time.perf_counter()
            send()
            ends, bad = {}, 0
            deadline = time.monotonic() + timer
            while len(ends) < k:
                try:
                    i, t_warm, t_end, b = out.get(timeout=0.2)
                except queue.Empty:
                    dead = [p.exitcode for p in procs if p.exitcode]
                    if dead or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"readers failed (exit codes {dead}) or timed out"
                        ) from None
                    continue
                ends[i] = t_end - (t0 if t_warm is None else t_warm)
                bad += b
            if bad:
                raise AssertionError(f"readers found {bad} wrong arrays")
            return max(ends.values())
        finally:
            for p in procs:
                p.join(5)
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(5)
            out.close()
            out.join_thread()

    def sample(self, size, k, count, tag):
        raise NotImplementedError


class BatchContender(Contender):
    """64 B messages, one writer to one reader (batches.py):
    ``sample(count, tag, chunk) -> msg/s`` per reader."""


class Link(Contender):
    """One writer, one reader, each its own process (bridge.py):
    ``open(tag) -> dict`` (what to record, e.g. versions),
    ``sample(size, n, pause) -> (t_start, t_last, latencies)`` (``pause`` s
    between sends; each body starts with the writer's ``time.perf_counter()``
    packed as ``STAMP``, the clock every process of a machine shares;
    latencies in s), ``close()``."""

    STAMP = struct.Struct("<d")
    CTX = mp.get_context("fork")

    def open(self, tag):
        return {}

    def close(self):
        pass

    @staticmethod
    def collect(rx, procs, t0, what, timeout=120):
        """Wait for the reader's ``("ok", t_last, latencies)`` on ``rx``; join ``procs``."""
        try:
            if not rx.poll(timeout):
                raise RuntimeError(f"{what}: no result in {timeout} s")
            got = rx.recv()
            if got[0] != "ok":
                raise RuntimeError(f"{what}: {got[1]}")
            return t0, got[1], got[2]
        finally:
            for p in procs:
                p.join(10)
                if p.exitcode is None:
                    p.kill()
                    p.join()


class Itself(Contender):
    """pysyncq on its own (aio latency, recovery, cold start): the scenario
    does the work; the class only names the tree it runs in."""


def _load_all():
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


def _rank(cls):
    return ORDER.index(cls.name) if cls.name in ORDER else len(ORDER)


def for_role(role):
    """The contender classes of ``role``, in table order."""
    return sorted((c for c in _REGISTRY if issubclass(c, role)), key=_rank)


def get(role, name):
    for c in for_role(role):
        if c.name == name:
            return c
    raise SystemExit(f"no {role.__name__} contender named {name!r}")


def all_names():
    return sorted({c.name for c in _REGISTRY}, key=lambda n: ORDER.index(n) if n in ORDER else 99)


def pip_packages():
    return {p for c in _REGISTRY for p in c.pip}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


_load_all()
