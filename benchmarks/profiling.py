"""Where the time goes: the measurements behind PROFILE.md, one subcommand each.

    python benchmarks/profiling.py hotpath [--n 200000] [--repeat 5]   # PROFILE.md section 1
    python benchmarks/profiling.py batch [--repeat 5]                  # section 2
    python benchmarks/profiling.py wake [--n 20000] [--repeat 3]       # section 3
    python benchmarks/profiling.py --tree /tmp/old hotpath             # another tree's pysyncq

Each runs in this one process with the pysyncq of ``--tree`` (default: this
checkout) first on ``sys.path``.  Cold start is a scenario of its own
(``run.py --only coldstart``); A/B comparisons are ``run.py --ab``.

* ``hotpath``: ns per call (best of ``--repeat``) of one append and one pop
  (16 B str body), their Python pieces, the futex wake syscall, and
  extend / pop_many per message; then, where this tree still has them
  (pysyncq's internals, which move), the kernels ``op_append`` and ``op_pop``
  called from Python and in one compiled loop, and numba's dispatch of empty
  kernels with the same argument types.
* ``batch``: extend / pop_many per message and per call by batch size, each
  timing refilling (or draining) the queue outside the timed statement.
* ``wake``: the floors of a blocked reader's wake-up: a bare futex ping-pong
  between two processes and the same with ``sched_yield`` polling (ctypes,
  no pysyncq), against pysyncq's echo (parent + echo child, and + a child
  that screens the echoes) asleep in ``pop(block=True)`` or first spinning
  on ``pop(block=False)`` (what a user-level spin buys, or costs, on
  oversubscribed cores).
"""

import argparse
import ctypes
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent


def best(stmt, env, number, repeat):
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=repeat)) / number * 1e9


# -- hotpath ---------------------------------------------------------------------------------


def _kernel_env(w, r, body16):
    """The internals the kernel rows need, or None where they have moved.  The
    empty kernels and the loop are compiled here, not cached: a cached loop
    would outlive a change to the kernels it calls."""
    try:
        from numba import njit

        from pysyncq import kernels
        from pysyncq.layout import KIND_STR

        m_w, m_r = w._m, r._m
        env = dict(
            k=kernels,
            mem=w._mem,
            tok=m_w.token,
            wslot=m_w.slot,
            rslot=m_r.slot,
            rtok=m_r.token,
            snd=m_w.sender_bytes,
            t=b"t",
            kind=KIND_STR,
            scr=_screens(r),
            out=m_r.out,
            bbody=body16.encode(),
        )
    except (ImportError, AttributeError) as e:
        print(f"(kernel rows skipped: this tree's internals moved: {e})")
        return None

    @njit
    def noop7(mem, lockval, slot, sender, mtype, body, kind):
        return 0

    @njit
    def noop5(mem, lockval, slot, scr, out):
        return 0, 0, 0, 0, 0

    @njit
    def noop1(x):
        return x

    @njit
    def loop(mem, token, wslot, rslot, sender, mtype, body, kind, scr, out, n):
        """n appends and pops inside one compiled call: the kernels without dispatch."""
        acc = 0
        for _ in range(n):
            acc += kernels.op_append(mem, token, wslot, sender, mtype, body, kind)
            acc += kernels.op_pop(mem, token, rslot, scr, out, 0)[0]
        return acc

    env.update(noop7=noop7, noop5=noop5, noop1=noop1, loop=loop)
    return env


def _screens(q):
    """The screen table of handle ``q``, wherever the tree keeps it."""
    try:
        from pysyncq import _handle

        return _handle.screens(q)
    except ImportError:  # trees before the house's rooms
        return q._screens()


def hotpath(a):
    from pysyncq import PySyncQ

    n, rep = a.n, a.repeat
    w = PySyncQ(size=1 << 24)
    r = PySyncQ(w.name, create=False)
    try:
        w.open("writer", reader=False)
        r.open("reader")
        body16 = "x" * 16
        env = dict(
            w=w,
            r=r,
            body=body16,
            bbody=body16.encode(),
            mv=memoryview(bytearray(64)),
            lk=threading.Lock(),
            bodies10=[body16] * 10,
            bodies100=[body16] * 100,
            bodies1000=[body16] * 1000,
        )

        def row(label, stmt, per=1, number=n):
            ns = best(stmt, env, number, rep) / per
            print(f"{label:58s} {ns:8.0f} ns", flush=True)

        print(f"n={n}, best of {rep}; 16 B str bodies, type 't'\n")
        for _ in range(1000):  # warm every path first
            w.append("t", body16)
            r.pop()
        row("append + pop (str, decode=True)", "w.append('t', body); r.pop()")
        row("append + pop (bytes, decode=False)", "w.append(b't', bbody); r.pop(decode=False)")
        row("append alone (then pops untimed)", "w.append('t', body)", number=n // 4)
        while r.pop() is not None:
            pass
        for _ in range(n // 4 * rep):
            w.append("t", body16)
        row("pop alone (str, decode=True)", "r.pop()", number=n // 4)
        row("pop on an empty queue (block=False)", "r.pop()")
        row("append memoryview(64 B) + pop", "w.append(b't', mv); r.pop(decode=False)")
        print()
        row("append piece: 'x'*16 .encode() (body)", "body.encode()")
        row("append piece: type check of timer", "type(0.5) is not float or not 0.5 >= 0")
        row("append piece: msgtype 't'.encode()", "'t'.encode()")
        row("append piece: bytes(memoryview(64 B))", "bytes(mv)")
        row("pop piece: decode 3 fields", "b'writer'.decode(); b't'.decode(); bbody.decode()")
        row("pop piece: threading.Lock acquire+release", "lk.acquire(); lk.release()")
        futex = _Futex()
        word = (ctypes.c_uint32 * 16)()
        env.update(futex=futex, addr=ctypes.addressof(word))
        row("futex wake syscall (nobody asleep)", "futex.wake(addr)")
        print()
        for size, key in ((10, "bodies10"), (100, "bodies100"), (1000, "bodies1000")):
            row(
                f"extend({size}) + pop_many({size}), per message",
                f"w.extend('t', {key}); r.pop_many({size})",
                per=size,
                number=max(1, n // size // 2),
            )
        kenv = _kernel_env(w, r, body16)
        if kenv is None:
            return
        env.update(kenv)
        print()
        row(
            "kernel op_append + op_pop, from Python",
            "k.op_append(mem, tok, wslot, snd, t, bbody, kind); "
            "k.op_pop(mem, rtok, rslot, scr, out, 0)",
        )
        exec("loop(mem, tok, wslot, rslot, snd, t, bbody, kind, scr, out, 10)", env)  # compile
        row(
            "kernel op_append + op_pop, in one compiled loop",
            "loop(mem, tok, wslot, rslot, snd, t, bbody, kind, scr, out, 1000)",
            per=1000,
            number=max(1, n // 1000),
        )
        row(
            "numba dispatch: empty kernel, op_append's 7 args",
            "noop7(mem, tok, wslot, snd, t, bbody, kind)",
        )
        row(
            "numba dispatch: empty kernel, op_pop's args, 5-tuple",
            "noop5(mem, rtok, rslot, scr, out)",
        )
        row("numba dispatch: empty kernel, one int", "noop1(1)")
    finally:
        r.close()
        w.close()


# -- batch -------------------------------------------------------------------------------------

BATCH_SIZES = (1, 10, 100, 1000)
BODY = 64


def timed(stmt, pre, n, env, repeat):
    """Best over ``repeat`` of the mean time of ``stmt``, each run after an untimed ``pre``."""
    stmt, pre = compile(stmt, "stmt", "exec"), compile(pre, "pre", "exec")
    result = float("inf")
    for _ in range(repeat):
        total = 0.0
        for _ in range(n):
            exec(pre, env)
            t = time.perf_counter()
            exec(stmt, env)
            total += time.perf_counter() - t
        result = min(result, total / n)
    return result


def batch(a):
    from pysyncq import PySyncQ

    w = PySyncQ(size=1 << 24)
    r = PySyncQ(w.name, create=False)
    try:
        w.open("writer", reader=False)
        r.open("reader")
        env = {"w": w, "r": r}
        for k in BATCH_SIZES:
            env[f"b{k}"] = [b"x" * BODY] * k
            env[f"s{k}"] = ["x" * BODY] * k
        for _ in range(100):
            w.extend("t", env["b10"])
            r.pop_many(10)
        print(f"best of {a.repeat}; {BODY} B bodies; ns per message (µs per call)\n")
        print("| batch | extend bytes | extend str | pop_many decode | pop_many decode=False |")
        print("|---:|---:|---:|---:|---:|")
        for k in BATCH_SIZES:
            n = max(200, 20000 // k)
            cells = [
                timed(f"w.extend('t', b{k})", f"r.pop_many({k})", n, env, a.repeat),
                timed(f"w.extend('t', s{k})", f"r.pop_many({k})", n, env, a.repeat),
                timed(f"r.pop_many({k})", f"w.extend('t', s{k})", n, env, a.repeat),
                timed(f"r.pop_many({k}, decode=False)", f"w.extend('t', b{k})", n, env, a.repeat),
            ]
            print(
                f"| {k} | "
                + " | ".join(f"{c / k * 1e9:,.0f} ({c * 1e6:,.1f})" for c in cells)
                + " |"
            )
        print()
        for label, stmt, pre in (
            ("empty pop_many(100)", "r.pop_many(100)", "pass"),
            ("append (64 B bytes)", "w.append('t', b1[0])", "r.pop()"),
            ("pop (decode=False)", "r.pop(decode=False)", "w.append('t', b1[0])"),
        ):
            print(f"{label:24s} {timed(stmt, pre, 20000, env, a.repeat) * 1e9:8,.0f} ns a call")
    finally:
        r.close()
        w.close()


# -- wake ----------------------------------------------------------------------------------------


class _Futex:
    """FUTEX_WAIT / FUTEX_WAKE through ctypes, pysyncq nowhere: the floor."""

    SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine())

    def __init__(self):
        if self.SYS_FUTEX is None:
            raise SystemExit(f"futex syscall number unknown on {platform.machine()}")
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long

    def wait(self, addr, expected, timeout):
        ts = (ctypes.c_long * 2)(int(timeout), int((timeout % 1) * 1e9))
        self.libc.syscall(self.SYS_FUTEX, ctypes.c_void_p(addr), 0, expected, ts, None, 0)

    def wake(self, addr):
        self.libc.syscall(self.SYS_FUTEX, ctypes.c_void_p(addr), 1, 2**31 - 1, None, None, 0)


def pingpong(n, yield_poll):
    """Two processes bumping two words in turn (futex sleeps or sched_yield
    polling); one-way µs."""
    buf = mp.RawArray(ctypes.c_uint32, 32)
    addr = ctypes.addressof(buf)
    a, b = addr, addr + 64
    futex = _Futex()

    def side(mine, theirs, first, n):
        w = (ctypes.c_uint32 * 1).from_address
        me, them = w(mine), w(theirs)
        for i in range(n):
            if not first:
                while them[0] == i:
                    os.sched_yield() if yield_poll else futex.wait(theirs, i, 1.0)
            me[0] = i + 1
            if not yield_poll:
                futex.wake(mine)
            if first:
                while them[0] == i:
                    os.sched_yield() if yield_poll else futex.wait(theirs, i, 1.0)

    p = mp.get_context("fork").Process(target=side, args=(b, a, False, n))
    p.start()
    t0 = time.perf_counter()
    side(a, b, True, n)
    dt = time.perf_counter() - t0
    p.join(10)
    return dt / n / 2 * 1e6


def _popper(q, spin):
    pop = q.pop
    if not spin:
        return lambda: pop(True, 10.0, False)
    pc = time.perf_counter

    def p():
        end = pc() + spin
        while pc() < end:
            m = pop(False, 0.0, False)
            if m is not None:
                return m
        return pop(True, 10.0, False)

    return p


def _wake_child(q, role, spin):
    q.open(role)
    q.scrntype.add("echo")
    pop = _popper(q, spin)
    while True:
        m = pop()
        if m is None or m[1] == b"stop":
            break
        if role == "echo":
            q.append("echo", m[2])
    q.close()


def echo(n, discarder, spin):
    from pysyncq import PySyncQ

    ctx = mp.get_context("fork")
    q = PySyncQ(size=1 << 22)
    roles = ["echo"] + (["discard"] if discarder else [])
    procs = [ctx.Process(target=_wake_child, args=(q, r, spin)) for r in roles]
    for p in procs:
        p.start()
    q.open("parent")
    q.scrntype.add("data")
    q.wait_for_readers(len(roles), timer=30)
    pop = _popper(q, spin)
    body = b"x" * 16
    for _ in range(200):
        q.append("data", body)
        pop()
    t0 = time.perf_counter()
    for _ in range(n):
        q.append("data", body)
        pop()
    dt = time.perf_counter() - t0
    q.append("stop", b"")
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    q.close()
    return dt / n / 2 * 1e6


def wake(a):
    print(f"load average {os.getloadavg()[0]:.2f}; one-way µs, median of {a.repeat}")
    for label, kw in [
        ("parent + echo child, sleep", dict(discarder=False, spin=0)),
        ("parent + echo + discarding child, sleep", dict(discarder=True, spin=0)),
        ("parent + echo child, spin then sleep", dict(discarder=False, spin=a.spin)),
        ("parent + echo + discarding child, spin then sleep", dict(discarder=True, spin=a.spin)),
    ]:
        us = statistics.median(echo(a.n, **kw) for _ in range(a.repeat))
        print(f"{label:50s} {us:6.1f} µs")
    for label, y in (("bare futex ping-pong", False), ("bare sched_yield ping-pong", True)):
        us = statistics.median(pingpong(a.n, y) for _ in range(a.repeat))
        print(f"{label:50s} {us:6.1f} µs")


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tree", type=Path, default=HERE.parent, help="the pysyncq checkout to import")
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("hotpath", help="one append and one pop, in one process")
    s.add_argument("--n", type=int, default=200_000)
    s.add_argument("--repeat", type=int, default=5)
    s = sub.add_parser("batch", help="extend / pop_many per message and per call")
    s.add_argument("--repeat", type=int, default=5)
    s = sub.add_parser("wake", help="a blocked reader's wake-up, and its floors")
    s.add_argument("--n", type=int, default=20000)
    s.add_argument("--repeat", type=int, default=3)
    s.add_argument("--spin", type=float, default=50e-6)
    a = p.parse_args()
    sys.path.insert(0, str(a.tree.resolve()))
    import pysyncq

    print(f"pysyncq from {Path(pysyncq.__file__).parent}")
    {"hotpath": hotpath, "batch": batch, "wake": wake}[a.what](a)


if __name__ == "__main__":
    main()
