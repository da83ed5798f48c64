"""Loading the compiled kernels: each on its first call, straight from numba's cache.

The policy is here; the facts it works from (which kernels Python calls, with
which argument types, and which are called past numba's dispatcher) are the
registry of :mod:`pysyncq.kernels._jit`.  :func:`warm_up` readies a process,
:func:`load_all` loads every registered signature (for tools and
benchmarks), ``AT_FORK`` is what a process readies before it forks (so
that forked children load nothing for what every member does), :func:`fast` gives a hot
kernel's entry point, ``FAMILIES`` says what is compiled together when the
cache lacks a kernel.

Why this module exists
----------------------
A spawned child that is handed a queue needs a handful of kernels, all of them
in numba's on-disk cache.  Left to itself, numba loads a cached kernel on its
first call (``Dispatcher._compile_for_args`` -> ``compile`` ->
``Cache.load_overload``), and ``Cache.load_overload`` begins with the target
context's ``refresh()``: numba's one-time setup *for compiling*, which imports
the implementation of everything numba can compile (``numba.np.linalg``,
``arraymath``, the typed containers, ...) and, through ``arraymath``'s BLAS
check, ``scipy.linalg`` when scipy is installed.  That setup is a large part
of a spawned child's start (scipy most of it), and its objects make the
child's exit slower (figures: benchmarks/PROFILE.md, section 5).

Running machine code that is already in the cache needs none of it: only
numba's memory runtime (NRT, for kernels that return arrays) and the cached
library itself.  So every kernel's first call goes through :func:`load`, which
does what ``Dispatcher.compile`` does on a cache hit, less the ``refresh()``:
the cached library is rebuilt, registered with the target context and added
to the dispatcher as an overload (numba's ``stats.cache_hits`` count it), and
its compiled entry point is returned for numba's dispatcher to call.

This reads numba internals (``Dispatcher._cache``, ``Cache._load_overload``).
Whenever anything is not as expected -- another numba, no cache entry, a stale
one, caching disabled, ``NUMBA_DISABLE_JIT`` -- :func:`load` returns None and
the call takes numba's own path, which refreshes, loads or compiles, and saves
to the cache exactly as before.  Nothing is hidden from numba: the user's own
``@njit`` code runs numba's full setup (scipy included) when it compiles or
loads, as it always did.

Compiling, when the cache lacks a kernel
----------------------------------------
An empty cache (a fresh ``NUMBA_CACHE_DIR``, or sources changed: every entry
goes stale at once) has to be filled by compiling, seconds a kernel, and a
compile must not happen where it stalls other processes: while this process
holds the queue lock, a reservation, a pin or records read ahead, or waits.
So kernels are compiled by family (``FAMILIES``), each family at a safe
point before the first operation that needs it: the core family (a handle's
making, open, append, pop, close, the waits) by :func:`warm_up`; every other
one at the first call of one of its kernels that misses the cache
(:func:`compile_for`, the hook :func:`install` sets), which its Python entry
makes before it holds anything.  A miss of a kernel outside the families
ready, wherever it comes, compiles that kernel's families likewise.  A
process that forks readies the core family before it forks (``AT_FORK``).
numba compiles one kernel at a time in a process, so where two CPUs are free
the core family is compiled in two: a helper Python compiles about half of
it into the cache meanwhile (``_compile_elsewhere``; ``PYSYNCQ_COMPILE_JOBS=1``
keeps it all in this process).
"""

import os
import sys

import numpy as np

from ._wait import CPUS
from .kernels import _jit

try:
    from numba.core import types as _nbtypes
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.dispatcher import Dispatcher
    from numba.core.errors import NumbaValueError
    from numba.core.runtime.nrt import rtsys
    from numba.core.typing.typeof import Purpose, typeof
    from numba.np import numpy_support
except ImportError:  # another numba: every kernel takes numba's own path
    Dispatcher = None

#: Kernels whose first call is routed through :func:`load` (by dispatcher id).
_hooked = set()


def is_kernel(obj):
    """True for a numba dispatcher this module can load (not a plain function,
    as kernels are under ``NUMBA_DISABLE_JIT=1``)."""
    return Dispatcher is not None and isinstance(obj, Dispatcher)


def install(kernels, on_miss=None):
    """Route the first call of every dispatcher in ``kernels`` through :func:`load`.

    Numba's C dispatcher calls the dispatcher's ``_compile_for_args`` when no
    compiled overload matches the argument types; an instance attribute of that
    name takes its place.  When the cache does not hold the overload,
    ``on_miss(dispatcher, args)`` is called first (pysyncq compiles the
    kernel's family then: :func:`compile_for`), and then numba's own path.
    Idempotent.
    """
    for obj in kernels:
        if is_kernel(obj) and id(obj) not in _hooked:
            obj._compile_for_args = _first_call(obj, on_miss)
            _hooked.add(id(obj))


def _first_call(disp, on_miss):
    numba_path = disp._compile_for_args  # the bound method: numba's own

    def first_call(*args, **kws):
        # Returns the entry point to call (numba's contract for this hook).
        if not kws:
            entry = load(disp, args)
            if entry is not None:
                return entry
            if on_miss is not None:
                on_miss(disp, args)
        return numba_path(*args, **kws)

    return first_call


def signature(args):
    """The argument types numba's dispatcher sees for ``args``."""
    return tuple(_typeof(a) for a in args)


def _typeof(a):
    if type(a) is np.ndarray:  # typeof() would import numpy.ma to rule it out
        try:
            dtype = numpy_support.from_dtype(a.dtype)
        except Exception:  # noqa: BLE001 - typeof() says what numba says
            pass
        else:
            layout = numpy_support.map_layout(a)
            return _nbtypes.Array(dtype, a.ndim, layout, readonly=not a.flags.writeable)
    try:
        t = typeof(a, Purpose.argument)
    except (NumbaValueError, ValueError):  # as Dispatcher.typeof_pyval
        t = None
    return _nbtypes.pyobject if t is None else t


def load(disp, args):
    """Load ``disp``'s overload for the types of ``args`` from numba's cache,
    without numba's compiler setup; return its entry point, or None when it is
    not in the cache (or anything else is unexpected: numba's own path then
    decides).  Never compiles, never raises."""
    if not is_kernel(disp):
        return None
    try:
        with global_compiler_lock:
            sig = signature(args)
            if sig in disp.overloads:
                return None  # numba asked all the same: let it see why
            ctx = disp.targetctx
            rtsys.initialize(ctx)  # what refresh() does first; idempotent
            cres = disp._cache._load_overload(sig, ctx)  # None on a miss
            if cres is None or cres.objectmode:
                return None
            # What Dispatcher.compile does with a cache hit.
            ctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            disp.add_overload(cres)
            disp._cache_hits[sig] += 1
            return cres.entry_point
    except Exception:  # noqa: BLE001 - numba's own path will raise what matters
        return None


def ensure(disp, args):
    """The entry point of ``disp`` for the types of ``args``: loaded from the
    cache (:func:`load`), or else by numba, compiling if it must.  ``disp``
    itself when it is not a numba dispatcher."""
    if not is_kernel(disp):
        return disp
    entry = loaded(disp, args) or load(disp, args)
    return entry if entry is not None else disp.compile(signature(args))


def loaded(disp, args):
    """The entry point of ``disp`` for the types of ``args`` if this process
    has it, else None."""
    cres = disp.overloads.get(signature(args))
    return None if cres is None else cres.entry_point


# -- The policy: what a process loads, and when.


def kernel_calls():
    """``(kernel name, sample arguments)`` for every signature pysyncq calls.

    The sample arguments have exactly the types of the real calls (the
    segment's writable uint8 array, ints, bytes, read-only and writable
    arrays, the screen table), so that a kernel loaded for a sample is the one
    a real call uses.  They are registered where each kernel is defined
    (``@kernel`` in pysyncq.kernels): ``tests/test_startup.py`` checks that
    a process loads nothing else, and that forked children load nothing for
    what every member does.
    """
    return [(k.name, args) for k in _jit.KERNELS.values() for args in k.calls]


#: The kernel families: what is compiled together when the cache lacks a
#: kernel.  An entry names a kernel (all its registered signatures) or
#: ``(kernel, i)``, its ``i``-th registered signature only.  A family holds
#: every kernel that its Python entries may call from their first kernel call
#: on, so that, compiled at that first call (a safe point: no lock, no
#: reservation, no wait yet), nothing of it is compiled later while the
#: process holds the lock, a reservation, a pin or a read-ahead, or waits.
#: numba compiles the callees of a kernel with it, so a family costs what its
#: entry kernels cost (figures: ``FAMILY_SECONDS``).  A kernel may be in two
#: families (``pin_set``: a loan's and a view's pins); a miss compiles all of
#: a kernel's families.  tests/test_startup.py checks that every registered
#: signature is in one.
FAMILIES = {
    # Making or attaching a handle (ring_format, flags_set), open, append of a
    # str or bytes body, pop, close and reaping (op_leave, members, slot_word,
    # flags_set), and every wait: for the lock (lock_prepare_wait), for data
    # or space (spin_for, futex_wait, seq_load, set_waiting).  Compiled by
    # warm_up, before a handle exists.
    "core": (
        ("op_append", 0),
        "op_pop",
        "ring_format",
        "flags_set",
        "header_check",
        "op_open",
        "op_leave",
        "members",
        "slot_word",
        "wake_now",
        "seq_load",
        "set_waiting",
        "spin_for",
        "futex_wait",
        "lock_prepare_wait",
    ),
    # append_array, and append of a large bytes-like body (a read-only array).
    "arrays": (("op_append", 1), "op_append_array"),
    # loan, and append of a body of at least copy_outside bytes: reserve,
    # then publish or void, then unpin (the pin holds the space).
    "loan": ("op_reserve", "record_publish", "pin_set"),
    # pop_view, and pop of a record of at least copy_outside bytes: peek, then
    # commit (the record holds its space till then); a view's pin let go, or
    # kept by close() while the view's array lives (op_linger).
    "view": ("op_peek", "op_commit", "pin_set", "op_linger"),
    # A relay's read_ahead, then commit_to (the records hold their space).
    "ahead": ("op_read_ahead", "op_commit_to"),
    "extend": ("op_extend",),
    "pop_many": ("op_pop_many",),
    # A dead member: its lock stolen (by a process waiting for the lock, which
    # every process waits for until it is stolen: a compile here delays them
    # once, by what this family takes), its durable slot adopted by open().
    "recovery": ("op_steal", "op_adopt"),
}

#: What a first use compiles, in seconds on 2 cores with an empty cache: the
#: core family, including numba's own start (issue 18: 8.8 s of warm_up; every
#: kernel at once took 20-25 s before families).
COMPILE_SECONDS = 9
#: The same with a helper process compiling part of it meanwhile (two CPUs:
#: ``_compile_elsewhere``): 7.9-8.9 s for a whole first program, measured.
SPLIT_SECONDS = 6
#: What compiling each family takes, in seconds, measured likewise: "core"
#: first in a process, the others after it (``SETUP_SECONDS`` more for the
#: first compile of a process whose cache holds the core family already).
#: Every family: about 20 s.
FAMILY_SECONDS = {
    "core": COMPILE_SECONDS,
    "arrays": 2.5,
    "loan": 1.5,
    "view": 2.5,
    "ahead": 1,
    "extend": 1.5,
    "pop_many": 2,
    "recovery": 1,
}
SETUP_SECONDS = 1


def family_calls(family):
    """``(dispatcher, sample arguments)`` of every signature of ``family``."""
    calls = []
    for entry in FAMILIES[family]:
        name, i = entry if isinstance(entry, tuple) else (entry, None)
        k = _jit.KERNELS[name]
        samples = k.calls if i is None else (k.calls[i],)
        calls += [(k.dispatcher, args) for args in samples]
    return calls


def families_of(disp, args):
    """The families that hold ``disp``'s signature for ``args``; those that
    hold ``disp`` at all when that signature is not registered (a miss of a
    call of another type, which numba then refuses or compiles)."""
    sig = signature(args)
    exact, named = [], []
    for family in FAMILIES:
        for d, a in family_calls(family):
            if d is disp:
                named.append(family)
                if signature(a) == sig:
                    exact.append(family)
                    break
    return exact or list(dict.fromkeys(named))


_warmed = False
_all_loaded = False
_told = False
#: The families whose kernels this process has loaded or compiled.
_ready = set()

#: In the environment, ``1`` keeps pysyncq from saying on stderr that it
#: compiles its kernels.
QUIET_ENV = "PYSYNCQ_QUIET"


def warm_up():
    """Make this process ready to call kernels, loading only what it must.

    Called when a handle is made or unpickled.  Each kernel is loaded from
    numba's cache on its first call (:func:`load`: a few ms each, without
    numba's compiler setup), so a process loads only the kernels it uses;
    here only the two of the hot path (``FAST``).  When the cache lacks them
    (a cold cache; numba's entries for the kernels also go stale all together
    when one of their files changes), the core family (``FAMILIES``) is
    compiled here and now, not later in the middle of a wait; every other
    family is compiled at the first call of one of its kernels that misses the
    cache, a call made at a safe point (no lock held, no reservation, no
    wait).  A process that forks readies the core family just before each
    fork (``AT_FORK``, ``os.register_at_fork``), so that forked children load
    and compile nothing for what every member does.
    """
    global _warmed
    if _warmed:
        return
    _find_entry_points()
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )
    _warmed = True


def load_all():
    """Load every kernel pysyncq calls (compiling those not in the cache)."""
    global _all_loaded
    if not _all_loaded:
        _prepare(FAMILIES)
        _all_loaded = True


def compile_for(disp, args):
    """``disp`` lacks its overload for ``args`` in numba's cache (the hook of
    :func:`install`): ready that signature's families (:func:`families_of`),
    compiling what the cache lacks, saying so on stderr first."""
    if is_kernel(disp):
        _prepare(families_of(disp, args))


def _prepare(families):
    """Load the kernels of ``families`` not ready yet; when the cache lacks
    any, say so (once) and compile them."""
    families = [f for f in families if f not in _ready]
    missing = []
    for family in families:
        for disp, args in family_calls(family):
            if is_kernel(disp) and (loaded(disp, args) or load(disp, args)) is None:
                missing.append((family, disp, args))
    if missing:
        _tell(dict.fromkeys(f for f, _, _ in missing))
        calls = [(disp, args) for _, disp, args in missing]
        helper, theirs = _compile_elsewhere(calls)
        try:
            for disp, args in calls:
                if id(disp) not in theirs:
                    ensure(disp, args)
        finally:
            _join(helper)
        for disp, args in calls:
            if id(disp) in theirs:
                ensure(disp, args)  # loaded from what the helper saved (compiled if it failed)
    _ready.update(families)


#: In the environment, the processes a cold cache's core family is compiled
#: in (default 2 where this process may use 2 CPUs or more; 1: this one alone).
JOBS_ENV = "PYSYNCQ_COMPILE_JOBS"
#: The kernels a helper process compiles into the cache while this one
#: compiles the rest of the core family: about half of its time (op_pop and
#: op_open, with their callees, against op_append and op_leave).
ELSEWHERE = ("op_pop", "op_open", "members", "seq_load", "set_waiting", "spin_for", "futex_wait")


def _jobs():
    try:
        return max(1, int(os.environ.get(JOBS_ENV, "")))
    except ValueError:
        return 2 if CPUS >= 2 else 1


def _compile_elsewhere(calls):
    """When ``calls`` hold the core family's two large kernels and this process
    may use two CPUs: start a Python that compiles the ``ELSEWHERE`` part of
    them into numba's cache meanwhile (numba compiles one kernel at a time in
    a process).  Returns the helper process (None if there is none) and the
    ids of the dispatchers it took."""
    names = {disp.py_func.__name__ for disp, _ in calls}
    if _jobs() < 2 or not {"op_append", "op_pop"} <= names or not sys.executable:
        return None, set()
    theirs = {d.py_func.__name__: d for d, _ in calls if d.py_func.__name__ in ELSEWHERE}
    import subprocess  # only on a cold cache

    parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from pysyncq import _load; _load.compile_names(sys.argv[2:])"
    )
    try:
        helper = subprocess.Popen(
            [sys.executable, "-c", code, parent, *sorted(theirs)],  # this one's environment
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, QUIET_ENV: "1", JOBS_ENV: "1"},
        )
    except OSError:
        return None, set()
    return helper, {id(d) for d in theirs.values()}


def _join(helper):
    """Wait for the helper (a Ctrl-C, or ten minutes, stops it: then this
    process compiles what the helper did not save)."""
    if helper is None:
        return
    try:
        helper.wait(600)
    except BaseException as e:
        helper.kill()
        helper.wait()
        if not isinstance(e, Exception):  # KeyboardInterrupt and the like
            raise


def compile_names(names):
    """For the helper of :func:`_compile_elsewhere`: compile the registered
    signatures of kernels ``names`` into numba's cache."""
    for name in names:
        k = _jit.KERNELS[name]
        for args in k.calls:
            ensure(k.dispatcher, args)


#: A later compile expected to take this long or longer is announced too.
LONG_SECONDS = 5


def _tell(families):
    """Say on stderr that kernels are compiled now, with what that takes: at
    the first compile in this process (a first use is otherwise silent for
    seconds), and before a later one of ``LONG_SECONDS`` or more."""
    global _told
    seconds = sum(FAMILY_SECONDS[f] for f in families)
    if "core" in families and _jobs() >= 2:
        seconds -= COMPILE_SECONDS - SPLIT_SECONDS
    if not _told and "core" not in families:
        seconds += SETUP_SECONDS
    if _told and seconds < LONG_SECONDS:
        return
    what = "more of its numba kernels" if _told else "its numba kernels for first use"
    _told = True
    if os.environ.get(QUIET_ENV, "") in ("", "0"):
        print(
            f"pysyncq: compiling {what} (about {max(round(seconds), 1)} s on 2 cores); "
            f"they are cached for later runs ({QUIET_ENV}=1 silences this)",
            file=sys.stderr,
            flush=True,
        )


#: The families a process readies before it forks: what every member calls
#: (open, append, pop, close, the waits), so that forked children load and
#: compile nothing for it.  A child that goes on to other operations loads
#: their families itself, from the cache (a few ms a kernel) or, on a cold
#: cache, compiling them as any process does.  Not every family: that cost
#: a parent 0.16 s on a warm cache and 20-25 s on a cold one, before a fork
#: whose children mostly need the core alone.
AT_FORK = ("core",)


def _before_fork():
    # Exceptions from fork hooks are only printed: load what can be loaded,
    # and a child that misses a kernel loads it itself.
    try:
        _prepare(AT_FORK)
    except Exception:  # noqa: BLE001
        pass
    # No fork while another thread compiles or loads: a child would inherit
    # numba's compiler lock held by a thread it does not have.
    if Dispatcher is not None:
        global_compiler_lock.acquire()


def _after_fork():
    if Dispatcher is not None:
        global_compiler_lock.release()


#: The compiled entry points of the hot kernels (``hot=True`` in the
#: registry), by name: calling them skips numba's dispatcher (type checks and
#: a lookup, about half the cost of an append or a pop).  Only for calls whose
#: argument types are exactly those of the kernel's first registered sample,
#: which its callers ensure (the segment's uint8 array, ints, bytes; the
#: screen table and buffer): an argument of another type would be misread,
#: not refused.
FAST = {}

#: The entry points ``warm_up`` finds: append's and pop's, which a handle is
#: made to call.  The other hot ones are found on first use (:func:`fast`).
_AT_WARM_UP = ("op_append", "op_pop")


def fast(name):
    """The entry point of hot kernel ``name`` (see ``FAST``), found (and
    loaded) on first use: for kernels a process may never call."""
    entry = FAST.get(name)
    if entry is None:
        _find_entry_points((name,))
        entry = FAST[name]
    return entry


def _find_entry_points(names=_AT_WARM_UP):
    for name in names:
        k = _jit.KERNELS[name]
        if not k.hot:
            raise KeyError(f"{name} is not a hot kernel (@kernel(..., hot=True))")
        args, disp = k.calls[0], k.dispatcher
        if not is_kernel(disp):  # NUMBA_DISABLE_JIT: plain functions
            FAST[name] = disp
            continue
        entry = loaded(disp, args) or load(disp, args)
        if entry is None:  # not in the cache: compile its family now
            compile_for(disp, args)
            entry = ensure(disp, args)
        FAST[name] = entry


# Every kernel's first call loads it from numba's cache without numba's compiler
# setup, also for calls made before any handle exists; a kernel missing from the
# cache has its family compiled (FAMILIES) before numba's own path runs.
install([k.dispatcher for k in _jit.KERNELS.values()], on_miss=compile_for)
