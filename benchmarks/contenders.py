"""The contenders, each wrapped as one small *transport*, and the worker harness.

This module runs inside a worker interpreter (see ``peers.py``).  Every
transport has the same shape, so ``echo.py`` and ``throughput.py`` drive them
with the same loops:

* made in the parent before the children are forked;
* parent side: ``parent_open()``, ``send(type, body)`` to every child,
  ``send_stream(type, body)`` (the same, for a writer that never reads: see
  the pysyncq transport), ``recv() -> (type, body)`` from any child;
* child side: ``child_open(i)``, ``recv()`` from the parent,
  ``send(type, body)`` to the parent;
* ``child_close()``, ``parent_close()`` and ``cleanup()`` (unlink whatever is
  left, returning its names).

Types and bodies are bytes.  Every ``recv`` blocks (no polling loops).

``python contenders.py --probe`` prints what this environment imports.
"""

import argparse
import faulthandler
import gc
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import sys
import tempfile
import time

SHM_PREFIX = "pqbench_"
FOREVER = 3600.0  # for APIs that want a finite timeout; nothing here waits that long

# Message types of the protocol shared by the benchmarks.
DATA, ECHO, PING, GC, READY, START, DONE, KILL = (
    b"data",
    b"echo",
    b"ping",
    b"gc",
    b"ready",
    b"start",
    b"done",
    b"kill",
)
#: Types only the parent reads; children screen them where the queue can.
TO_PARENT = (ECHO, READY, DONE)


class PySyncQTransport:
    """pysyncq, this checkout or 0.0.1: one broadcast queue for everybody.

    Uses only the API that both versions have (``from pysyncq import pysyncq``),
    except that the parent waits for the children with ``wait_for_readers``
    where it exists and otherwise polls 0.0.1's process counter with
    ``time.sleep`` (0.0.1 misreads a queue opened after the first append).

    Every process that opened the queue is one of its readers, the writer
    too, so a writer must pop its own messages (screened, skipped) or they
    stay in the queue: ``send_stream`` appends without blocking and, when the
    queue is full, first drains its own messages and then blocks.
    """

    def __init__(self, nchildren, capacity, tag):
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

    def parent_close(self):
        self.q.close()

    def cleanup(self):
        path = os.path.join("/dev/shm", self.name)
        if os.path.exists(path):
            os.unlink(path)
            return [self.name]
        return []


def _put_kill(queues):
    """Put KILL on every per-child queue (one put API for mp.Queue and faster-fifo)."""
    for q in queues:
        try:
            q.put((KILL, b""), True, 2.0)
        except Exception:  # noqa: BLE001 - a full queue: that child gets terminated
            pass


class MPQueueTransport:
    """``multiprocessing.Queue``: one per child from the parent, one back."""

    def __init__(self, nchildren, capacity, tag, maxsize=0):
        ctx = mp.get_context("fork")
        self.out = [ctx.Queue(maxsize) for _ in range(nchildren)]
        self.back = ctx.Queue()

    def parent_open(self):
        outs = [q.put for q in self.out]
        get = self.back.get

        def send(typ, body):
            m = (typ, body)
            for put in outs:
                put(m)

        self.send = self.send_stream = send
        self.recv = get

    def child_open(self, i):
        self.recv = self.out[i].get
        put = self.back.put

        def send(typ, body):
            put((typ, body))

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

    def __init__(self, nchildren, capacity, tag):
        import faster_fifo

        self.out = [faster_fifo.Queue(max_size_bytes=capacity) for _ in range(nchildren)]
        self.back = faster_fifo.Queue(max_size_bytes=capacity)

    def parent_open(self):
        outs = [q.put for q in self.out]
        get = self.back.get

        def send(typ, body):
            m = (typ, body)
            for put in outs:
                put(m, True, FOREVER)

        def recv():
            return get(True, FOREVER)

        self.send = self.send_stream = send
        self.recv = recv

    def child_open(self, i):
        get = self.out[i].get
        put = self.back.put

        def recv():
            return get(True, FOREVER)

        def send(typ, body):
            put((typ, body), True, FOREVER)

        self.send, self.recv = send, recv

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

    Sockets are made after the fork (zmq contexts must not cross a fork).
    A SUB that has just connected misses what was published before its
    subscription arrived, so the first barrier repeats its ping until every
    child has answered (``needs_repeated_ping``).
    """

    needs_repeated_ping = True

    def __init__(self, nchildren, capacity, tag, hwm=1000):
        self.dir = tempfile.mkdtemp(prefix=f"pqbench-zmq-{tag}-")
        self.pub_addr = f"ipc://{self.dir}/pub"
        self.back_addr = f"ipc://{self.dir}/back"
        self.hwm = hwm
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

        def recv():
            return recv_multipart()

        self.send = self.send_stream = send
        self.recv = recv

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
        send_multipart, recv_multipart = push.send_multipart, sub.recv_multipart

        def send(typ, body):
            send_multipart((typ, body))

        def recv():
            return recv_multipart()

        self.send, self.recv = send, recv

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

    def child_close(self):
        self._close()

    def parent_close(self):
        self._close()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        return []


def make_transport(contender, nchildren, capacity, tag, msg_size):
    """The transport for ``contender``; ``msg_size`` sizes the bounded queues."""
    if contender in ("pysyncq", "pysyncq-0.0.1"):
        return PySyncQTransport(nchildren, capacity, tag)
    if contender == "mp.Queue":
        return MPQueueTransport(nchildren, capacity, tag, maxsize=max(2, capacity // msg_size))
    if contender == "faster-fifo":
        return FasterFifoTransport(nchildren, capacity, tag)
    if contender == "pyzmq":
        return ZmqTransport(nchildren, capacity, tag, hwm=max(2, capacity // msg_size))
    raise ValueError(f"unknown contender {contender!r}")


# -- The worker harness ------------------------------------------------------


class Barrier:
    """Parent side of the ping/gc barrier.

    The parent sends ``PING`` or ``GC`` with a sequence number; every child
    answers ``READY`` with ``b"seq child count"`` where ``count`` is how many
    ``DATA`` messages it received since the previous barrier (then resets it).
    Answers to older barriers are ignored.
    """

    def __init__(self, transport, nchildren):
        self.t = transport
        self.k = nchildren
        self.seq = 0

    def __call__(self, kind=GC, repeat=False):
        self.seq += 1
        tag = b"%d" % self.seq
        t = self.t
        counts = {}
        t.send(kind, tag)
        if kind == GC:
            gc.collect()
        while len(counts) < self.k:
            if repeat:  # pyzmq's slow joiners: resend until all have answered
                while not t.poll(50):
                    t.send(kind, tag)
            typ, body = t.recv()
            if typ != READY:
                continue
            seq, child, count = body.split()
            if seq == tag:
                counts[int(child)] = int(count)
        return [counts[i] for i in range(self.k)]


def answer_barrier(transport, typ, body, i, count):
    if typ == GC:
        gc.collect()
    transport.send(READY, b"%s %d %d" % (body, i, count))


def child_setup(transport, i):
    """First thing in a forked child: default SIGTERM, gc off, open the transport."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.disable()
    transport.child_open(i)


def start_children(target, transport, nchildren, extra=()):
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=target, args=(transport, i, *extra), name=f"child-{i}", daemon=True)
        for i in range(nchildren)
    ]
    for p in procs:
        p.start()
    return procs


def stop_children(transport, procs, clean):
    """Ask the children to leave, then join each with a timeout, terminating the stuck.

    Returns the names of children that had to be terminated or killed.
    """
    stuck = []
    if clean:
        try:
            transport.send_kill()
        except Exception as e:  # noqa: BLE001 - the joins below still run
            print(f"could not send kill: {e!r}", file=sys.stderr)
    for p in procs:
        p.join(10 if clean else 0.5)
    for p in procs:
        if p.is_alive():
            stuck.append(p.name)
            p.terminate()
            p.join(3)
        if p.is_alive():
            p.kill()
            p.join(3)
    return stuck


class Terminated(BaseException):
    pass


def _on_sigterm(signum, frame):
    raise Terminated()


def worker_args(parser):
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default=str(os.getpid()), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600, help=argparse.SUPPRESS)


def benchmark_main(parser, name, argv, body):
    """The ``main`` of a benchmark script: run it through ``run.py`` when
    called by hand, or as a worker when ``run.py`` started it."""
    args, _ = parser.parse_known_args(argv)
    if not args.worker:
        import run

        return run.main(["--only", name, *(argv if argv is not None else sys.argv[1:])])
    run_worker(args, lambda contender, tag: body(contender, tag, args))
    return 0


def run_worker(args, body):
    """Run ``body(contender, tag) -> dict`` as a worker and write its JSON.

    ``body`` owns its children and transport (and must clean them up in its
    own ``finally``); this adds a SIGTERM handler that unwinds through those
    ``finally`` blocks, a traceback dump shortly before the runner's
    timeout, and the environment description.
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    faulthandler.dump_traceback_later(max(5.0, args.timeout - 15), exit=False)
    mp.set_start_method("fork", force=True)
    result = {"contender": args.contender, "env": describe()}
    try:
        result.update(body(args.contender, args.tag))
        result["ok"] = True
    finally:
        faulthandler.cancel_dump_traceback_later()
        if args.out and result.get("ok"):
            with open(args.out, "w") as f:
                json.dump(result, f)


def describe():
    import pysyncq

    try:
        from importlib.metadata import version

        pqv = version("pysyncq")
    except Exception:  # noqa: BLE001
        pqv = getattr(pysyncq, "__version__", None)
    d = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "pysyncq_file": pysyncq.__file__,
        "pysyncq_version": getattr(pysyncq, "__version__", None) or pqv,
        "numba": None,
        "numpy": None,
    }
    for mod in ("numba", "numpy"):
        try:
            d[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return d


def probe():
    import pysyncq

    optional = {}
    for mod in ("faster_fifo", "zmq"):
        try:
            __import__(mod)
            optional[mod] = None
        except Exception as e:  # noqa: BLE001
            optional[mod] = f"{type(e).__name__}: {e}"
    return {"pysyncq_file": pysyncq.__file__, "optional": optional}


def quantile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(probe()))
    else:
        sys.exit("usage: contenders.py --probe")
