"""Loading the compiled kernels: each on its first call, straight from numba's cache.

Why this module exists
----------------------
A spawned child that is handed a queue needs a handful of kernels, all of them
in numba's on-disk cache.  Left to itself, numba loads a cached kernel on its
first call (``Dispatcher._compile_for_args`` -> ``compile`` ->
``Cache.load_overload``), and ``Cache.load_overload`` begins with the target
context's ``refresh()``: numba's one-time setup *for compiling*, which imports
the implementation of everything numba can compile (``numba.np.linalg``,
``arraymath``, the typed containers, ...) and, through ``arraymath``'s BLAS
check, ``scipy.linalg`` when scipy is installed.  That setup took 0.3-0.4 s of
a child's 0.8 s start, of which scipy was 0.2-0.34 s (benchmarks/PROFILE.md
section 5), and its objects made the child's exit 0.2 s slower.

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
"""

import numpy as np

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


def install(module, on_miss=None):
    """Route the first call of every dispatcher in ``module`` through :func:`load`.

    Numba's C dispatcher calls the dispatcher's ``_compile_for_args`` when no
    compiled overload matches the argument types; an instance attribute of that
    name takes its place.  When the cache does not hold the overload,
    ``on_miss()`` is called first (pysyncq compiles all its kernels at once
    then), and then numba's own path.  Idempotent.
    """
    for obj in list(vars(module).values()):
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
                on_miss()
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
