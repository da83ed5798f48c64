"""A group of worker processes on one queue, as short to use as ``multiprocessing.Pool``.

::

    def work(q, index):                     # q: this worker's opened handle
        for sender, mtype, body in q(block=True, timer=None):
            ...

    with Workers(work, 4) as q:             # q: the parent's opened handle
        q.append("task", ...)
        ... q.pop(block=True, timer=None) ...

``Workers`` makes the queue, starts ``n`` processes that each open it
(``follow=True``) and call ``target(q, index, *args)``, opens the parent's
handle and waits until every worker has opened (so that none misses a message).

* A worker's exception reaches the parent as that exception, with the
  worker's formatted traceback chained as its ``__cause__`` (as
  ``concurrent.futures`` does): raised by a blocked pop or write of the
  parent's handle (the workers are its default ``processes=``), else on
  leaving the block.  A worker that dies without a traceback (killed by a
  signal, ``os._exit``) gives ``ChildExited`` naming its exit code.
* Leaving the block -- normally, by an exception, by Ctrl-C -- closes the
  parent's handle (the workers, following it, get ``QueueClosed`` at their
  next call of the queue: a normal end), waits up to ``timeout`` seconds for
  them, then terminates and at last kills what is left, and removes the queue.
* Workers ignore SIGINT (``sigint=False``, the default): a Ctrl-C or a
  notebook interrupt goes to the whole process group, and the parent decides
  what happens to its workers.

For the commonest case, a function over a list, :meth:`Workers.map` is
``Pool.map``: ``results = Workers.map(simulate, grid, 4)``.
"""

import multiprocessing
import multiprocessing.connection
import pickle
import signal
import sys
import time
import traceback

from ._args import check_int, check_timer
from ._lifecycle import remove
from ._status import process_exited
from ._wait import CPUS, TICK
from .errors import ChildExited, QueueClosed, QueueExists
from .queue import DEFAULT_SIZE, PySyncQ

#: Seconds for the workers to end by themselves on leaving the block, by default.
STOP_TIMEOUT = 5.0
#: Seconds for the workers to start and open the queue, by default.
START_TIMEOUT = 60.0


#: What a worker sends through its pipe once it has opened the queue.
OPENED = "opened"


class RemoteTraceback(Exception):
    """A worker's traceback, as text: the ``__cause__`` of its exception."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


def _work(target, q, index, args, errors, sigint):
    """A worker's body: open, run the target, report an exception."""
    if not sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with q.open(f"worker-{index}", follow=True):
            errors.send(OPENED)
            target(q, index, *args)
    except QueueClosed:
        pass  # the parent has left the block: the normal end of a worker
    except BaseException as e:  # noqa: BLE001 (reported to the parent)
        tb = "".join(traceback.format_exception(e))
        try:
            errors.send((e, tb))
        except Exception:  # noqa: BLE001 (an exception that does not pickle)
            errors.send((None, tb))
        errors.close()
        sys.exit(1)


def _map_worker(q, index, n, fn):
    """A worker of :meth:`Workers.map`: ``fn`` over the tasks sent to it
    (type ``t<index>``: the others' are screened out by the kernel)."""
    q.scrntype.update(["r", *(f"t{i}" for i in range(n) if i != index)])
    for _, mtype, body in q(block=True, timer=None, decode=False):
        if mtype == b"end":
            return
        i, item = pickle.loads(body)
        result = pickle.dumps((i, fn(item), index), pickle.HIGHEST_PROTOCOL)
        q.append("r", result, block=True, timer=None)


def _map_parent(q, n, items):
    """The parent's side of :meth:`Workers.map`: each worker is kept ``AHEAD``
    tasks ahead; a result from one is the signal to send it the next (so
    that faster workers take more, as ``Pool``'s do)."""
    items = enumerate(items)
    out = {}
    sent = 0

    def send(w):
        nonlocal sent
        for i, item in items:  # the next item, if there is one
            q.append(
                f"t{w}", pickle.dumps((i, item), pickle.HIGHEST_PROTOCOL), block=True, timer=None
            )
            sent += 1
            return

    for _ in range(AHEAD):
        for w in range(n):
            send(w)
    while len(out) < sent:
        got = q.pop(block=True, timer=TICK, decode=False)
        if got is None:
            _all_running(q)
            continue
        i, result, w = pickle.loads(got[2])
        out[i] = result
        send(w)
    q.append("end", block=True, timer=None)
    return [out[i] for i in range(sent)]


def _all_running(q):
    """While results are outstanding every worker must run: one that has
    ended, even with exit code 0 (``os._exit(0)`` in ``fn``), never sends
    its results (one that failed is reported by the pop itself)."""
    for p in q._procs:
        if p.exitcode is not None:
            raise ChildExited(f"{process_exited(p)}, a worker of Workers.map, before its results")


#: Tasks of Workers.map sent to each worker before its first result.
AHEAD = 2


class Workers:
    """``with Workers(target, n, args=()) as q:`` runs ``target(q, index, *args)``
    in ``n`` processes on one new queue; ``q`` is the parent's opened handle.

    ``name``, ``size``: the queue's (default: a fresh name, ``DEFAULT_SIZE``);
    ``start``: the start method (``"fork"``, ``"spawn"``, ``"forkserver"``;
    default multiprocessing's); ``sigint``: let the workers receive SIGINT;
    ``timeout``: seconds the workers have to end on leaving the block before
    they are terminated.  ``processes``: the worker processes, once started.
    """

    def __init__(
        self,
        target,
        n,
        args=(),
        *,
        name=None,
        size=DEFAULT_SIZE,
        start=None,
        sigint=False,
        timeout=STOP_TIMEOUT,
    ):
        if not callable(target):
            raise TypeError(f"target must be callable, not {type(target).__name__}")
        self.target = target
        self.n = check_int(n, "n", 1, 1 << 16)
        self.args = tuple(args)
        self.name, self.size, self.start = name, size, start
        self.ctx = multiprocessing.get_context(start)
        self.sigint = bool(sigint)
        self.timeout = check_timer(timeout)
        self.q = None
        self.processes = []
        self._pipes = []
        self._early = {}  # pipe: what a worker sent before it opened

    @staticmethod
    def map(fn, iterable, n=None, *, size=DEFAULT_SIZE, start=None, timeout=STOP_TIMEOUT):
        """``[fn(x) for x in iterable]``, computed in ``n`` worker processes
        (default: the CPUs this process may use), as ``multiprocessing.Pool.map``.

        Items and results travel pickled, one message each, and must fit in
        the queue (``size``; ``MessageTooLarge`` otherwise); each worker is
        sent its next item when it returns a result, so faster workers take
        more.  Under spawn and forkserver, ``fn`` must be
        importable (defined in a module, not in ``__main__`` of ``python -c``
        or a notebook), as for ``Pool``.  An exception of ``fn`` is raised
        here, with the worker's traceback as its ``__cause__``, and the
        workers are stopped."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        if n is None:
            n = CPUS
        n = check_int(n, "n", 1, 1 << 16)
        with Workers(_map_worker, n, (n, fn), size=size, start=start, timeout=timeout) as q:
            return _map_parent(q, n, iterable)

    def __enter__(self):
        q = self.q = PySyncQ(self.name, size=self.size, start=self.ctx.get_start_method())
        try:
            q.open("parent")  # before the workers: it misses none of their messages
            for i in range(self.n):
                recv, send = self.ctx.Pipe(duplex=False)
                p = self.ctx.Process(
                    target=_work,
                    args=(self.target, q, i, self.args, send, self.sigint),
                    name=f"worker-{i}",
                )
                p.start()
                send.close()
                self.processes.append(p)
                self._pipes.append(recv)
            q._procs = tuple(self.processes)
            self._wait_opened()
        except BaseException as e:
            self._exit(type(e), e)
            raise
        return q

    def _wait_opened(self):
        """Wait until every worker has opened the queue (a worker may be done
        and gone already: it has opened, and missed nothing)."""
        pending = set(self._pipes)
        deadline = time.monotonic() + START_TIMEOUT
        while pending:
            ready = multiprocessing.connection.wait(pending, deadline - time.monotonic())
            if not ready:
                raise TimeoutError(
                    f"{len(pending)} of {self.n} workers did not open queue {self.q.name!r} "
                    f"within {START_TIMEOUT} s"
                )
            for c in ready:
                pending.discard(c)
                try:
                    got = c.recv()
                except EOFError:  # it died before it opened
                    got = None
                if got != OPENED:
                    self._early[c] = got
                    raise ChildExited(f"a worker of queue {self.q.name!r} failed before it opened")

    def __exit__(self, exc_type, exc, tb):
        self._exit(exc_type, exc)
        return False

    def _exit(self, exc_type, exc):
        failure = self.stop()
        if failure is not None and (exc_type is None or issubclass(exc_type, ChildExited)):
            raise failure

    def stop(self):
        """Stop the workers (at most ``timeout`` seconds for them to end,
        then terminate, then kill), remove the queue; return the exception
        of the first worker that failed, or None."""
        q = self.q
        if q is not None:
            q._procs = ()
            q.close()
        deadline = time.monotonic() + self.timeout
        for p in self.processes:
            p.join(max(0.0, deadline - time.monotonic()))
        failure = self._failure()  # before the group itself ends any: not failures
        for p in self.processes:
            if p.exitcode is None:
                p.terminate()
                p.join(1.0)
            if p.exitcode is None:
                p.kill()
                p.join(5.0)
        for c in self._pipes:
            c.close()
        self._pipes = []
        if q is not None:
            try:
                remove(q.name)  # what killed workers left; a live member keeps it
            except QueueExists:
                pass  # attached to by a process outside the group: its last close removes it
        return failure

    def _failure(self):
        """The exception of the first failed worker, with its traceback as
        ``__cause__``; ``ChildExited`` for one that left none."""
        for p, c in zip(self.processes, self._pipes, strict=True):
            if not p.exitcode:
                continue
            try:
                got = self._early[c] if c in self._early else c.recv() if c.poll() else None
            except (EOFError, OSError):
                got = None
            if got is None:
                return ChildExited(
                    f"{process_exited(p)}, a worker of queue {self.q.name!r}, with no traceback"
                )
            e, tb = got
            if not isinstance(e, Exception):  # None (not picklable), SystemExit, ...
                what = "failed" if e is None else f"raised {type(e).__name__}"
                e = ChildExited(f"worker {p.name} (pid {p.pid}) {what}")
            e.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
            return e
        return None
