"""The watcher of one queue: removes its segment once no live process holds it.

    python -I -S /path/to/pysyncq/_watcher.py NAME INSTANCE PACKAGE_PARENT

Started by the process that creates a queue (:mod:`pysyncq._watch`), in a
session of its own, so that what kills its creator (SIGKILL, a batch
scheduler's SIGTERM, a notebook's SIGINT to the kernel's process group, a
kernel restart) does not kill it.  It runs as a plain script, without
``site``, and imports only the standard library while it watches: it starts in
about 10 ms and holds a few MB; no numpy, no numba.

Every ``POLL`` seconds it reads the segment's header and member table with
``pread`` (it maps nothing) and asks whether any process that holds the queue,
as a member or as its creator, is alive.  It leaves as soon as the segment is
gone or replaced (the name was unlinked, by whoever) or marked unlinked.
When every holder has ended it does not remove anything itself: it becomes a
full interpreter then (``exec`` of itself with ``--reclaim``, with ``site``
and the environment's ``PYTHONPATH``), imports pysyncq, and frees the dead
processes' holds under the queue's lock, as any process does when it finds
dead members (``_lifecycle.reclaim_abandoned``); the last hold freed unlinks
the name.  So a process opening the queue at that moment is either counted,
and the queue stays, or finds it marked unlinked, never half of each.
Durable slots (``open(durable=True)``) keep the queue for their process's
next run, as they do everywhere.
Where the queue spans pid or time namespaces nobody judges members dead, the
watcher neither.

The header constants are copied from :mod:`pysyncq.layout` (which imports
numpy); ``tests/test_watch.py`` checks that they agree.
"""

import os
import sys

# This file's own folder (the package) must not be importable as top-level
# modules, as it is when this runs as a script without -I: it holds a
# ``queue.py``.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import struct  # noqa: E402
import time  # noqa: E402

#: Seconds between two looks at the member table.
POLL = 0.2

MAGIC = int.from_bytes(b"PYSYNCQ\x01", "little")
HEADER_BYTES = 320
HEADER_WORDS = HEADER_BYTES // 8
SLOT_BYTES = 128
SLOT_WORDS = SLOT_BYTES // 8
H_MAGIC = 0
H_NSLOTS = 3
H_INSTANCE = 5
H_CREATOR = 6
H_FLAGS = 7
H_SLOT_HWM = 20
F_UNLINKED = 1
F_FOREIGN_NS = 2
S_STATE = 0
S_TOKEN = 1
S_FLAGS = 3
SLOT_ACTIVE = 1
SF_DURABLE = 2
PID_BITS = 22
PID_MASK = (1 << PID_BITS) - 1
START_MASK = (1 << (62 - PID_BITS)) - 1


def is_alive(token):
    """False only if the process named by ``token`` has certainly ended (as
    ``pysyncq._proc.is_alive``: a zombie has ended, a start time that differs
    names a later process, and what cannot be read counts as alive)."""
    pid = token & PID_MASK
    if pid == 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    try:
        rest = data[data.rindex(b")") + 2 :].split()
        state, start = rest[0], int(rest[19])
    except (ValueError, IndexError):
        return True
    if state in (b"Z", b"X", b"x"):
        return False
    return (start & START_MASK) == (token >> PID_BITS) & START_MASK


def holders(fd):
    """``(tokens, durable)`` of the segment open on ``fd``: every member's
    and the creator's token, and whether a durable slot is among them; None
    when the segment is no longer one to watch."""
    head = os.pread(fd, HEADER_BYTES, 0)
    if len(head) < HEADER_BYTES:
        return None
    w = struct.unpack(f"<{HEADER_WORDS}q", head)
    if w[H_MAGIC] != MAGIC or w[H_FLAGS] & F_UNLINKED:
        return None
    nslots = max(0, min(w[H_NSLOTS], w[H_SLOT_HWM]))
    table = os.pread(fd, nslots * SLOT_BYTES, HEADER_BYTES)
    nslots = len(table) // SLOT_BYTES
    s = struct.unpack(f"<{nslots * SLOT_WORDS}q", table[: nslots * SLOT_BYTES])
    tokens = [w[H_CREATOR]] if w[H_CREATOR] else []
    durable = False
    for i in range(nslots):
        base = i * SLOT_WORDS
        if s[base + S_STATE] == SLOT_ACTIVE:
            tokens.append(s[base + S_TOKEN])
            durable = durable or bool(s[base + S_FLAGS] & SF_DURABLE)
    return tokens, durable


def watch(name, instance, package_parent, full=False):
    """Watch queue ``name`` (the segment ``instance``) until it is gone, and
    reclaim it when every holder has ended: a light watcher (not ``full``)
    becomes a full one for that, which looks at once.  Returns what ended
    the watch."""
    import _posixshmem

    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    except OSError:
        return "gone"
    try:
        head = os.pread(fd, 8 * (H_INSTANCE + 1), 0)
        if len(head) < 8 * (H_INSTANCE + 1) or struct.unpack_from("<q", head, 8 * H_INSTANCE) != (
            instance,
        ):
            return "replaced"
        pause = not full
        while True:
            if pause:
                time.sleep(POLL)
            pause = True
            if os.fstat(fd).st_nlink == 0:
                return "gone"  # unlinked: whoever did it owns the rest
            found = holders(fd)
            if found is None:
                return "unlinked"
            tokens, durable = found
            if durable:
                continue  # kept for its process's next run, while it has one
            if any(is_alive(t) for t in tokens):
                continue
            if not full:
                become_full(name, instance, package_parent)  # returns only if exec failed
                full = True
            if not reclaim(name, instance, package_parent):
                return "not judged"  # another namespace, or pysyncq cannot be imported
    finally:
        os.close(fd)


def become_full(name, instance, package_parent):
    """Replace this light watcher by a full interpreter that reclaims (and
    then watches on, should the queue stay)."""
    argv = [sys.executable, os.path.abspath(__file__), name, str(instance), package_parent]
    try:
        os.execv(sys.executable, [*argv[:2], "--reclaim", *argv[2:]])
    except OSError:
        pass  # then this one reclaims, if it can import pysyncq


def reclaim(name, instance, package_parent):
    """Free the dead holds under the lock (pysyncq imported now, once).
    False when this process may not judge (or cannot import pysyncq)."""
    if package_parent not in sys.path:
        sys.path.insert(0, package_parent)
    try:
        from pysyncq import _lifecycle
    except Exception:  # noqa: BLE001 - nothing to do it with: leave it to `pysyncq clean`
        return False
    return _lifecycle.reclaim_abandoned(name, instance)


def main(argv):
    full = argv[:1] == ["--reclaim"]
    name, instance, package_parent = argv[full:]
    if not full:
        # Hold nothing of the creator's: no inherited descriptor (a pipe
        # someone waits to see closed), no folder (a temporary one), and be
        # no child of it (a zombie there, or a pid its os.wait() collects):
        # the creator reaps the first process, which ends at once.
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096)
        os.chdir("/")
        if os.fork():
            os._exit(0)
    watch(name, int(instance), package_parent, full)


if __name__ == "__main__":
    main(sys.argv[1:])
