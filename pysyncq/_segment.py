"""POSIX shared-memory segments, without ``multiprocessing.shared_memory``.

``SharedMemory`` registers every segment with the ``resource_tracker``, which
then warns about "leaked" segments, or unlinks them, when the process that
created them exits, even though other processes still use them (Python < 3.13
has no way to opt out).  A pysyncq queue decides itself when its name is
unlinked (the last member to leave does it), so it talks to ``shm_open``
directly and no tracker is involved.
"""

import errno
import mmap
import os
import struct
import time

import numpy as np

from . import kernels
from ._proc import namespaces
from .errors import NotAQueue, QueueCorrupt
from .layout import (
    C_CURSOR,
    C_RECORD,
    H_CAPACITY,
    H_HEAD,
    H_INSTANCE,
    H_MAGIC,
    H_NSLOTS,
    H_RING_OFFSET,
    H_SLOT_HWM,
    H_VERSION,
    H_WRITE_POS,
    HEADER_BYTES,
    HEADER_WORDS,
    LAYOUT_VERSION,
    MAGIC,
    MAX_SLOTS,
    S_CURSOR,
    S_FLAGS,
    S_STATE,
    SF_READER,
    SLOT_ACTIVE,
    SLOT_WORDS,
    ring_offset,
    segment_bytes,
)

try:
    import _posixshmem
except ImportError:  # pragma: no cover - every POSIX CPython has it
    _posixshmem = None

#: Where Linux keeps POSIX shared memory; used only to list queues.
SHM_DIR = "/dev/shm"
#: How long an attach waits for a segment that is still being formatted.
FORMAT_GRACE = 1.0


def _path(name):
    return "/" + name


def _open(name, flags, mode=0o600):
    if _posixshmem is None:  # pragma: no cover
        raise OSError(errno.ENOSYS, "POSIX shared memory is not available on this platform")
    return _posixshmem.shm_open(_path(name), flags, mode=mode)


def unlink(name):
    """Remove ``name``; a name that is already gone is not an error."""
    try:
        _posixshmem.shm_unlink(_path(name))
    except FileNotFoundError:
        pass


def read_header(name):
    """The header words of segment ``name`` as a tuple, or None if it is not a queue.

    Reads with ``pread`` and maps nothing, so it is safe on any segment.
    """
    try:
        fd = _open(name, os.O_RDONLY)
    except (FileNotFoundError, PermissionError, ValueError, OSError):
        return None
    try:
        data = os.pread(fd, HEADER_BYTES, 0)
    finally:
        os.close(fd)
    if len(data) < HEADER_BYTES:
        return None
    words = struct.unpack(f"<{HEADER_BYTES // 8}q", data)
    return words if words[H_MAGIC] == MAGIC else None


def lost_its_magic(name):
    """True if segment ``name`` has a pysyncq header in every word but the
    magic one (overwritten): version, geometry and positions all fit."""
    try:
        fd = _open(name, os.O_RDONLY)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, HEADER_BYTES, 0)
    finally:
        os.close(fd)
    if len(data) < HEADER_BYTES:
        return False
    words = list(struct.unpack(f"<{HEADER_BYTES // 8}q", data))
    words[H_MAGIC] = MAGIC
    return header_problem(words, size) is None


def unlink_instance(name, instance):
    """Unlink ``name`` only if it still names the segment ``instance``, so that
    a queue created meanwhile under the same name is left alone."""
    header = read_header(name)
    if header is not None and header[H_INSTANCE] == instance:
        unlink(name)


def new_instance_id():
    return int.from_bytes(os.urandom(8), "little") & ((1 << 62) - 1) | 1


class Segment:
    """This process's mapping of one queue segment.

    ``mem`` is the whole segment as a writable uint8 array (what the kernels
    take); ``words`` the same memory as int64; ``addr`` its address, for the
    futex calls.  A forked child shares the parent's mapping object and may
    close its own copy.
    """

    def __init__(self, name, mm):
        self.name = name
        self._mm = mm
        self.mem = np.frombuffer(mm, np.uint8)
        self.words = self.mem.view(np.int64)
        self.addr = self.mem.ctypes.data
        self.capacity = int(self.words[H_CAPACITY])
        self.nslots = int(self.words[H_NSLOTS])
        self.ring_offset = ring_offset(self.nslots)
        self.instance = int(self.words[H_INSTANCE])

    @classmethod
    def create(cls, name, capacity, nslots, creator, start_pos=0):
        """Create and format a new segment; ``FileExistsError`` if the name is taken."""
        fd = _open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
        total = segment_bytes(capacity, nslots)
        try:
            try:
                # Reserve the memory now: on a full /dev/shm this fails here with
                # a clear error instead of killing a process with SIGBUS later.
                os.posix_fallocate(fd, 0, total)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise MemoryError(
                        f"cannot reserve {total} bytes of shared memory for queue {name!r}: "
                        f"{os.strerror(e.errno)}; choose a smaller size or free space in "
                        f"{SHM_DIR}"
                    ) from None
                os.ftruncate(fd, total)  # no fallocate on this filesystem
            mm = mmap.mmap(fd, total)
        except BaseException:
            os.close(fd)
            unlink(name)
            raise
        os.close(fd)
        offset = ring_offset(nslots)
        mem = np.frombuffer(mm, np.uint8)
        # Everything, the namespaces included, is in place before the magic
        # word (stored last) lets another process attach.
        pidns, timens = namespaces()
        try:
            kernels.ring_format(
                mem, capacity, nslots, offset, new_instance_id(), creator, start_pos, pidns, timens
            )
        except BaseException:
            # Never formatted (a Ctrl-C, a kernel that cannot run): nobody can
            # attach to it or reclaim it as a queue, so it must not stay.
            del mem
            unlink(name)
            try:
                mm.close()
            except BufferError:  # the traceback still holds the array: the gc unmaps
                pass
            raise
        del mem
        return cls(name, mm)

    @classmethod
    def attach(cls, name):
        """Map an existing queue.  ``FileNotFoundError`` or ``NotAQueue``."""
        fd = _open(name, os.O_RDWR)
        try:
            deadline = time.monotonic() + FORMAT_GRACE
            while True:
                size = os.fstat(fd).st_size
                words = None
                if size >= HEADER_BYTES:
                    data = os.pread(fd, HEADER_BYTES, 0)
                    words = struct.unpack(f"<{HEADER_BYTES // 8}q", data)
                    if words[H_MAGIC] == MAGIC:
                        break
                # Either not ours, or a creator is formatting it right now.
                if time.monotonic() > deadline or (words is not None and words[H_MAGIC] != 0):
                    raise NotAQueue(
                        f"shared memory {name!r} exists but is not a pysyncq queue; "
                        f"use another name (or remove it if it is a leftover)"
                    )
                time.sleep(0.001)
            _check_header(name, words, size)
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, mm)

    def unlink_if_same(self):
        """Unlink the name if it still names this segment (not a later queue)."""
        unlink_instance(self.name, self.instance)

    def close(self):
        """Unmap.  Where a caller still holds a view of the memory, the unmapping
        is left to the garbage collector."""
        mm = self._mm
        if mm is None:
            return
        self._mm = self.mem = self.words = None
        try:
            mm.close()
        except BufferError:
            pass


def header_problem(words, size):
    """What is wrong with header ``words`` of a ``size``-byte segment, or None.

    The plain-Python twin of ``kernels.header_check``, with words: it names the
    word, its value and what was expected.
    """
    if words[H_MAGIC] != MAGIC:
        return f"magic word is {words[H_MAGIC]:#x}, expected {MAGIC:#x}"
    if words[H_VERSION] != LAYOUT_VERSION:
        return (
            f"layout version is {words[H_VERSION]}, this pysyncq reads version "
            f"{LAYOUT_VERSION}; use the same pysyncq everywhere"
        )
    cap, nslots, offset = words[H_CAPACITY], words[H_NSLOTS], words[H_RING_OFFSET]
    if not 1 <= nslots <= MAX_SLOTS:
        return f"slot count (word {H_NSLOTS}) is {nslots}, expected 1 to {MAX_SLOTS}"
    if offset != ring_offset(nslots):
        return f"ring offset (word {H_RING_OFFSET}) is {offset}, expected {ring_offset(nslots)}"
    if cap < 16 or cap % 8:
        return f"capacity (word {H_CAPACITY}) is {cap}, expected a multiple of 8 of at least 16"
    if segment_bytes(cap, nslots) > size:
        return (
            f"capacity (word {H_CAPACITY}) {cap} and {nslots} slots need "
            f"{segment_bytes(cap, nslots)} bytes, but the segment has {size}"
        )
    hwm = words[H_SLOT_HWM]
    if not 0 <= hwm <= nslots:
        return f"slot high-water mark (word {H_SLOT_HWM}) is {hwm}, expected 0 to {nslots}"
    end, head = words[H_WRITE_POS], words[H_HEAD]
    if head < 0 or end % 8 or head % 8 or not head <= end <= head + cap:
        return (
            f"write position (word {H_WRITE_POS}) is {end} and head (word {H_HEAD}) is "
            f"{head}: expected multiples of 8 with 0 <= head <= write position <= head + "
            f"capacity ({cap})"
        )
    return None


def corruption(seg, reason, value=0, pos=0):
    """The message of a ``QueueCorrupt`` for a kernel's ``CORRUPT`` reason."""
    words = seg.words
    what = None
    if reason == C_CURSOR:
        end, head = int(words[H_WRITE_POS]), int(words[H_HEAD])
        for slot in range(min(int(words[H_SLOT_HWM]), seg.nslots)):
            at = HEADER_WORDS + slot * SLOT_WORDS
            if words[at + S_STATE] == SLOT_ACTIVE and words[at + S_FLAGS] & SF_READER:
                c = int(words[at + S_CURSOR])
                if not head <= c <= end or c % 8:
                    what = (
                        f"the cursor of slot {slot} (word {at + S_CURSOR}) is {c}, expected a "
                        f"multiple of 8 between the head {head} and the write position {end}"
                    )
                    break
    elif reason == C_RECORD:
        cap = seg.capacity
        what = (
            f"the record at position {pos} (ring offset {pos % cap}) has a size or meta word "
            f"of {value} ({value:#x}): expected a multiple of 8 of at least 16 that ends "
            f"before the end of the ring and the write position, with fields that fit in it"
        )
    if what is None:
        what = header_problem(tuple(int(x) for x in words[:HEADER_WORDS]), len(seg.mem))
    if what is None:
        what = "an inconsistent value was seen (it has changed since)"
    return (
        f"queue {seg.name!r} is corrupt: {what}.  Something wrote over its shared memory; "
        f"close the handles, remove it (python -m pysyncq clean --force {seg.name}) and "
        f"create it again"
    )


def _check_header(name, words, size):
    problem = header_problem(words, size)
    if problem is None:
        return
    if words[H_VERSION] != LAYOUT_VERSION:
        raise NotAQueue(f"queue {name!r} cannot be read: {problem}")
    raise QueueCorrupt(
        f"queue {name!r} is corrupt: {problem}; remove it (python -m pysyncq clean "
        f"--force {name}) and create it again"
    )


def list_queues():
    """Names of the pysyncq queues in ``SHM_DIR`` (empty where there is none)."""
    try:
        names = sorted(os.listdir(SHM_DIR))
    except OSError:
        return []
    return [n for n in names if read_header(n) is not None]
