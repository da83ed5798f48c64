"""LLVM instructions numba does not offer: atomics, memcpy, the futex call, a clock.

Numba has no CPU atomics of its own, so these are LLVM instructions emitted
through ``numba.extending.intrinsic``.

Atomics: sequentially consistent operations on int64 array elements (the
rules for where they are needed are in ``pysyncq.layout``, "Memory order").  Each
takes a 1-d int64 array (a view of the shared memory) and an element index.
``seq_cst`` everywhere: these words are few and the simplest ordering is the
one that is easiest to reason about (a release store followed by a load of
another word, as the waking protocol needs, is only ordered under ``seq_cst``).

Numba's on-disk cache would not notice a change to this module by itself (it
looks at the file that defines each kernel): the stamp of every kernel covers
it too (pysyncq.kernels._jit), so a change here recompiles them all.
"""

import platform
import sys

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: The futex system call's number on this machine, or -1 where there is none
#: (then ``futex`` is never called: see ``HAVE_FUTEX``).
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98, "ppc64le": 221}
FUTEX_NR = (
    _SYS_FUTEX.get(platform.machine(), -1)
    if sys.platform.startswith("linux") and sys.byteorder == "little"
    else -1
)
HAVE_FUTEX = FUTEX_NR >= 0


def _element_pointer(context, builder, arrty, arr, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx], wraparound=False)


@intrinsic
def atomic_load(typingctx, arr, idx):
    """Return ``arr[idx]``."""
    sig = types.int64(arr, idx)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "seq_cst", 8)

    return sig, codegen


@intrinsic
def atomic_store(typingctx, arr, idx, val):
    """Set ``arr[idx] = val``; every earlier store is visible before it."""
    sig = types.void(arr, idx, types.int64)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, ptr, "seq_cst", 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def atomic_cas(typingctx, arr, idx, expected, new):
    """If ``arr[idx] == expected`` set it to ``new``; return the old value."""
    sig = types.int64(arr, idx, types.int64, types.int64)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        res = builder.cmpxchg(ptr, args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(res, 0)

    return sig, codegen


@intrinsic
def atomic_xchg(typingctx, arr, idx, val):
    """Set ``arr[idx] = val``; return the old value."""
    sig = types.int64(arr, idx, types.int64)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.atomic_rmw("xchg", ptr, args[2], "seq_cst")

    return sig, codegen


@intrinsic
def atomic_add(typingctx, arr, idx, val):
    """Add ``val`` to ``arr[idx]``; return the old value."""
    sig = types.int64(arr, idx, types.int64)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

    return sig, codegen


@intrinsic
def fence_acquire(typingctx):
    """An acquire fence: no load before it is reordered after any load or
    store after it (by the compiler or the CPU).  For a reader that copies
    first and validates second (the copy must be done before the validating
    load is made).  No instruction on x86, ``dmb ishld`` on ARM."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        builder.fence("acquire")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def copy_bytes(typingctx, dst, dst_at, src, src_at, n):
    """Copy ``n`` bytes from ``src[src_at:]`` to ``dst[dst_at:]`` with memcpy.

    Both are 1-d byte buffers (arrays or ``bytes``) that must not overlap, and
    the caller guarantees the bounds.  A loop of ``dst[i] = src[j]`` compiles to
    a byte-at-a-time copy (every index is checked for wraparound), about forty
    times slower than this for 64 KiB.
    """
    sig = types.void(dst, types.intp, src, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        dst_ary = context.make_array(sig.args[0])(context, builder, args[0])
        src_ary = context.make_array(sig.args[2])(context, builder, args[2])
        dst_ptr = builder.gep(dst_ary.data, [args[1]])
        src_ptr = builder.gep(src_ary.data, [args[3]])
        cgutils.raw_memcpy(builder, dst_ptr, src_ptr, args[4], 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def futex(typingctx, arr, idx, op, val, timeout_ns):
    """The futex system call on the low 32 bits of ``arr[idx]`` (an int64
    array over shared memory): ``op`` 0 waits while that word equals ``val``
    for at most ``timeout_ns`` (< 0: no limit), ``op`` 1 wakes up to ``val``
    sleepers.  Returns the call's result (-1 on any error, e.g. EINTR).

    Called through libc's ``syscall`` with the number fixed at compile time;
    only where ``HAVE_FUTEX``.  A waiting kernel must be ``nogil``.
    """
    sig = types.int64(arr, idx, types.int64, types.int64, types.int64)

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        ts = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))
        ns = args[4]
        billion = ir.Constant(i64, 1_000_000_000)
        builder.store(
            builder.sdiv(ns, billion), builder.gep(ts, [ir.Constant(ir.IntType(32), 0)] * 2)
        )
        builder.store(
            builder.srem(ns, billion),
            builder.gep(ts, [ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 1)]),
        )
        null = ir.Constant(i64, 0)
        tsp = builder.select(builder.icmp_signed("<", ns, null), null, builder.ptrtoint(ts, i64))
        fnty = ir.FunctionType(i64, [i64], var_arg=True)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "syscall")
        return builder.call(
            fn,
            [
                ir.Constant(i64, FUTEX_NR),
                builder.ptrtoint(ptr, i64),
                args[2],
                args[3],
                tsp,
                null,
                null,
            ],
        )

    return sig, codegen


#: ``clock_gettime``'s clock: CLOCK_MONOTONIC, as ``time.monotonic`` reads it.
_CLOCK_MONOTONIC = 1


@intrinsic
def monotonic_ns(typingctx):
    """``time.monotonic_ns()`` inside a kernel: libc's ``clock_gettime``
    (the vDSO: no system call), for deadlines in nopython code."""
    sig = types.int64()

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        ts = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))
        fnty = ir.FunctionType(i32, [i32, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        builder.call(fn, [ir.Constant(i32, _CLOCK_MONOTONIC), builder.ptrtoint(ts, i64)])
        zero = ir.Constant(i32, 0)
        sec = builder.load(builder.gep(ts, [zero, zero]))
        nsec = builder.load(builder.gep(ts, [zero, ir.Constant(i32, 1)]))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return sig, codegen


@intrinsic
def cpu_yield(typingctx):
    """``os.sched_yield()`` inside a kernel: give the CPU to another runnable
    process (a spinning waiter's turn, on a machine with few CPUs)."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen
