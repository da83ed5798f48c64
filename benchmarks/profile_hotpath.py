"""Where the time of one append and one pop goes, in one process (PROFILE.md).

    python benchmarks/profile_hotpath.py [--n 200000] [--repeat 5]

Prints ns per call (best of ``--repeat``) of: append + pop of this checkout
(16 B str body), the numba kernels alone (op_append, op_pop with the
arguments prepared), numba's dispatch of an empty kernel with the same
argument types, each Python piece of the wrappers, the futex wake syscall,
and extend / pop_many per message at several batch sizes.  Standalone.
"""

import argparse
import sys
import threading
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from pysyncq import PySyncQ, _futex, kernels  # noqa: E402
from pysyncq.layout import H_DATA_SEQ, KIND_STR  # noqa: E402


@njit(cache=True)
def _noop7(mem, lockval, slot, sender, mtype, body, kind):
    return 0


@njit(cache=True)
def _noop5_tuple(mem, lockval, slot, scr, out):
    return 0, 0, 0, 0, 0


@njit(cache=True)
def _noop1(x):
    return x


@njit(cache=True)
def _kernel_loop(mem, token, wslot, rslot, sender, mtype, body, kind, scr, out, n):
    """n appends and pops inside one compiled call: the kernels without dispatch."""
    acc = 0
    for _ in range(n):
        acc += kernels.op_append(mem, token, wslot, sender, mtype, body, kind)
        acc += kernels.op_pop(mem, token, rslot, scr, out, 0)[0]
    return acc


def best(stmt, env, number, repeat):
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=repeat)) / number * 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    n, rep = a.n, a.repeat
    w = PySyncQ(size=1 << 24)
    r = PySyncQ(w.name, create=False)
    try:
        w.open("writer", reader=False)
        r.open("reader")
        m_w, m_r = w._m, r._m
        mem = w._mem
        scr = r._screens()
        out = m_r.out
        body16 = "x" * 16
        env = dict(
            w=w,
            r=r,
            body=body16,
            bbody=body16.encode(),
            mv=memoryview(bytearray(64)),
            k=kernels,
            mem=mem,
            tok=m_w.token,
            wslot=m_w.slot,
            rtok=m_r.token,
            rslot=m_r.slot,
            snd=m_w.sender_bytes,
            t=b"t",
            kind=KIND_STR,
            scr=scr,
            out=out,
            outmm=m_r.out_mm,
            np=np,
            noop7=_noop7,
            noop5=_noop5_tuple,
            noop1=_noop1,
            futex=_futex,
            addr=w._seg.addr + 8 * H_DATA_SEQ,
            lk=threading.Lock(),
            bodies10=[body16] * 10,
            bodies100=[body16] * 100,
            bodies1000=[body16] * 1000,
        )
        rows = []

        def row(label, stmt, per=1, number=n):
            ns = best(stmt, env, number, rep) / per
            rows.append((label, ns))
            print(f"{label:58s} {ns:8.0f} ns", flush=True)

        print(f"n={n}, best of {rep}; 16 B str bodies, type 't'\n")
        # Warm every path first.
        for _ in range(1000):
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
        row(
            "kernel op_append + op_pop, from Python",
            "k.op_append(mem, tok, wslot, snd, t, "
            "bbody, kind); k.op_pop(mem, rtok, rslot, scr, out, 0)",
        )
        _kernel_loop(
            mem,
            m_w.token,
            m_w.slot,
            m_r.slot,
            m_w.sender_bytes,
            b"t",
            body16.encode(),
            KIND_STR,
            scr,
            out,
            10,
        )
        env["loop"] = _kernel_loop
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
        print()
        row("append piece: 'x'*16 .encode() (body)", "body.encode()")
        row("append piece: type check of timer", "type(0.5) is not float or not 0.5 >= 0")
        row("append piece: msgtype 't'.encode()", "'t'.encode()")
        row("append piece: bytes(memoryview(64 B))", "bytes(mv)")
        row("pop piece: 3 slices of the out memoryview", "outmm[:6]; outmm[6:7]; outmm[7:23]")
        row("pop piece: decode 3 fields", "b'writer'.decode(); b't'.decode(); bbody.decode()")
        row("pop piece: threading.Lock acquire+release", "lk.acquire(); lk.release()")
        print()
        row("futex wake syscall (nobody asleep)", "futex.wake(addr)")
        print()
        for size, key in ((10, "bodies10"), (100, "bodies100"), (1000, "bodies1000")):
            row(
                f"extend({size}) + pop_many({size}), per message",
                f"w.extend('t', {key}); r.pop_many({size})",
                per=size,
                number=max(1, n // size // 2),
            )
    finally:
        r.close()
        w.close()


if __name__ == "__main__":
    main()
