"""How every kernel is compiled: the numba options, in one place."""

#: Every kernel is cached on disk (numba's ``cache=True``): a process loads it
#: instead of compiling it (see pysyncq._load).
_JIT = {"cache": True}
