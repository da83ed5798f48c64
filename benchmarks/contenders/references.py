"""References: floors to read the queues against, not queues themselves."""

import os
import time
from multiprocessing import shared_memory

import numpy as np
from harness import FOREVER, KILL, SHM_PREFIX

from . import ArrayContender, Transport
from .stdlib import TYPES, PipesBack


def _wait_for(cond, deadline, what):
    """Spin with ``sched_yield`` for a while, then sleep in growing steps, until
    ``cond()``; raise ``TimeoutError`` at ``deadline`` (a monotonic time)."""
    for _ in range(200):
        if cond():
            return
        os.sched_yield()
    nap = 1e-5
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"copy-ring: gave up waiting for {what}")
        time.sleep(nap)
        nap = min(nap * 2, 1e-3)


class CopyRingTransport(PipesBack, Transport):
    """The copy reference: a lock-free broadcast ring in shared memory.

    ``nslots`` fixed-size slots; the writer waits until the slowest reader has
    freed the slot, copies the body in (one memcpy, a memoryview slice
    assignment), then stores the write counter; reader ``i`` waits for the
    counter, copies the body out (one memcpy, ``bytes(slice)``) and stores its
    own read counter.  Every counter has one writer and its own cache line;
    waits spin with ``sched_yield`` and then sleep (no futex): the one
    contender that polls.  Plain Python stores in program order, which x86's
    memory model keeps in order: an honest reference for x86 only.  Control
    messages back to the parent go over a Pipe per child (``PipesBack``);
    one way only (fanout).
    """

    name = "copy-ring"
    reference = True
    one_way = True
    counts = {"fanout": 30000}
    LINE = 8  # int64 words per cache line

    def __init__(self, nchildren, capacity, tag, msg_size):
        self.k = nchildren
        self.slot = (16 + max(msg_size, 64) + 63) & ~63
        self.nslots = max(4, capacity // self.slot)
        ctrl = 8 * self.LINE * (nchildren + 1)
        self.data_at = ctrl + 64 * self.nslots  # slot meta: len, type code
        self.shm = shared_memory.SharedMemory(
            f"{SHM_PREFIX}{tag}_ring", create=True, size=self.data_at + self.slot * self.nslots
        )
        self._make_back(nchildren)

    def _views(self):
        buf = self.shm.buf
        words = buf[: self.data_at].cast("q")
        return buf, words

    def parent_open(self):
        buf, w = self._views()
        L, k, nslots, slot, data_at = self.LINE, self.k, self.nslots, self.slot, self.data_at
        ctrl_end = L * (k + 1)
        code = {t: i for i, t in enumerate(TYPES)}
        state = {"seq": 0}

        def send(typ, body):
            seq = state["seq"]
            if seq - min(w[L * (i + 1)] for i in range(k)) >= nslots:
                _wait_for(
                    lambda: seq - min(w[L * (i + 1)] for i in range(k)) < nslots,
                    time.monotonic() + 60,
                    "space",
                )
            s = seq % nslots
            n = len(body)
            at = data_at + s * slot
            buf[at : at + n] = body
            w[ctrl_end + 8 * s] = n
            w[ctrl_end + 8 * s + 1] = code[typ]
            state["seq"] = w[0] = seq + 1

        self.send = self.send_stream = send
        self._open_back_parent()

    def child_open(self, i):
        buf, w = self._views()
        L, nslots, slot, data_at = self.LINE, self.nslots, self.slot, self.data_at
        mine = L * (i + 1)
        ctrl_end = L * (self.k + 1)
        types = TYPES
        state = {"seq": w[mine]}

        def recv():
            seq = state["seq"]
            if w[0] <= seq:
                _wait_for(lambda: w[0] > seq, time.monotonic() + FOREVER, "data")
            s = seq % nslots
            n = w[ctrl_end + 8 * s]
            typ = types[w[ctrl_end + 8 * s + 1]]
            at = data_at + s * slot
            body = bytes(buf[at : at + n])
            state["seq"] = w[mine] = seq + 1
            return typ, body

        self.recv = recv
        self._open_back_child(i)

    def send_kill(self):
        self.send(KILL, b"")

    def child_close(self):
        self.recv = self.send = None
        try:
            self.shm.close()
        except BufferError:
            pass

    def parent_close(self):
        self.send = self.send_stream = None
        try:
            self.shm.close()
        except BufferError:
            pass

    def cleanup(self):
        try:
            self.shm.unlink()
            return []
        except FileNotFoundError:
            return []


class MemcpyArrays(ArrayContender):
    """One ``np.copyto`` of the same bytes in the worker, into memory that is
    not in cache (MB/s of a single copy; R plays no part).

    Seconds for ``count`` single copies of ``size`` bytes: ``np.copyto`` of the
    same source into successive places of a 64 MiB buffer, twice the 2-core
    machine's L3 cache, so that the destination is not in cache (as a
    transport's is not); the median of 5 timings.  ``memcpy`` copies into
    ``np.empty`` memory, which numpy asks to be backed by 2 MiB pages
    (MADV_HUGEPAGE) where the kernel allows it; ``memcpy shm`` into a
    ``/dev/shm`` mapping, the memory every shared-memory transport here
    writes, which has 4 KiB pages unless the tmpfs is mounted with ``huge=``.
    On the 2-core VM the same copy ran at about 20 GB/s into the first and
    12-14 GB/s into the second (and into anonymous memory without huge pages).
    """

    name = "memcpy"
    reference = True
    shm = False

    def sample(self, size, k, count, tag):
        src = self.source(size)
        nbytes = max(64 << 20, 4 * size)
        if not self.shm:
            return _copies(src, count, np.empty(nbytes // 8))
        block = shared_memory.SharedMemory(f"{SHM_PREFIX}{tag}_memcpy", True, nbytes)
        try:
            return _copies(src, count, np.ndarray(nbytes // 8, np.float64, block.buf))
        finally:
            block.close()
            block.unlink()


class MemcpyShmArrays(MemcpyArrays):
    """The same copy into a ``/dev/shm`` mapping: the kind of memory (4 KiB
    pages here, where ``np.empty`` gets 2 MiB ones) a shared-memory transport
    must write."""

    name = "memcpy shm"
    shm = True


def _copies(src, count, dst):
    n = src.size
    slots = dst.size // n
    views = [dst[j * n : (j + 1) * n] for j in range(slots)]
    reps = max(16, min(count, 2000))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for j in range(reps):
            np.copyto(views[j % slots], src)
        times.append((time.perf_counter() - t0) / reps)
    views = dst = None
    return sorted(times)[2] * count
