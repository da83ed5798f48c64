"""The kernel registry: how every kernel is compiled, and which ones Python calls
with which argument types.

Every kernel is made by ``@kernel``: numba's ``njit``, cached on disk.  A kernel
that Python calls says so where it is defined, with sample arguments of the
types of its real calls, one tuple per signature; one that is called past
numba's dispatcher says ``hot=True``.  These are the only record of them:
pysyncq._load loads exactly these signatures (all of them before a fork, so
that forked children load and compile nothing), finds the hot entry points,
and tests/test_startup.py checks that a process running every operation
loads nothing else.

numba judges a cached kernel stale by the file that defines it, not by the
files of the kernels it calls, nor by layout.py whose constants are compiled
into it.  So every kernel here is stamped with one hash of all of them
(``_stamp``): a change to any one recompiles every kernel, as a change to the
one file kernels.py did.
"""

import hashlib
import os
from collections import namedtuple

import numpy as np
from numba import njit

from .. import layout
from ..layout import segment_bytes

_JIT = {"cache": True}

#: A registered kernel: ``dispatcher`` is what ``@kernel`` returned; ``calls``
#: holds sample arguments, one tuple per signature Python calls it with (none
#: for a kernel that only other kernels call); ``hot``: Python calls its
#: compiled entry point directly, with exactly the types of ``calls[0]``.
Kernel = namedtuple("Kernel", "name dispatcher calls hot")

#: Every kernel of pysyncq.kernels by name, in the order they are defined.
KERNELS = {}

# -- Sample arguments.  Only their numba types matter (the values are never
# -- used): those of what the real calls pass.

#: The segment's mapping: a writable uint8 array.
SEGMENT = np.zeros(segment_bytes(64, 1), np.uint8)
#: The segment seen as int64 words (``Segment.words``).
WORDS = SEGMENT.view(np.int64)
#: ``screen.screen_table()``'s table: a writable uint8 array too.
SCREEN = np.zeros(16, np.uint8)
#: A writable uint8 buffer: a handle's output or format buffer, or an array's
#: bytes as ``codec.encode_array`` gives them (a flat writable view).
BUFFER = np.zeros(64, np.uint8)
#: A body given as a read-only buffer (extend's blob, a bytes-like's view).
READONLY = np.frombuffer(b"12345678", np.uint8)
#: An int64 array: lengths, kinds, runs.
INT64S = np.zeros(1, np.int64)
#: A token, a slot, a position, a count, a kind: every int is an int64.
INT = 1
BYTES = b""
BOOL = True


def kernel(*calls, hot=False, nogil=False, inline=False, allocates=False):
    """Compile the function below with numba (``njit``, cached on disk) and
    register it.  ``calls``: sample arguments, one tuple per signature that
    Python calls it with; ``hot``: Python calls its entry point past numba's
    dispatcher, with the types of ``calls[0]`` only; ``nogil``: it runs
    without the GIL (a kernel that waits); ``inline``: a helper that other
    kernels inline where they call it.

    numba compiles each kernel on its own and calls it as a function, not
    inlined: a few ns a call, and a named tuple returned through memory.  A
    helper of a line or two that the hot path calls (the fields of a meta
    word, a pop's reply) is inlined instead (numba's ``inline="always"``), so
    that naming a value costs nothing."""
    if hot and not calls:
        raise ValueError("a hot kernel needs the sample of its entry point")

    def register(fn):
        if fn.__name__ in KERNELS:
            raise ValueError(f"two kernels named {fn.__name__}")
        options = dict(_JIT, inline="always") if inline else dict(_JIT)
        if not allocates:
            options["_nrt"] = False
        disp = njit(nogil=nogil, **options)(fn)
        _stamp(disp)
        KERNELS[fn.__name__] = Kernel(fn.__name__, disp, calls, hot)
        return disp

    return register


def _sources_hash():
    """One hash of this package's modules and layout.py, or None when one of
    them cannot be read (then numba's own stamp stays)."""
    here = os.path.dirname(os.path.abspath(__file__))
    paths = sorted(os.path.join(here, n) for n in os.listdir(here) if n.endswith(".py"))
    h = hashlib.sha256()
    try:
        for path in [*paths, layout.__file__]:
            with open(path, "rb") as f:
                h.update(os.path.basename(path).encode() + b"\0" + f.read())
    except OSError:
        return None
    return h.digest()


_SOURCES = _sources_hash()


def _stamp(disp):
    # numba's cache index stores this stamp and serves an entry only while it
    # matches (numba.core.caching.IndexDataCacheFile); another numba, or
    # NUMBA_DISABLE_JIT (a plain function), keeps its own.
    cache_file = getattr(getattr(disp, "_cache", None), "_cache_file", None)
    if _SOURCES is not None and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = _SOURCES


def stamp(disp, *paths):
    """Stamp ``disp``, a dispatcher made outside this package over its kernels
    (``pysyncq.jit``), with their hash and that of its own ``paths``: a change
    to either recompiles it."""
    cache_file = getattr(getattr(disp, "_cache", None), "_cache_file", None)
    digest = _stamps.get(paths) or _stamps.setdefault(paths, _hash_with(paths))
    if digest and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = digest


_stamps = {}


def _hash_with(paths):
    if _SOURCES is None:
        return None
    h = hashlib.sha256(_SOURCES)
    try:
        for path in paths:
            with open(path, "rb") as f:
                h.update(f.read())
    except OSError:
        return None
    return h.digest()
