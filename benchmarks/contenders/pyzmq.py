"""pyzmq (optional: ``run.py --install-optional`` puts it in ``benchmarks/.peers/optional``)."""

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import KILL

from . import ArrayContender, Link, Mesh, Transport


class _Zmq:
    requires = ("zmq",)
    pip = ("pyzmq",)


# -- Star: echo, fanout -----------------------------------------------------------------


class ZmqTransport(_Zmq, Transport):
    """XPUB (``XPUB_NODROP``, so a full subscriber blocks the sender; high-water
    mark 4 MiB / message size) to one SUB per child over ``ipc://``, PUSH from
    every child to one PULL in the parent; a message is ``send_multipart`` of
    (type, body), zero-copy from 4 KiB.

    Sockets are made after the fork.  A SUB that has just connected misses
    what was published before its subscription arrived, so the first barrier
    repeats its ping until every child has answered (``needs_repeated_ping``).
    """

    name = "pyzmq"
    needs_repeated_ping = True
    counts = {"echo": 2000, "fanout": 60000}

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


# -- Mesh: alltoall ---------------------------------------------------------------------


class ZmqMesh(_Zmq, Mesh):
    """Every peer binds a PUB (no high-water mark: nothing dropped, a send
    never blocks; one frame a message) and connects one SUB to every other
    PUB.  ``open`` says hello until it has heard every other peer (slow
    joiners); the receive side drops the hellos."""

    name = "pyzmq"
    counts = {"alltoall": 30000}

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


# -- Arrays ------------------------------------------------------------------------------


def _zmq_reader(addr, hwm, i, count, n, ready, out):
    import zmq

    A = ArrayContender
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, hwm)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(addr)
    bad = 0
    warm = A.warm_for(8 * n)
    try:
        ready.wait(A.TIMER)
        for j in range(warm + count):
            if j == warm:
                t_warm = time.perf_counter()
            if not sub.poll(int(A.TIMER * 1000)):
                raise TimeoutError("zmq reader waited too long")
            head, data = sub.recv_multipart(copy=False)
            dt, length = A.HEADER.unpack(head.bytes)
            arr = np.frombuffer(data.buffer, np.dtype(dt.rstrip(b"\0").decode()))
            if arr.size != length or not A.check(arr, n):
                bad += 1
        A.report(out, i, time.perf_counter(), bad, t_warm)
    finally:
        sub.close(0)
        ctx.term()


class ZmqArrays(_Zmq, ArrayContender):
    """XPUB (no-drop, bounded like the ring) to one SUB per reader over
    ``ipc://``, ``send_multipart([header, array], copy=False)``, received with
    ``copy=False`` and viewed with ``np.frombuffer`` (its readers view the
    frame, they do not copy it)."""

    name = "pyzmq"

    def sample(self, size, k, count, tag):
        import zmq

        src = self.source(size)
        folder = tempfile.mkdtemp(prefix=f"pqbench-arrays-{tag}-")
        addr = f"ipc://{folder}/pub"
        hwm = max(2, self.ring_bytes(size) // size)
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
                return [(_zmq_reader, (addr, hwm, i, count, src.size, ready)) for i in range(k)]

            def send():
                head = self.HEADER.pack(src.dtype.str.encode(), src.size)
                for _ in range(self.warm_for(size) + count):
                    pub.send_multipart([head, src], copy=False)

            seen = []

            def send_after_subscriptions():
                while len(seen) < k:
                    if not pub.poll(int(self.TIMER * 1000)):
                        raise TimeoutError("zmq subscribers did not subscribe")
                    seen.append(pub.recv())
                send()

            # Subscriptions arrive after the readers connect, which they do before
            # the barrier: receiving them is part of the (negligible) first send.
            return self.run_readers(targets, send_after_subscriptions, k)
        finally:
            pub.close(0)
            ctx.term()
            for f in Path(folder).glob("*"):
                f.unlink()
            os.rmdir(folder)


# -- Link: over tcp, for the bridge ---------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_writer(port, size, n, pause, ready):
    import zmq

    stamp = Link.STAMP
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUB)
    s.setsockopt(zmq.SNDHWM, 0)
    s.bind(f"tcp://127.0.0.1:{port}")
    while not ready.is_set():  # until the subscriber hears us (slow joiner)
        s.send(b"s")
        time.sleep(0.005)
    pad = bytes(size - stamp.size)
    for _ in range(n):
        s.send(b"m" + stamp.pack(time.perf_counter()) + pad)
        if pause:
            time.sleep(pause)
    s.close(linger=10000)
    ctx.term()


def _tcp_reader(port, n, ready, out):
    import zmq

    stamp = Link.STAMP
    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(f"tcp://127.0.0.1:{port}")
    s.setsockopt(zmq.RCVTIMEO, 60000)
    lat = []
    while len(lat) < n:
        try:
            m = s.recv()
        except zmq.Again:
            out.send(("error", "timed out"))
            return
        now = time.perf_counter()
        if m[:1] == b"s":
            ready.set()
            continue
        lat.append(now - stamp.unpack_from(m, 1)[0])
    out.send(("ok", now, lat))
    s.close(linger=0)
    ctx.term()


class ZmqTcpLink(_Zmq, Link):
    """A PUB socket bound on ``tcp://127.0.0.1`` and one SUB (high-water marks
    off, so nothing is dropped): what a user joining hosts with pyzmq writes."""

    name = "pyzmq"

    def open(self, tag):
        import zmq

        return {"pyzmq": f"{zmq.__version__} (libzmq {zmq.zmq_version()})"}

    def sample(self, size, n, pause):
        ctx = self.CTX
        ready = ctx.Event()
        rx, tx = ctx.Pipe(duplex=False)
        port = _free_port()
        reader = ctx.Process(target=_tcp_reader, args=(port, n, ready, tx))
        writer = ctx.Process(target=_tcp_writer, args=(port, size, n, pause, ready))
        reader.start()
        writer.start()
        ready.wait(30)
        t0 = time.perf_counter()
        return self.collect(rx, (writer, reader), t0, f"pyzmq {size} B")
