"""numpy arrays between processes: pysyncq against the ways they travel today.

    python benchmarks/arrays.py --install-optional   # pyzmq into benchmarks/.peers/optional
    python benchmarks/arrays.py [--repeats 5] [--quick] [--only pysyncq,mp.Queue]

**Array transfer.**  One writer (this process) sends ``warm + count``
float64 arrays of S bytes to R reader processes (R = 1 and 3; S = 1 KiB,
64 KiB, 1 MiB, 8 MiB), each reader receives every array.  The first ``warm``
arrays (enough to go once around the ring, ``warm_for``) are not timed, so
that every contender is measured in its steady state, as the ``memcpy``
reference is: each reader notes the time it has its ``warm``-th array and its
last one (``time.perf_counter``, CLOCK_MONOTONIC), and a sample's time is the
longest of those intervals over the readers; MB/s per reader = count * S /
time / 1e6.  (Until 2026-11-30 a sample ran from the first send on a freshly
made transport: pysyncq's first pass over a new ring then paid a page fault
per 4 KiB of shared memory, about half of the time at 8 MiB on the 2-core VM,
while ``memcpy`` copied into memory it had already touched.)  Each reader checks every array's
size and its first and last elements, and does not otherwise read the data
(the same for every contender, so that a zero-copy read is not charged for a
pass over the data that a copy makes anyway).  Contenders:

* ``pysyncq`` -- ``append_array`` + ``pop`` (a private copy), one broadcast
  queue, the writer opened ``reader=False``.
* ``pysyncq bytes`` -- ``append(bytes)`` + ``pop``: the same bytes as a plain
  message, the yardstick for what an array message costs on top.
* ``pysyncq pop_view`` and ``pysyncq loan`` -- ``append_array`` + ``pop_view``
  and ``loan`` + ``pop_view``; only where this checkout has them.
* ``mp.Queue`` -- one ``multiprocessing.Queue`` per reader (pickles the array),
  bounded like the ring.
* ``mp.Pipe`` -- one ``Pipe`` per reader: ``send_bytes`` of a small dtype/shape
  header, then ``send_bytes`` of the array's buffer; the reader rebuilds it
  with ``np.frombuffer``.
* ``pyzmq`` -- XPUB (no-drop, bounded) to one SUB per reader over ``ipc://``,
  ``send_multipart([header, array], copy=False)``, received with
  ``copy=False`` and viewed with ``np.frombuffer`` (optional: needs pyzmq,
  ``--install-optional`` puts it in ``benchmarks/.peers/optional``).
* ``shared_memory`` -- what a careful user writes today: one
  ``multiprocessing.shared_memory`` block per array, its name, dtype and shape
  sent on a ``Pipe`` per reader; each reader attaches, copies the array out,
  detaches and acknowledges; the writer unlinks a block once every reader has
  acknowledged it, and keeps at most as many blocks in flight as the ring
  holds arrays.
* ``memcpy`` -- the reference: one ``np.copyto`` of the same bytes in this
  process, into memory that is not in cache, timed in the same run (MB/s of
  a single copy).  ``memcpy shm`` is the same copy into a ``/dev/shm``
  mapping: the kind of memory (4 KiB pages here, where ``np.empty`` gets
  2 MiB ones) that a shared-memory transport must write.

**Batches.**  64 B messages, one writer to one reader: ``extend`` (batches of
1000) + ``pop_many(4096)`` against ``append`` + ``pop`` one message at a time;
messages/s per reader.

Every (contender, size, readers) sample forks fresh readers.  Repeats are
interleaved (every contender once per repeat, in rotated order), and the
tables give the median and the min-max of the repeats, with ratios against
every peer from the same run.  Raw samples go to
``benchmarks/results/arrays-<date>-<host>.json``.
"""

import argparse
import json
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import platform
import queue
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import harness as peers  # noqa: E402  (the harness keeps the peer paths)

if peers.OPTIONAL.is_dir():
    sys.path.insert(0, str(peers.OPTIONAL))
# benchmarks/ab.py points PYSYNCQ_CHECKOUT at another checkout to A/B it.
sys.path.insert(0, os.environ.get("PYSYNCQ_CHECKOUT") or str(REPO))

import numpy as np  # noqa: E402
from harness import quantile  # noqa: E402

from pysyncq import PySyncQ  # noqa: E402

CTX = mp.get_context("fork")
RESULTS = HERE / "results"
SIZES = [1 << 10, 64 << 10, 1 << 20, 8 << 20]
READERS = [1, 3]
#: Arrays per sample by size, before --scale: about 0.1-0.5 s for the fast ones.
COUNTS = {1 << 10: 20000, 64 << 10: 2000, 1 << 20: 200, 8 << 20: 24}
REPEATS = 5
TIMER = 60.0  # seconds any single wait may take before the sample fails
BATCH_M = {"extend+pop_many": 1_000_000, "append+pop": 200_000}
BATCH_SIZE = 64
EXTEND_CHUNK = 1000

ARRAY_CONTENDERS = [
    "pysyncq",
    "pysyncq bytes",
    "pysyncq pop_view",
    "pysyncq loan",
    "mp.Queue",
    "mp.Pipe",
    "pyzmq",
    "shared_memory",
    "memcpy",
    "memcpy shm",
]
OURS = ("pysyncq", "pysyncq bytes", "pysyncq pop_view", "pysyncq loan")
PEERS = ("mp.Queue", "mp.Pipe", "pyzmq", "shared_memory", "memcpy", "memcpy shm")
HEADER = struct.Struct("<16sq")  # dtype.str, element count (1-d arrays here)


def ring_bytes(size):
    """Capacity of the pysyncq ring, and what the bounded peers may hold."""
    return max(16 << 20, 4 * (size + 4096))


def source(size):
    return np.arange(size // 8, dtype=np.float64)


def warm_for(size):
    """Untimed arrays before a sample: once around the ring, and one more."""
    return ring_bytes(size) // size + 1


def check(arr, n):
    return arr.size == n and arr[0] == 0.0 and arr[-1] == n - 1


# -- Readers: each receives `count` arrays and reports (end time, bad count) -------


def _report(out, i, t_end, bad, t_warm=None):
    out.put((i, t_warm, t_end, bad))


def r_pysyncq(q, i, count, n, ready, mode, out):
    bad = 0
    warm = warm_for(8 * n)
    t_warm = None
    with q.open(f"r{i}"):
        ready.wait(TIMER)
        if mode == "pop_view":
            for j in range(warm + count):
                if j == warm:
                    t_warm = time.perf_counter()
                with q.pop_view(block=True, timer=TIMER) as m:
                    if m is None or not check(m[2], n):
                        bad += 1
        else:
            pop = q.pop
            for j in range(warm + count):
                if j == warm:
                    t_warm = time.perf_counter()
                m = pop(True, TIMER, False)
                if m is None:
                    bad += 1
                    continue
                body = m[2]
                if mode == "bytes":
                    body = np.frombuffer(body, np.float64)
                if not check(body, n):
                    bad += 1
        _report(out, i, time.perf_counter(), bad, t_warm)


def r_mpqueue(inq, i, count, n, ready, out):
    ready.wait(TIMER)
    bad = 0
    get = inq.get
    warm = warm_for(8 * n)
    for j in range(warm + count):
        if j == warm:
            t_warm = time.perf_counter()
        if not check(get(timeout=TIMER), n):
            bad += 1
    _report(out, i, time.perf_counter(), bad, t_warm)


def r_pipe(conn, i, count, n, ready, out):
    ready.wait(TIMER)
    bad = 0
    warm = warm_for(8 * n)
    for j in range(warm + count):
        if j == warm:
            t_warm = time.perf_counter()
        if not conn.poll(TIMER):
            raise TimeoutError("pipe reader waited too long")
        dt, length = HEADER.unpack(conn.recv_bytes())
        arr = np.frombuffer(conn.recv_bytes(), np.dtype(dt.rstrip(b"\0").decode()))
        if arr.size != length or not check(arr, n):
            bad += 1
    _report(out, i, time.perf_counter(), bad, t_warm)


def r_zmq(addr, hwm, i, count, n, ready, out):
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, hwm)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(addr)
    bad = 0
    warm = warm_for(8 * n)
    try:
        ready.wait(TIMER)
        for j in range(warm + count):
            if j == warm:
                t_warm = time.perf_counter()
            if not sub.poll(int(TIMER * 1000)):
                raise TimeoutError("zmq reader waited too long")
            head, data = sub.recv_multipart(copy=False)
            dt, length = HEADER.unpack(head.bytes)
            arr = np.frombuffer(data.buffer, np.dtype(dt.rstrip(b"\0").decode()))
            if arr.size != length or not check(arr, n):
                bad += 1
        _report(out, i, time.perf_counter(), bad, t_warm)
    finally:
        sub.close(0)
        ctx.term()


def _attach(name):
    """Attach to the writer's block.  Before Python 3.13 attaching registers
    the block with the resource tracker, which would unlink it when this
    process ends; the readers here are forked after the writer started its
    tracker, and share it, where the name is registered already (a set), so
    nothing more is needed.  A spawned reader would have to ``unregister`` it."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    return shared_memory.SharedMemory(name)


def r_shm(conn, i, count, n, ready, out):
    ready.wait(TIMER)
    bad = 0
    warm = warm_for(8 * n)
    for j in range(warm + count):
        if j == warm:
            t_warm = time.perf_counter()
        if not conn.poll(TIMER):
            raise TimeoutError("shared_memory reader waited too long")
        name, dt, shape = conn.recv()
        shm = _attach(name)
        try:
            arr = np.ndarray(shape, np.dtype(dt), buffer=shm.buf).copy()
        finally:
            shm.close()
        conn.send(name)
        if not check(arr, n):
            bad += 1
    _report(out, i, time.perf_counter(), bad, t_warm)


# -- Writers, one sample each ---------------------------------------------------


def _run(targets, send, k):
    """Start the readers, release them together, run ``send()`` and return
    seconds: the slowest reader's timed part (from its ``warm``-th array to
    its last) where the readers report one, else from just before ``send()``
    to the moment the last reader had its last message (batches)."""
    out = CTX.Queue()
    ready = CTX.Barrier(k + 1)
    procs = [CTX.Process(target=t, args=(*a, out), daemon=True) for t, a in targets(ready)]
    for p in procs:
        p.start()
    try:
        ready.wait(TIMER)
        t0 = time.perf_counter()
        send()
        ends, bad = {}, 0
        deadline = time.monotonic() + TIMER
        while len(ends) < k:
            try:
                i, t_warm, t_end, b = out.get(timeout=0.2)
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"readers failed (exit codes {dead}) or timed out") from None
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


def s_pysyncq(size, k, count, tag, mode):
    src = source(size)
    n = src.size
    raw = src.tobytes()
    with PySyncQ(f"{peers.SHM_PREFIX}{tag}", size=ring_bytes(size)) as q:

        def targets(ready):
            m = "bytes" if mode == "bytes" else ("pop_view" if mode in ("pop_view", "loan") else "")
            return [(r_pysyncq, (q, i, count, n, ready, m)) for i in range(k)]

        q.open("writer", filtself=False, reader=False)  # no screens for the children to inherit

        total = warm_for(size) + count

        def send():
            if mode == "bytes":
                append = q.append
                for _ in range(total):
                    append("data", raw, True, TIMER)
            elif mode == "loan":
                for _ in range(total):
                    with q.loan("data", src.shape, src.dtype, block=True, timer=TIMER) as a:
                        np.copyto(a, src)
            else:
                append = q.append_array
                for _ in range(total):
                    append("data", src, True, TIMER)

        return _run(targets, send, k)


def s_mpqueue(size, k, count, tag):
    src = source(size)
    qs = [CTX.Queue(maxsize=max(2, ring_bytes(size) // size)) for _ in range(k)]
    try:

        def targets(ready):
            return [(r_mpqueue, (qs[i], i, count, src.size, ready)) for i in range(k)]

        def send():
            puts = [q.put for q in qs]
            for _ in range(warm_for(size) + count):
                for put in puts:
                    put(src, timeout=TIMER)

        return _run(targets, send, k)
    finally:
        for q in qs:
            q.close()
            q.join_thread()


def s_pipe(size, k, count, tag):
    src = source(size)
    pipes = [CTX.Pipe(duplex=False) for _ in range(k)]
    try:

        def targets(ready):
            return [(r_pipe, (pipes[i][0], i, count, src.size, ready)) for i in range(k)]

        def send():
            head = HEADER.pack(src.dtype.str.encode(), src.size)
            buf = memoryview(src).cast("B")
            ends = [w for _, w in pipes]
            for _ in range(warm_for(size) + count):
                for w in ends:
                    w.send_bytes(head)
                    w.send_bytes(buf)

        return _run(targets, send, k)
    finally:
        for r, w in pipes:
            r.close()
            w.close()


def s_zmq(size, k, count, tag):
    import zmq

    src = source(size)
    folder = tempfile.mkdtemp(prefix=f"pqbench-arrays-{tag}-")
    addr = f"ipc://{folder}/pub"
    hwm = max(2, ring_bytes(size) // size)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    try:
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every reader's subscription, not only the first
        pub.setsockopt(zmq.SNDHWM, hwm)
        pub.bind(addr)

        def targets(ready):
            # The readers subscribe before the barrier; wait for all k
            # subscriptions here, before the readers are released.
            return [(r_zmq, (addr, hwm, i, count, src.size, ready)) for i in range(k)]

        def send():
            head = HEADER.pack(src.dtype.str.encode(), src.size)
            for _ in range(warm_for(size) + count):
                pub.send_multipart([head, src], copy=False)

        seen = []

        def send_after_subscriptions():
            while len(seen) < k:
                if not pub.poll(int(TIMER * 1000)):
                    raise TimeoutError("zmq subscribers did not subscribe")
                seen.append(pub.recv())
            send()

        # Subscriptions arrive after the readers connect, which they do before
        # the barrier: receiving them is part of the (negligible) first send.
        return _run(targets, send_after_subscriptions, k)
    finally:
        pub.close(0)
        ctx.term()
        for f in Path(folder).glob("*"):
            f.unlink()
        os.rmdir(folder)


def s_shm(size, k, count, tag):
    src = source(size)
    pipes = [CTX.Pipe() for _ in range(k)]
    window = max(1, ring_bytes(size) // size)
    live = {}  # name -> (SharedMemory, acks so far)

    def targets(ready):
        return [(r_shm, (pipes[i][1], i, count, src.size, ready)) for i in range(k)]

    conns = [c for c, _ in pipes]

    def collect(block):
        """Take in the acknowledgements there are (with ``block``, wait for
        at least one), unlinking the blocks every reader is done with."""
        ready = mpc.wait(conns, TIMER if block else 0)
        if block and not ready:
            raise TimeoutError("shared_memory readers did not acknowledge")
        for c in ready:
            while c.poll(0):
                name = c.recv()
                shm, acks = live[name]
                if acks + 1 == k:
                    del live[name]
                    shm.close()
                    shm.unlink()
                else:
                    live[name] = (shm, acks + 1)

    def send():
        for j in range(warm_for(size) + count):
            while len(live) >= window:
                collect(True)
            shm = shared_memory.SharedMemory(f"{peers.SHM_PREFIX}{tag}_{j}", True, size)
            np.ndarray(src.shape, src.dtype, buffer=shm.buf)[...] = src
            live[shm.name] = (shm, 0)
            for c, _ in pipes:
                c.send((shm.name, src.dtype.str, src.shape))
            collect(False)

    # Start the tracker before the readers are forked, so that they share it.
    resource_tracker.ensure_running()
    try:
        return _run(targets, send, k)
    finally:
        try:
            deadline = time.monotonic() + 10
            while live and time.monotonic() < deadline:
                collect(True)
        finally:
            for shm, _ in live.values():
                shm.close()
                shm.unlink()
            for a, b in pipes:
                a.close()
                b.close()


def s_memcpy(size, k, count, tag, shm=False):
    """Seconds for ``count`` single copies of ``size`` bytes (so that MB/s
    comes out as one copy's rate; ``k`` plays no part): ``np.copyto`` of the
    same source into successive places of a 64 MiB buffer, twice the 2-core
    machine's L3 cache, so that the destination is not in cache (as a
    transport's is not); the median of 5 timings.

    ``memcpy`` copies into ``np.empty`` memory, which numpy asks to be backed
    by 2 MiB pages (MADV_HUGEPAGE) where the kernel allows it; ``memcpy shm``
    (``shm=True``) into a ``/dev/shm`` mapping, the memory every shared-memory
    transport here writes, which has 4 KiB pages unless the tmpfs is mounted
    with ``huge=``.  On the 2-core VM the same copy ran at about 20 GB/s into
    the first and 12-14 GB/s into the second (and into anonymous memory
    without huge pages)."""
    src = source(size)
    nbytes = max(64 << 20, 4 * size)
    if not shm:
        return _copies(src, count, np.empty(nbytes // 8))
    block = shared_memory.SharedMemory(f"{peers.SHM_PREFIX}{tag}_memcpy", True, nbytes)
    try:
        return _copies(src, count, np.ndarray(nbytes // 8, np.float64, block.buf))
    finally:
        block.close()
        block.unlink()


def _copies(src, count, dst):
    n = src.size
    slots = dst.size // n
    views = [dst[j * n : (j + 1) * n] for j in range(slots)]
    reps = max(16, min(count, 2000))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for j in range(reps):
            np.copyto(views[j % slots], src)
        times.append((time.perf_counter() - t0) / reps)
    views = dst = None
    return sorted(times)[2] * count


SAMPLERS = {
    "pysyncq": lambda s, k, c, t: s_pysyncq(s, k, c, t, "array"),
    "pysyncq bytes": lambda s, k, c, t: s_pysyncq(s, k, c, t, "bytes"),
    "pysyncq pop_view": lambda s, k, c, t: s_pysyncq(s, k, c, t, "pop_view"),
    "pysyncq loan": lambda s, k, c, t: s_pysyncq(s, k, c, t, "loan"),
    "mp.Queue": s_mpqueue,
    "mp.Pipe": s_pipe,
    "pyzmq": s_zmq,
    "shared_memory": s_shm,
    "memcpy": s_memcpy,
    "memcpy shm": lambda s, k, c, t: s_memcpy(s, k, c, t, shm=True),
}


# -- Batches ----------------------------------------------------------------------


def r_batch(q, count, mode, ready, out):
    got = 0
    with q.open("r"):
        ready.wait(TIMER)
        if mode == "extend+pop_many":
            pop_many = q.pop_many
            while got < count:
                ms = pop_many(4096, True, TIMER, False)
                if not ms:
                    break
                got += len(ms)
        else:
            pop = q.pop
            while got < count:
                if pop(True, TIMER, False) is None:
                    break
                got += 1
        _report(out, 0, time.perf_counter(), count - got)


def batch_sample(mode, count, tag):
    body = bytes(BATCH_SIZE)
    with PySyncQ(f"{peers.SHM_PREFIX}{tag}", size=4 << 20) as q:
        q.open("writer", filtself=False, reader=False)  # no screens for the children to inherit

        def targets(ready):
            return [(r_batch, (q, count, mode, ready))]

        def send():
            if mode == "extend+pop_many":
                chunk = [body] * EXTEND_CHUNK
                extend = q.extend
                left = count
                while left:
                    k = min(left, EXTEND_CHUNK)
                    extend("d", chunk if k == EXTEND_CHUNK else chunk[:k], True, TIMER)
                    left -= k
            else:
                append = q.append
                for _ in range(count):
                    append("d", body, True, TIMER)

        return count / _run(targets, send, 1)


# -- Running, tables ------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=REPEATS, help=f"default {REPEATS}")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every count")
    p.add_argument("--quick", action="store_true", help="1 repeat, counts / 10")
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=SIZES,
        help="array sizes in bytes (default 1 KiB, 64 KiB, 1 MiB, 8 MiB)",
    )
    p.add_argument("--readers", type=lambda s: [int(x) for x in s.split(",")], default=READERS)
    p.add_argument("--only", default="", help="comma-separated contender names, or 'batches'")
    p.add_argument("--no-batches", action="store_true")
    p.add_argument(
        "--install-optional",
        action="store_true",
        help="pip install pyzmq (and faster-fifo) into benchmarks/.peers/optional first",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-save", action="store_true")
    o = p.parse_args(argv)
    if o.quick:
        o.repeats, o.scale = 1, o.scale / 10
    return o


def available(only):
    names = []
    skipped = {}
    for c in ARRAY_CONTENDERS:
        if only and c not in only:
            continue
        if c == "pysyncq pop_view" and not hasattr(PySyncQ, "pop_view"):
            skipped[c] = "this checkout has no PySyncQ.pop_view"
        elif c == "pysyncq loan" and not (
            hasattr(PySyncQ, "loan") and hasattr(PySyncQ, "pop_view")
        ):
            skipped[c] = "this checkout has no PySyncQ.loan"
        elif c == "pyzmq":
            try:
                import zmq  # noqa: F401
            except ImportError as e:
                skipped[c] = f"not importable ({e}); try --install-optional"
            else:
                names.append(c)
        else:
            names.append(c)
    return names, skipped


def fmt_size(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1024 else f"{n} B"


def ratio(a, b):
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def array_table(res, contenders, sizes, readers):
    peers_here = [c for c in PEERS if c in contenders]
    head = ["size", "readers", "contender", "MB/s per reader", "min – max"]
    head += [f"vs {p}" for p in peers_here]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * 2 + "---|" + "---:|" * (len(head) - 3)]
    for s in sizes:
        for k in readers:
            meds = {}
            for c in contenders:
                xs = res.get(f"{c}|{s}|{k}", {}).get("mb_per_s", [])
                meds[c] = quantile(xs, 0.5) if xs else None
            for c in contenders:
                xs = res.get(f"{c}|{s}|{k}", {}).get("mb_per_s", [])
                if not xs:
                    err = res.get(f"{c}|{s}|{k}", {}).get("error", "no sample")
                    lines.append(
                        f"| {fmt_size(s)} | {k} | {c} | failed: {err[:40]} | |"
                        + " |" * len(peers_here)
                    )
                    continue
                cells = [
                    fmt_size(s),
                    str(k),
                    c,
                    f"{meds[c]:,.0f}",
                    f"{min(xs):,.0f} – {max(xs):,.0f}",
                ]
                for p in peers_here:
                    cells.append(ratio(meds[c], meds[p]) if c in OURS else "")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def batch_table(res):
    lines = [
        "| 64 B messages, 1 → 1 | M per sample | msgs/s per reader | min – max | vs append+pop |",
        "|---|---:|---:|---:|---:|",
    ]
    base = res.get("append+pop", {}).get("msgs_per_s")
    base = quantile(base, 0.5) if base else None
    for mode in BATCH_M:
        xs = res.get(mode, {}).get("msgs_per_s", [])
        if not xs:
            lines.append(f"| {mode} | | failed | | |")
            continue
        med = quantile(xs, 0.5)
        lines.append(
            f"| {mode} | {res[mode]['count']:,} | {med:,.0f} | {min(xs):,.0f} – {max(xs):,.0f} "
            f"| {ratio(med, base)} |"
        )
    return "\n".join(lines)


def git_state():
    def git(*a):
        r = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": (git("status", "--porcelain") or "").splitlines(),
    }


def main(argv=None):
    o = parse_args(sys.argv[1:] if argv is None else argv)
    if o.install_optional:
        peers.install_optional()
        if peers.OPTIONAL.is_dir() and str(peers.OPTIONAL) not in sys.path:
            sys.path.insert(0, str(peers.OPTIONAL))
    only = {x.strip() for x in o.only.split(",") if x.strip()}
    rest = only - {"batches"}
    # "--only batches" alone: no array contender (available(set()) means all).
    contenders, skipped = available(rest) if rest or not only else ([], {})
    do_batches = not o.no_batches and (not only or "batches" in only)
    for c, why in skipped.items():
        print(f"skipping {c}: {why}", file=sys.stderr)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    tag0 = f"arr{os.getpid()}"
    res, batches = {}, {}
    for rep in range(o.repeats):
        for s in o.sizes:
            count = max(3, int(COUNTS.get(s, max(3, (64 << 20) // s)) * o.scale))
            for k in o.readers:
                j = (rep + s.bit_length() + k) % max(1, len(contenders))
                for c in contenders[j:] + contenders[:j]:
                    key = f"{c}|{s}|{k}"
                    r = res.setdefault(key, {"count": count, "seconds": [], "mb_per_s": []})
                    if "error" in r:
                        continue
                    tag = f"{tag0}_{len(r['seconds'])}_{s}_{k}"
                    try:
                        secs = SAMPLERS[c](s, k, count, tag)
                    except Exception as e:  # noqa: BLE001 - note it, go on with the others
                        r["error"] = f"{type(e).__name__}: {e}"
                        print(f"{key}: FAILED\n{traceback.format_exc()}", file=sys.stderr)
                        continue
                    r["seconds"].append(secs)
                    r["mb_per_s"].append(count * s / secs / 1e6)
                    print(
                        f"[{rep + 1}/{o.repeats}] {fmt_size(s):>7} x{k} {c:<17} "
                        f"{r['mb_per_s'][-1]:9.0f} MB/s",
                        file=sys.stderr,
                    )
        if do_batches:
            for mode in list(BATCH_M) if rep % 2 == 0 else list(BATCH_M)[::-1]:
                count = max(1000, int(BATCH_M[mode] * o.scale))
                r = batches.setdefault(mode, {"count": count, "msgs_per_s": []})
                if "error" in r:
                    continue
                try:
                    r["msgs_per_s"].append(batch_sample(mode, count, f"{tag0}_b{rep}"))
                except Exception as e:  # noqa: BLE001
                    r["error"] = f"{type(e).__name__}: {e}"
                    print(f"batch {mode}: FAILED\n{traceback.format_exc()}", file=sys.stderr)
                    continue
                print(
                    f"[{rep + 1}/{o.repeats}] batch {mode:<16} {r['msgs_per_s'][-1]:12,.0f} msgs/s",
                    file=sys.stderr,
                )
    elapsed = time.perf_counter() - t_start
    left = sorted(n for n in peers.shm_entries() if n.startswith(f"{peers.SHM_PREFIX}{tag0}"))
    for n in left:
        os.unlink(peers.SHM / n)
    tables = {"arrays": array_table(res, contenders, o.sizes, o.readers)}
    if do_batches:
        tables["batches"] = batch_table(batches)
    now = datetime.now()
    doc = {
        "date": now.isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "command": " ".join([sys.executable, "benchmarks/arrays.py", *(argv or sys.argv[1:])]),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(o).items()},
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "numba": __import__("numba").__version__,
            "pyzmq": _version("zmq"),
        },
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "git": git_state(),
        "contenders": contenders,
        "skipped": skipped,
        "elapsed_s": elapsed,
        "shm_left_and_removed": left,
        "arrays": res,
        "batches": batches,
        "tables": tables,
    }
    v = doc["versions"]
    print(
        f"\npython {v['python']}, numpy {v['numpy']}, numba {v['numba']}, pyzmq {v['pyzmq']}; "
        f"{doc['cpu_count']} CPUs; load average {load_before[0]:.2f} → "
        f"{doc['load_average_after'][0]:.2f}; {elapsed:.0f} s; "
        f"commit {str(doc['git']['commit'])[:7]}{' (dirty)' if doc['git']['dirty'] else ''}\n"
    )
    if contenders:
        print(
            "### Arrays: 1 writer → R readers, MB/s per reader "
            f"(median of {o.repeats}, higher is better)\n"
        )
        print(tables["arrays"] + "\n")
    if do_batches:
        print(f"### Batches (median of {o.repeats})\n\n" + tables["batches"] + "\n")
    if skipped:
        print("Skipped: " + "; ".join(f"{c} ({why})" for c, why in skipped.items()))
    if left:
        print(f"Removed leftover shared memory: {left}")
    if not o.no_save:
        o.out.mkdir(parents=True, exist_ok=True)
        host = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in socket.gethostname())
        path = o.out / f"arrays-{now:%Y%m%d-%H%M%S}-{host[:24]}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"raw results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    failed = [k for k, r in {**res, **batches}.items() if "error" in r]
    return 1 if failed else 0


def _version(mod):
    try:
        return __import__(mod).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
