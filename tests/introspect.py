"""The tests' one way into pysyncq's internals.

Some tests must see or change what the public API hides: the words of a
handle's segment, its slot and private buffers, the lock word, the files under
``/dev/shm``, the patience of the lock, of open and of close, and steps of a
pop or an append that a test spies on or replaces.  Every such reach goes
through this module, in functions named for what a test needs rather than
for where pysyncq keeps it.  When the internals move (a module split or
renamed, an attribute renamed), only this file changes, not the tests.

Tests import directly only what is public: ``pysyncq.PySyncQ`` and the rest
of ``pysyncq.__all__``, ``pysyncq.errors``, ``pysyncq.codec``,
``pysyncq.bridge``, the command line (``pysyncq.__main__.main``), 0.0.1's
import path (``pysyncq.pysyncq``), and ``pysyncq.layout`` and
``pysyncq.kernels``, the documented view of the segment format and of the
kernels.

What a test may set or replace for a while is an :class:`Internal`:
``LOCK_PATIENCE.patch(monkeypatch, 0.3)`` until the test ends, or
``LARGE_COPY.get()`` for the real step to wrap.
"""

import os

from pysyncq import (
    _cli_stat,
    _exit,
    _handle,
    _lifecycle,
    _load,
    _membership,
    _outside,
    _proc,
    _read,
    _segment,
    _wait,
    _watch,
    _write,
    codec,
    kernels,
)
from pysyncq import batch as _batch
from pysyncq import queue as _queue
from pysyncq.layout import CONTENDED, H_LOCK
from pysyncq.screen import as_bytes, screen_table

__all__ = [
    "BATCH_POP",
    "BUFFER_DIRECT",
    "BUFFER_WRAP",
    "CLEAR_SCREEN",
    "CLOSE_PATIENCE",
    "CPUS",
    "FAST_EXIT_ENV",
    "HANDLE_SETUP",
    "Internal",
    "KERNEL_TABLE",
    "LARGE_COPY",
    "LOCK_CHECK",
    "LOCK_PATIENCE",
    "OPEN_PATIENCE",
    "SHM_DIR",
    "as_bytes",
    "bridge_position_file",
    "cli_list",
    "compile_all",
    "copy_buffer",
    "crash",
    "fast_entry",
    "families_ready",
    "fast_exit_now",
    "force_async_polling",
    "forget_array_warning",
    "gc_holds",
    "handle_lock",
    "is_alive",
    "is_kernel",
    "kernel_families",
    "lock_holder_pid",
    "kernel_calls",
    "kernel_signature",
    "load_kernel",
    "loaded_kernel",
    "mem",
    "namespaces",
    "nslots",
    "own_token",
    "pop_kernel",
    "pretend_namespaces",
    "pretend_namespaces_cached",
    "queues_in_shm",
    "raw_append",
    "raw_pop",
    "read_ahead",
    "commit_to",
    "read_header",
    "reads",
    "call_kernels_by_name",
    "remeasure_spin",
    "remove_shm",
    "reset_fast_exit",
    "screen_table",
    "shm_open",
    "shm_path",
    "shorten_waits",
    "slot",
    "slot_of",
    "take_lock",
    "token_of",
    "token_pid",
    "unmap",
    "warm_up",
    "words",
]

# as_bytes and screen_table are re-exported as they are:
#   as_bytes(obj): the bytes that stand for a sender or type ``obj`` in the queue.
#   screen_table(senders, types): the screen table the pop kernels take.


# -- Settings and steps a test replaces --------------------------------------------


class Internal:
    """Something inside pysyncq that a test may read, set or replace."""

    def __init__(self, owner, attr, doc):
        self._owner = owner
        self._attr = attr
        self.__doc__ = doc

    def get(self):
        """The current value (before a test replaces it: the real one)."""
        return getattr(self._owner, self._attr)

    def set(self, value):
        """Set it for good: in a child process, or with a ``finally`` that sets it back."""
        setattr(self._owner, self._attr, value)

    def patch(self, monkeypatch, value):
        """Set it until the test ends (``monkeypatch`` undoes it)."""
        monkeypatch.setattr(self._owner, self._attr, value)

    def __repr__(self):
        return f"<Internal {getattr(self._owner, '__name__', self._owner)}.{self._attr}>"


LOCK_PATIENCE = Internal(
    _wait,
    "LOCK_PATIENCE",
    "Seconds a call that may not block waits for a live lock holder before QueueLocked.",
)
LOCK_CHECK = Internal(
    _wait, "LOCK_CHECK", "Seconds between two looks at whether a silent lock holder still lives."
)
OPEN_PATIENCE = Internal(
    _membership, "OPEN_PATIENCE", "Seconds open() waits for a live lock holder before QueueLocked."
)
CLOSE_PATIENCE = Internal(
    _lifecycle,
    "CLOSE_PATIENCE",
    "Seconds close() waits for a live lock holder before QueueLocked.",
)
CPUS = Internal(
    _wait, "CPUS", "The CPUs a blocking pop counts: it spins only with no more members than this."
)
SHM_DIR = Internal(_segment, "SHM_DIR", "The folder pysyncq finds queues in (/dev/shm).")
LARGE_COPY = Internal(
    _outside,
    "copy_body",
    "``f(buf, kind, decode)``: the one copy of a large popped record, made outside the lock.",
)
BUFFER_WRAP = Internal(
    _write,
    "buffer_body",
    "``f(msg)``: a bytes-like body to append, as the array the ring is filled from.",
)
BATCH_POP = Internal(
    _batch,
    "_pop_batch",
    "``f(q, m, n, decode)``: one round of pop_many, run with the garbage collector held off.",
)
HANDLE_SETUP = Internal(
    _queue.PySyncQ,
    "_setup",
    "``f(self, name, seg, start, creator)``: what PySyncQ() runs once the segment exists.",
)

#: Bodies this large or larger are appended straight from the caller's buffer.
BUFFER_DIRECT = _write.BUFFER_DIRECT


def force_async_polling(monkeypatch):
    """Make asyncio waiters poll until the test ends, as where no wake-up
    socket can be made."""
    from pysyncq import aio

    monkeypatch.setattr(aio, "_join", lambda *a: None)


def forget_array_warning(monkeypatch):
    """Let append() warn again that it got an array (it warns once a process)."""
    monkeypatch.setattr(codec, "_warned_array", False)


def call_kernels_by_name(monkeypatch):
    """Until the test ends, the hot calls (append's and extend's kernels,
    called past numba's dispatcher) look their kernels up in
    ``pysyncq.kernels`` at each call, so that a test can wrap them there."""
    monkeypatch.setattr(_batch, "_op_extend", kernels.op_extend)
    monkeypatch.setattr(_write, "_op_append", kernels.op_append)


def remeasure_spin():
    """Forget the measured speed of spinning: the next spinning pop measures it again."""
    _wait._rounds_per_s = 0.0


def pretend_namespaces(monkeypatch, ns):
    """Until the test ends (or the next call), this process says it lives in
    namespaces ``ns`` (pid, time) to every check made through the process
    module; a segment created meanwhile still records the real ones."""
    monkeypatch.setattr(_proc, "namespaces", lambda: ns)


def pretend_namespaces_cached(monkeypatch, ns):
    """This process's namespaces are ``ns`` (pid, time) for every caller, the
    creation of a segment included, until ``monkeypatch.undo()`` or the end of
    the test: the cache of this pid's namespaces says so."""
    monkeypatch.setattr(_proc, "_ns_cache", (os.getpid(), ns))


def shorten_waits():
    """Make waits for a "live" lock holder short: a garbage lock word can name a
    process that exists, and the trial must not spend seconds per call on it.
    Only the deadlines change, not what happens at them.  For good: for a
    child process (the fuzz trials).  Tolerates a tree that lacks a deadline."""
    _wait.LOCK_PATIENCE = 2 * _wait.LOCK_CHECK  # still long enough to judge a holder
    _membership.OPEN_PATIENCE = 0.5
    _lifecycle.CLOSE_PATIENCE = 0.5
    rel = _lifecycle.State.release
    if rel.__defaults__:
        rel.__defaults__ = (0.5,)


# -- A handle's segment and membership ------------------------------------------------


def words(q):
    """Handle ``q``'s whole segment as int64 words (header, slot table, ring),
    writable: index it with ``layout``'s ``H_*`` or ``kernels.slot_word``."""
    return q._seg.words


def mem(q):
    """Handle ``q``'s whole segment as a writable uint8 array (what kernels take)."""
    return q._seg.mem


def nslots(q):
    """The number of slots of ``q``'s segment."""
    return q._seg.nslots


def slot(q):
    """The slot of ``q``'s membership (``q`` is open)."""
    return q._m.slot


def slot_of(q, pid):
    """The slot that process ``pid`` holds in ``q``'s queue, or None."""
    token = token_of(pid)
    for s, t, _reader in kernels.members(q._seg.mem):
        if t == token and s >= 0:
            return int(s)
    return None


def lock_holder_pid(q):
    """The pid of the process whose token is in ``q``'s lock word now, 0 when
    the lock is free: one unsynchronised read, for a killer that aims at the
    holder (it may have let go by the time the caller acts on it)."""
    token = int(q._seg.words[H_LOCK]) & ~CONTENDED
    return _proc.token_pid(token) if token else 0


def reads(q):
    """Whether ``q`` is open as a reader (False when it is not open)."""
    m = q._m
    return m is not None and m.reader


def copy_buffer(q):
    """The private buffer that ``q``'s pops copy records into (``q`` is open)."""
    return q._m.out


def handle_lock(q):
    """The lock of ``q``'s membership: held, it keeps the other threads of
    this handle off the queue (their pops and sleeps)."""
    return q._m.lock


def pop_kernel(q):
    """Run the pop kernel once for ``q``'s membership, as a pop(block=False)
    would, with none of pop()'s Python around it; return its status word.
    (No lock is taken: hold ``handle_lock(q)`` if other threads use ``q``.)"""
    m = q._m
    return kernels.op_pop(q._mem, m.token, m.slot, _handle.screens(q), m.out, m.waits[0])[0]


def raw_append(q, sender, mtype, body, kind, block=False, timer=0.5):
    """Append a record as it is (sender, type, body bytes and a ``KIND_*``),
    in any sender's name, as a relay does; no encoding, no checks of the body."""
    return _write.append_raw(q, sender, mtype, body, kind, block, timer)


def raw_pop(q, block=False, timer=0.5):
    """Pop the next record as it is: ``(sender, mtype, body, kind, own)`` or None."""
    return _read.pop_raw(q, block, timer)


def read_ahead(q, n, start=None):
    """``(records, next)``: at most ``n`` records ``q`` has not read, from
    ``start`` (default: its cursor), without reading them, as a relay does."""
    return _read.read_ahead(q, n, start)


def commit_to(q, pos, count=0):
    """Read everything before position ``pos`` (from :func:`read_ahead`)."""
    _read.commit_to(q, pos, count)


def take_lock(q):
    """Take ``q``'s queue lock for this process (and never release it), as
    a process stopped inside a kernel holds it: True if it was free.  Not
    atomic: for a test whose other processes are not using the queue yet."""
    w = q._seg.words
    if int(w[H_LOCK]) != 0:
        return False
    w[H_LOCK] = _proc.own_token()
    return True


def crash(q):
    """Make ``q`` as if its process had died: it will never close, release
    its membership or its creator's hold, or remove the queue."""
    q._state.seg = None


def unmap(q):
    """Unmap ``q``'s segment and do nothing else (after ``crash(q)``)."""
    q._seg.close()


def bridge_position_file(bridge):
    """The file where ``bridge`` keeps its position in the stream."""
    return bridge._posfile_path()


def inbox_len(q):
    """How many messages ``q``'s inbox holds (moved out of the queue by a
    blocked write of this handle)."""
    return len(q._m.inbox)


def inbox_bytes(q):
    """The bytes ``q``'s inbox holds (sender, type and body)."""
    return q._m.inbox.bytes


def gc_holds():
    """How many pop_many calls hold the garbage collector off right now."""
    return _batch._gc_hold.held


# -- Queues by name, in /dev/shm ---------------------------------------------------------


def shm_path(name):
    """The file of shared memory ``name`` (under ``SHM_DIR``, as it is now)."""
    return os.path.join(_segment.SHM_DIR, name)


def shm_open(name, flags):
    """Open shared memory ``name`` as pysyncq does (``os.O_*`` flags): a file descriptor."""
    return _segment._open(name, flags)


def remove_shm(name):
    """Unlink shared memory ``name``, queue or not; no error if it is gone."""
    _segment.unlink(name)


def read_header(name):
    """The header words of queue ``name``, read from its file (nothing mapped),
    or None where no queue has that name."""
    return _segment.read_header(name)


def queues_in_shm():
    """Names of every queue in ``SHM_DIR``, from the files alone (unlike
    ``pysyncq.list_queues()``, which maps each to judge whether it is in use)."""
    return _segment.list_queues()


# -- Processes ---------------------------------------------------------------------------


def package_file():
    """The path of pysyncq's ``__init__.py`` (its folder holds ``_watcher.py``)."""
    return _watch.SCRIPT.replace("_watcher.py", "__init__.py")


def watchers_started():
    """Pids of the queue watchers this process started and has not yet reaped."""
    return list(_watch._started)


def reap_watchers():
    """Collect the watchers of this process that have ended."""
    _watch.reap()


def token_of(pid):
    """The token (pid and start time) of live process ``pid``, as the lock word holds it."""
    return _proc.token_of(pid)


def own_token():
    """The token of this process."""
    return _proc.own_token()


def is_alive(token):
    """False only if the process of ``token`` has certainly ended."""
    return _proc.is_alive(token)


def token_pid(token):
    """The pid in ``token``."""
    return _proc.token_pid(token)


def namespaces():
    """This process's (pid namespace, time namespace) inodes; 0 where unknown."""
    return _proc.namespaces()


# -- Loading the kernels -------------------------------------------------------------------


def is_kernel(obj):
    """Whether ``obj`` is one of the kernels' numba dispatchers."""
    return _load.is_kernel(obj)


def kernel_calls():
    """``(kernel name, sample arguments)`` for every kernel signature pysyncq calls."""
    return _load.kernel_calls()


#: Where pysyncq keeps that table (for a test's message: add a new kernel there).
KERNEL_TABLE = "the @kernel registry (pysyncq.kernels._jit)"


def kernel_signature(args):
    """The numba signature a call with ``args`` is dispatched on, as pysyncq computes it."""
    return _load.signature(args)


def load_kernel(disp, args):
    """Load (from the cache, else compile) kernel ``disp`` for ``args``: its entry point."""
    return _load.ensure(disp, args)


def loaded_kernel(disp, args):
    """The entry point of ``disp`` already loaded for ``args``, or None."""
    return _load.loaded(disp, args)


def fast_entry(name):
    """The entry point that append or pop (``name``: "op_append", "op_pop")
    call directly, past numba's dispatcher."""
    return _load.FAST[name]


def warm_up():
    """What a process does before its first kernel call (as making a handle does)."""
    _load.warm_up()


def compile_all():
    """Load every kernel pysyncq calls, compiling into numba's cache what it lacks."""
    _load.load_all()


def kernel_families():
    """``{family: [(kernel name, sample arguments), ...]}``: what pysyncq
    compiles together when numba's cache lacks one of them."""
    return {
        f: [(d.__name__ if not is_kernel(d) else d.py_func.__name__, a) for d, a in calls]
        for f, calls in ((f, _load.family_calls(f)) for f in _load.FAMILIES)
    }


def families_ready():
    """The kernel families this process has loaded or compiled."""
    return set(_load._ready)


# -- Exit ----------------------------------------------------------------------------------

#: The environment variable that decides fast_exit where fast_exit() was not called.
FAST_EXIT_ENV = _exit.ENV


def fast_exit_now():
    """Whether this process would skip the final garbage collection if it exited now."""
    return _exit.enabled_now()


def reset_fast_exit():
    """Forget what fast_exit() was told, as if it had never been called."""
    _exit._choice = None


# -- The command line -----------------------------------------------------------------------

#: What ``stat --watch`` writes before each frame (cursor home, clear the screen).
CLEAR_SCREEN = _cli_stat.HOME_CLEAR


def cli_list(out):
    """``python -m pysyncq list``, written to ``out``: its exit code."""
    return _cli_stat.list_main(out)
