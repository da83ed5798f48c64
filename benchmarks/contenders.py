"""The contenders: each one a plain class, one *transport* or one *mesh*.

A **transport** (star: one parent, K children; ``echo.py``, ``fanout.py``):

* made in the parent before the children are forked;
* parent: ``parent_open()``, ``send(type, body)`` to every child,
  ``send_stream(type, body)`` (the same, for a writer that never reads: see
  pysyncq), ``recv() -> (type, body)`` from any child, ``send_kill()``;
* child ``i``: ``child_open(i)``, ``recv()`` from the parent, ``send(type,
  body)`` to the parent;
* ``child_close()``, ``parent_close()``, ``cleanup()`` (unlink whatever is
  left, returning its names).

A **mesh** (``alltoall.py``: N peers, each sends to all others): made before
the fork; in peer ``i``: ``open(i)``, ``send(body) -> bool`` (False: full,
drain and try again), ``recv_nowait() -> body or None``, ``recv(timeout) ->
body`` (raises ``TimeoutError``), ``close()``; in the parent ``cleanup()``.

Types and bodies are bytes (a body may come back as a memoryview).  Every
blocking call blocks (no busy polling loops) except the copy reference's,
which spins with ``sched_yield`` and then sleeps, and every one of them has a
deadline.  ``TRANSPORTS`` and ``MESHES`` map the names to the classes.
"""

import multiprocessing as mp
import os
import select
import shutil
import tempfile
import time
from collections import deque
from multiprocessing import shared_memory

from harness import FOREVER, KILL, SHM_PREFIX, TO_PARENT

#: Every protocol type as one byte, for the transports that frame bytes.
_TYPES = [b"data", b"echo", b"ping", b"gc", b"ready", b"start", b"done", b"kill"]
_CODE = {t: bytes([i]) for i, t in enumerate(_TYPES)}


def _wait_for(cond, deadline, what):
    """Spin with ``sched_yield`` for a while, then sleep in growing steps, until
    ``cond()``; raise ``TimeoutError`` at ``deadline`` (a monotonic time)."""
    for _ in range(200):
        if cond():
            return
        os.sched_yield()
    nap = 1e-5
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"copy-ring: gave up waiting for {what}")
        time.sleep(nap)
        nap = min(nap * 2, 1e-3)


class PySyncQTransport:
    """pysyncq, this checkout or 0.0.1: one broadcast queue for everybody.

    Uses only the API both versions have (``from pysyncq import pysyncq``),
    except that the parent waits for the children with ``wait_for_readers``
    where it exists and otherwise polls 0.0.1's process counter.  Every
    process that opened the queue is one of its readers, the writer too, so
    ``send_stream`` appends without blocking and, when the queue is full,
    drains its own (screened) messages and then blocks.
    """

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


class _PipesBack:
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
                    pending.append((_TYPES[b[0]], memoryview(b)[1:]))
            return pending.popleft()

        self.recv = recv

    def poll(self, timeout_ms):
        return bool(self.poller.poll(timeout_ms))

    def _open_back_child(self, i):
        send_bytes = self.back[i][1].send_bytes
        code = _CODE

        def send(typ, body):
            send_bytes(code[typ] + body)

        self.send = send


class PipeTransport(_PipesBack):
    """``multiprocessing.Pipe``: one (one-way) per child from the parent, one per
    child back.  A message is one ``send_bytes`` of a type byte + the body
    (bytes concatenation: one copy); a received body is a memoryview of it."""

    def __init__(self, nchildren, capacity, tag, msg_size):
        self.k = nchildren
        self.out = [mp.Pipe(duplex=False) for _ in range(nchildren)]
        self._make_back(nchildren)

    def parent_open(self):
        sends = [w.send_bytes for _, w in self.out]
        code = _CODE

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
            return _TYPES[b[0]], memoryview(b)[1:]

        self.recv = recv
        self._open_back_child(i)

    def send_kill(self):
        for _, w in self.out:
            w.send_bytes(_CODE[KILL])

    def child_close(self):
        pass

    parent_close = child_close

    def cleanup(self):
        return []


class CopyRingTransport(_PipesBack):
    """The copy reference: a lock-free broadcast ring in shared memory.

    ``nslots`` fixed-size slots; the writer waits until the slowest reader has
    freed the slot, copies the body in (one memcpy, a memoryview slice
    assignment), then stores the write counter; reader ``i`` waits for the
    counter, copies the body out (one memcpy, ``bytes(slice)``) and stores its
    own read counter.  Every counter has one writer and its own cache line;
    waits spin with ``sched_yield`` and then sleep (no futex).  Plain Python
    stores in program order, which x86's memory model keeps in order: an
    honest reference for x86 only.  Control messages back to the parent go
    over a Pipe per child (``_PipesBack``); it is meant for ``fanout.py``.
    """

    LINE = 8  # int64 words per cache line

    def __init__(self, nchildren, capacity, tag, msg_size):
        self.k = nchildren
        self.slot = (16 + max(msg_size, 64) + 63) & ~63
        self.nslots = max(4, capacity // self.slot)
        ctrl = 8 * self.LINE * (nchildren + 1)
        self.data_at = ctrl + 64 * self.nslots  # slot meta: len, type code
        self.shm = shared_memory.SharedMemory(
            f"{SHM_PREFIX}{tag}_ring", create=True, size=self.data_at + self.slot * self.nslots
        )
        self._make_back(nchildren)

    def _views(self):
        buf = self.shm.buf
        words = buf[: self.data_at].cast("q")
        return buf, words

    def parent_open(self):
        buf, w = self._views()
        L, k, nslots, slot, data_at = self.LINE, self.k, self.nslots, self.slot, self.data_at
        ctrl_end = L * (k + 1)
        code = {t: i for i, t in enumerate(_TYPES)}
        state = {"seq": 0}

        def send(typ, body):
            seq = state["seq"]
            if seq - min(w[L * (i + 1)] for i in range(k)) >= nslots:
                _wait_for(
                    lambda: seq - min(w[L * (i + 1)] for i in range(k)) < nslots,
                    time.monotonic() + 60,
                    "space",
                )
            s = seq % nslots
            n = len(body)
            at = data_at + s * slot
            buf[at : at + n] = body
            w[ctrl_end + 8 * s] = n
            w[ctrl_end + 8 * s + 1] = code[typ]
            state["seq"] = w[0] = seq + 1

        self.send = self.send_stream = send
        self._open_back_parent()

    def child_open(self, i):
        buf, w = self._views()
        L, nslots, slot, data_at = self.LINE, self.nslots, self.slot, self.data_at
        mine = L * (i + 1)
        ctrl_end = L * (self.k + 1)
        types = _TYPES
        state = {"seq": w[mine]}

        def recv():
            seq = state["seq"]
            if w[0] <= seq:
                _wait_for(lambda: w[0] > seq, time.monotonic() + FOREVER, "data")
            s = seq % nslots
            n = w[ctrl_end + 8 * s]
            typ = types[w[ctrl_end + 8 * s + 1]]
            at = data_at + s * slot
            body = bytes(buf[at : at + n])
            state["seq"] = w[mine] = seq + 1
            return typ, body

        self.recv = recv
        self._open_back_child(i)

    def send_kill(self):
        self.send(KILL, b"")

    def child_close(self):
        self.recv = self.send = None
        try:
            self.shm.close()
        except BufferError:
            pass

    def parent_close(self):
        self.send = self.send_stream = None
        try:
            self.shm.close()
        except BufferError:
            pass

    def cleanup(self):
        try:
            self.shm.unlink()
            return []
        except FileNotFoundError:
            return []


def _put_kill(queues):
    for q in queues:
        try:
            q.put((KILL, b""), True, 2.0)
        except Exception:  # noqa: BLE001 - a full queue: that child gets terminated
            pass


class MPQueueTransport:
    """``multiprocessing.Queue``: one per child from the parent, one back."""

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
        _put_kill(self.out)

    def child_close(self):
        self.back.close()
        self.back.join_thread()

    def parent_close(self):
        for q in [*self.out, self.back]:
            q.cancel_join_thread()
            q.close()

    def cleanup(self):
        return []


class FasterFifoTransport:
    """faster-fifo: one ``faster_fifo.Queue`` per child, one back (pickled items)."""

    def __init__(self, nchildren, capacity, tag, msg_size):
        import faster_fifo

        size = max(capacity, 4 * msg_size)
        self.out = [faster_fifo.Queue(max_size_bytes=size) for _ in range(nchildren)]
        self.back = faster_fifo.Queue(max_size_bytes=size)

    def parent_open(self):
        outs = [q.put for q in self.out]
        get = self.back.get

        def send(typ, body):
            m = (typ, body)
            for put in outs:
                put(m, True, FOREVER)

        self.send = self.send_stream = send
        self.recv = lambda: get(True, FOREVER)

    def child_open(self, i):
        get = self.out[i].get
        put = self.back.put

        def send(typ, body):
            put((typ, bytes(body)), True, FOREVER)

        self.send = send
        self.recv = lambda: get(True, FOREVER)

    def send_kill(self):
        _put_kill(self.out)

    def child_close(self):
        pass

    def parent_close(self):
        for q in [*self.out, self.back]:
            q.close()

    def cleanup(self):
        return []


class ZmqTransport:
    """pyzmq: XPUB (no-drop, so a full subscriber blocks the sender) to SUBs
    over ``ipc://``, PUSH from every child to one PULL in the parent.

    Sockets are made after the fork.  A SUB that has just connected misses
    what was published before its subscription arrived, so the first barrier
    repeats its ping until every child has answered (``needs_repeated_ping``).
    """

    needs_repeated_ping = True

    def __init__(self, nchildren, capacity, tag, msg_size):
        self.dir = tempfile.mkdtemp(prefix=f"pqbench-zmq-{tag}-")
        self.pub_addr = f"ipc://{self.dir}/pub"
        self.back_addr = f"ipc://{self.dir}/back"
        self.hwm = max(2, capacity // msg_size)
        self.ctx = None
        self.socks = []

    def _socket(self, kind):
        import zmq

        if self.ctx is None:
            self.ctx = zmq.Context()
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        self.socks.append(s)
        return s

    def parent_open(self):
        import zmq

        pub = self._socket(zmq.XPUB)
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.SNDHWM, self.hwm)
        pub.bind(self.pub_addr)
        pull = self._socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 0)
        pull.bind(self.back_addr)
        send_multipart, recv_multipart = pub.send_multipart, pull.recv_multipart
        self.pull = pull

        def send(typ, body):
            send_multipart((typ, body), copy=len(body) < 4096)

        self.send = self.send_stream = send
        self.recv = recv_multipart

    def poll(self, timeout_ms):
        return self.pull.poll(timeout_ms)

    def child_open(self, i):
        import zmq

        sub = self._socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self.hwm)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.pub_addr)
        push = self._socket(zmq.PUSH)
        push.connect(self.back_addr)
        send_multipart = push.send_multipart

        def send(typ, body):
            send_multipart((typ, body), copy=len(body) < 4096)

        self.send, self.recv = send, sub.recv_multipart

    def send_kill(self):
        import zmq

        self.socks[0].send_multipart((KILL, b""), zmq.NOBLOCK)

    def _close(self):
        for s in self.socks:
            s.close(0)
        self.socks = []
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None

    child_close = parent_close = _close

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        return []


#: Transport classes by contender name, in table order.
TRANSPORTS = {
    "pysyncq": PySyncQTransport,
    "pysyncq-0.0.1": PySyncQTransport,
    "Pipe": PipeTransport,
    "mp.Queue": MPQueueTransport,
    "faster-fifo": FasterFifoTransport,
    "pyzmq": ZmqTransport,
    "copy-ring": CopyRingTransport,
}


# -- Meshes: every peer sends to every other ---------------------------------------


class PySyncQMesh:
    """One pysyncq queue; every peer appends and pops (its own messages are
    screened by ``open``'s default ``filtself``).  ``send`` appends without
    blocking and answers False when the queue is full."""

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


class ZmqMesh:
    """pyzmq: every peer binds a PUB (no high-water mark: nothing dropped, a
    send never blocks) and connects one SUB to every other PUB.  ``open``
    says hello until it has heard every other peer (slow joiners); the
    receive side drops the hellos."""

    def __init__(self, n, capacity, tag):
        self.n = n
        self.dir = tempfile.mkdtemp(prefix=f"pqbench-zmq-{tag}-")

    def open(self, i):
        import zmq

        self.ctx = zmq.Context()
        pub = self.ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(f"ipc://{self.dir}/p{i}")
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        for j in range(self.n):
            if j != i:
                sub.connect(f"ipc://{self.dir}/p{j}")
        self.socks = (pub, sub)
        heard, deadline = set(), time.monotonic() + 30
        while len(heard) < self.n - 1:
            if time.monotonic() > deadline:
                raise TimeoutError("pyzmq mesh: peers did not connect")
            pub.send(b"h%d" % i)
            while sub.poll(5):
                m = sub.recv()
                if m[:1] == b"h":
                    heard.add(m)
        # Keep saying hello for a moment: the others may not have heard us yet.
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            pub.send(b"h%d" % i)
            time.sleep(0.01)
        again, send, recv, poll = zmq.Again, pub.send, sub.recv, sub.poll
        noblock = zmq.NOBLOCK

        def send_(body):
            send(body, copy=True)
            return True

        def recv_nowait():
            while True:
                try:
                    m = recv(noblock)
                except again:
                    return None
                if m[:1] != b"h":
                    return m

        def recv_(timeout):
            while True:
                if not poll(int(timeout * 1000)):
                    raise TimeoutError("pyzmq mesh: nothing came")
                m = recv()
                if m[:1] != b"h":
                    return m

        self.send, self.recv_nowait, self.recv = send_, recv_nowait, recv_

    def close(self):
        for s in self.socks:
            s.close(0)
        self.ctx.term()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        return []


class PipeMesh:
    """``multiprocessing.Pipe`` between every pair of peers (duplex); a peer
    sends one ``send_bytes`` to each other peer and reads whichever is ready
    (one ``poll`` object).  Bodies must not start with b"h" (unused here)."""

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


MESHES = {
    "pysyncq": PySyncQMesh,
    "pysyncq-batch": PySyncQBatchMesh,
    "Pipe": PipeMesh,
    "pyzmq": ZmqMesh,
}
