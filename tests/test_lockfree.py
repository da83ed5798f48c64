"""Pops without the lock, under real concurrency: writers wrap a small ring
many times (padding, refreshing the head, waiting for space) while readers
pop; every reader must see every message, in order, intact, and nobody may
see a corrupt segment (a position read while a writer moved another one is
not corruption).  Sizes vary so records straddle the ring's end.
"""

import hashlib
import multiprocessing as mp

import numpy as np
import pytest

from pysyncq import PySyncQ

FORK = mp.get_context("fork")
N = 4000


def body_of(i):
    n = 64 + (i * 7919) % 6000
    head = i.to_bytes(4, "little")
    return head + hashlib.blake2b(head, digest_size=16).digest() * (n // 16)


def reader(q, name, ready, results, arrays):
    try:
        q.open(name)
        ready.set()
        for i in range(N):
            m = q.pop(block=True, timer=20, decode=False)
            if m is None:
                results.put((name, "timeout", i))
                return
            _, t, b = m
            if arrays:
                want = np.arange(i % 700, dtype=np.int64)
                if t != b"a" or not np.array_equal(b, want):
                    results.put((name, "bad array", i))
                    return
            elif t != b"b" or b != body_of(i):
                results.put((name, "bad body", i))
                return
        results.put((name, "ok", N))
    except BaseException as e:  # reported to the parent
        results.put((name, "error", repr(e)))


@pytest.mark.parametrize("arrays", [False, True], ids=["bytes", "arrays"])
def test_two_readers_keep_up_with_a_wrapping_writer(qname, procs, arrays):
    q = PySyncQ(qname, size=1 << 15)
    with q:
        results = FORK.Queue()
        readies = [FORK.Event() for _ in range(2)]
        for k, ev in enumerate(readies):
            procs.start(reader, q, f"r{k}", ev, results, arrays)
        for ev in readies:
            assert ev.wait(30)
        q.open("w", reader=False)
        for i in range(N):
            if arrays:
                q.append_array("a", np.arange(i % 700, dtype=np.int64), block=True, timer=20)
            else:
                q.append("b", body_of(i), block=True, timer=20)
        got = sorted(results.get(timeout=60) for _ in readies)
        procs.join(timeout=30)
        assert got == [("r0", "ok", N), ("r1", "ok", N)]
