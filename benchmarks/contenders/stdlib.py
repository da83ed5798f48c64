"""The standard library's ways: ``multiprocessing.Pipe``, ``multiprocessing.Queue``,
``multiprocessing.shared_memory``."""

import multiprocessing as mp
import multiprocessing.connection as mpc
import select
import sys
import time
from collections import deque
from multiprocessing import resource_tracker, shared_memory

import numpy as np
from harness import FOREVER, KILL, SHM_PREFIX

from . import ArrayContender, Mesh, Transport

#: Every protocol type as one byte, for the transports that frame bytes.
TYPES = [b"data", b"echo", b"ping", b"gc", b"ready", b"start", b"done", b"kill"]
CODE = {t: bytes([i]) for i, t in enumerate(TYPES)}


# -- Star: echo, fanout ---------------------------------------------------------------


class PipesBack:
    """Children -> parent over one ``multiprocessing.Pipe`` per child, the
    parent reading whichever is ready (one ``poll`` object, made once)."""

    def _make_back(self, k):
        self.back = [mp.Pipe(duplex=False) for _ in range(k)]  # (reader, writer)

    def _open_back_parent(self):
        self.readers = {r.fileno(): r for r, _ in self.back}
        self.poller = select.poll()
        for fd in self.readers:
            self.poller.register(fd, select.POLLIN)
        pending = deque()
        readers, poll = self.readers, self.poller.poll

        def recv():
            while not pending:
                events = poll(FOREVER * 1000)
                for fd, _ in events:
                    b = readers[fd].recv_bytes()
                    pending.append((TYPES[b[0]], memoryview(b)[1:]))
            return pending.popleft()

        self.recv = recv

    def poll(self, timeout_ms):
        return bool(self.poller.poll(timeout_ms))

    def _open_back_child(self, i):
        send_bytes = self.back[i][1].send_bytes
        code = CODE

        def send(typ, body):
            send_bytes(code[typ] + body)

        self.send = send


class PipeTransport(PipesBack, Transport):
    """``multiprocessing.Pipe``: one (one-way) per child from the parent, one per
    child back.  A message is one ``send_bytes`` of a type byte + the body
    (bytes concatenation: one copy); a received body is a memoryview of it;
    the parent reads the children through one ``select.poll``."""

    name = "Pipe"
    counts = {"echo": 5000, "fanout": 40000}

    def __init__(self, nchildren, capacity, tag, msg_size):
        self.k = nchildren
        self.out = [mp.Pipe(duplex=False) for _ in range(nchildren)]
        self._make_back(nchildren)

    def parent_open(self):
        sends = [w.send_bytes for _, w in self.out]
        code = CODE

        def send(typ, body):
            frame = code[typ] + body
            for s in sends:
                s(frame)

        self.send = self.send_stream = send
        self._open_back_parent()

    def child_open(self, i):
        recv_bytes = self.out[i][0].recv_bytes

        def recv():
            b = recv_bytes()
            return TYPES[b[0]], memoryview(b)[1:]

        self.recv = recv
        self._open_back_child(i)

    def send_kill(self):
        for _, w in self.out:
            w.send_bytes(CODE[KILL])

    def child_close(self):
        pass

    parent_close = child_close

    def cleanup(self):
        return []


def put_kill(queues):
    for q in queues:
        try:
            q.put((KILL, b""), True, 2.0)
        except Exception:  # noqa: BLE001 - a full queue: that child gets terminated
            pass


class MPQueueTransport(Transport):
    """``multiprocessing.Queue``: one per child from the parent (bounded like
    the ring), one back."""

    name = "mp.Queue"
    counts = {"echo": 2500, "fanout": 20000}

    def __init__(self, nchildren, capacity, tag, msg_size):
        ctx = mp.get_context("fork")
        maxsize = max(2, capacity // msg_size)
        self.out = [ctx.Queue(maxsize) for _ in range(nchildren)]
        self.back = ctx.Queue()

    def parent_open(self):
        outs = [q.put for q in self.out]

        def send(typ, body):
            m = (typ, body)
            for put in outs:
                put(m, True, FOREVER)

        self.send = self.send_stream = send
        self.recv = self.back.get

    def child_open(self, i):
        self.recv = self.out[i].get
        put = self.back.put

        def send(typ, body):
            put((typ, bytes(body)))

        self.send = send

    def send_kill(self):
        put_kill(self.out)

    def child_close(self):
        self.back.close()
        self.back.join_thread()

    def parent_close(self):
        for q in [*self.out, self.back]:
            q.cancel_join_thread()
            q.close()

    def cleanup(self):
        return []


# -- Mesh: alltoall -------------------------------------------------------------------


class PipeMesh(Mesh):
    """``multiprocessing.Pipe`` between every pair of peers (duplex); a peer
    sends one ``send_bytes`` to each other peer and reads whichever is ready
    (one ``poll`` object)."""

    name = "Pipe"
    counts = {"alltoall": 20000}

    def __init__(self, n, capacity, tag):
        self.n = n
        self.pairs = {(i, j): mp.Pipe() for i in range(n) for j in range(i + 1, n)}

    def open(self, i):
        conns = []
        for (a, b), (ca, cb) in self.pairs.items():
            if a == i:
                conns.append(ca)
            elif b == i:
                conns.append(cb)
        by_fd = {c.fileno(): c for c in conns}
        poller = select.poll()
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        sends = [c.send_bytes for c in conns]
        pending = deque()
        poll = poller.poll

        def fill(timeout_ms):
            for fd, _ in poll(timeout_ms):
                pending.append(by_fd[fd].recv_bytes())

        def send(body):
            for s in sends:
                s(body)
            return True

        def recv_nowait():
            if not pending:
                fill(0)
            return pending.popleft() if pending else None

        def recv(timeout):
            if not pending:
                fill(int(timeout * 1000))
                if not pending:
                    raise TimeoutError("Pipe mesh: nothing came")
            return pending.popleft()

        self.send, self.recv_nowait, self.recv = send, recv_nowait, recv

    def close(self):
        pass

    def cleanup(self):
        return []


# -- Arrays ------------------------------------------------------------------------------


def _mpqueue_reader(inq, i, count, n, ready, out):
    A = ArrayContender
    ready.wait(A.TIMER)
    bad = 0
    get = inq.get
    warm = A.warm_for(8 * n)
    for j in range(warm + count):
        if j == warm:
            t_warm = time.perf_counter()
        if not A.check(get(timeout=A.TIMER), n):
            bad += 1
    A.report(out, i, time.perf_counter(), bad, t_warm)


class MPQueueArrays(ArrayContender):
    """One ``multiprocessing.Queue`` per reader (it pickles the array), bounded
    like the ring."""

    name = "mp.Queue"

    def sample(self, size, k, count, tag):
        src = self.source(size)
        qs = [self.CTX.Queue(maxsize=max(2, self.ring_bytes(size) // size)) for _ in range(k)]
        try:

            def targets(ready):
                return [(_mpqueue_reader, (qs[i], i, count, src.size, ready)) for i in range(k)]

            def send():
                puts = [q.put for q in qs]
                for _ in range(self.warm_for(size) + count):
                    for put in puts:
                        put(src, timeout=self.TIMER)

            return self.run_readers(targets, send, k)
        finally:
            for q in qs:
                q.close()
                q.join_thread()


def _pipe_reader(conn, i, count, n, ready, out):
    A = ArrayContender
    ready.wait(A.TIMER)
    bad = 0
    warm = A.warm_for(8 * n)
    for j in range(warm + count):
        if j == warm:
            t_warm = time.perf_counter()
        if not conn.poll(A.TIMER):
            raise TimeoutError("pipe reader waited too long")
        dt, length = A.HEADER.unpack(conn.recv_bytes())
        arr = np.frombuffer(conn.recv_bytes(), np.dtype(dt.rstrip(b"\0").decode()))
        if arr.size != length or not A.check(arr, n):
            bad += 1
    A.report(out, i, time.perf_counter(), bad, t_warm)


class PipeArrays(ArrayContender):
    """One ``Pipe`` per reader: ``send_bytes`` of a small dtype/shape header,
    then ``send_bytes`` of the array's buffer; the reader rebuilds it with
    ``np.frombuffer``."""

    name = "mp.Pipe"

    def sample(self, size, k, count, tag):
        src = self.source(size)
        pipes = [self.CTX.Pipe(duplex=False) for _ in range(k)]
        try:

            def targets(ready):
                return [(_pipe_reader, (pipes[i][0], i, count, src.size, ready)) for i in range(k)]

            def send():
                head = self.HEADER.pack(src.dtype.str.encode(), src.size)
                buf = memoryview(src).cast("B")
                ends = [w for _, w in pipes]
                for _ in range(self.warm_for(size) + count):
                    for w in ends:
                        w.send_bytes(head)
                        w.send_bytes(buf)

            return self.run_readers(targets, send, k)
        finally:
            for r, w in pipes:
                r.close()
                w.close()


def _attach(name):
    """Attach to the writer's block.  Before Python 3.13 attaching registers
    the block with the resource tracker, which would unlink it when this
    process ends; the readers here are forked after the writer started its
    tracker, and share it, where the name is registered already (a set), so
    nothing more is needed.  A spawned reader would have to ``unregister`` it."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    return shared_memory.SharedMemory(name)


def _shm_reader(conn, i, count, n, ready, out):
    A = ArrayContender
    ready.wait(A.TIMER)
    bad = 0
    warm = A.warm_for(8 * n)
    for j in range(warm + count):
        if j == warm:
            t_warm = time.perf_counter()
        if not conn.poll(A.TIMER):
            raise TimeoutError("shared_memory reader waited too long")
        name, dt, shape = conn.recv()
        shm = _attach(name)
        try:
            arr = np.ndarray(shape, np.dtype(dt), buffer=shm.buf).copy()
        finally:
            shm.close()
        conn.send(name)
        if not A.check(arr, n):
            bad += 1
    A.report(out, i, time.perf_counter(), bad, t_warm)


class SharedMemoryArrays(ArrayContender):
    """What a careful user writes today: one ``multiprocessing.shared_memory``
    block per array, its name, dtype and shape sent on a ``Pipe`` per reader;
    each reader attaches, copies the array out, detaches and acknowledges; the
    writer unlinks a block once every reader has acknowledged it, and keeps at
    most as many blocks in flight as the ring holds arrays."""

    name = "shared_memory"

    def sample(self, size, k, count, tag):
        src = self.source(size)
        pipes = [self.CTX.Pipe() for _ in range(k)]
        window = max(1, self.ring_bytes(size) // size)
        live = {}  # name -> (SharedMemory, acks so far)
        timer = self.TIMER

        def targets(ready):
            return [(_shm_reader, (pipes[i][1], i, count, src.size, ready)) for i in range(k)]

        conns = [c for c, _ in pipes]

        def collect(block):
            """Take in the acknowledgements there are (with ``block``, wait for
            at least one), unlinking the blocks every reader is done with."""
            ready = mpc.wait(conns, timer if block else 0)
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
            for j in range(self.warm_for(size) + count):
                while len(live) >= window:
                    collect(True)
                shm = shared_memory.SharedMemory(f"{SHM_PREFIX}{tag}_{j}", True, size)
                np.ndarray(src.shape, src.dtype, buffer=shm.buf)[...] = src
                live[shm.name] = (shm, 0)
                for c, _ in pipes:
                    c.send((shm.name, src.dtype.str, src.shape))
                collect(False)

        # Start the tracker before the readers are forked, so that they share it.
        resource_tracker.ensure_running()
        try:
            return self.run_readers(targets, send, k)
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
