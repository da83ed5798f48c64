"""``python -m pysyncq stat NAME [--json] [--watch [S]]`` and ``list``.

A live view of a queue from any shell, without joining it: each look opens
``/dev/shm/NAME`` read-only, copies the header and the member table with one
``pread`` and closes it again.  Nothing is mapped, nothing written, no lock
taken, no slot held, so the queue cannot tell it is being watched, and a
corrupt queue is shown as far as it can be (``stats.snapshot`` is safe on any
header), with what is wrong with it.
"""

import json
import os
import sys
import time
from dataclasses import asdict

import numpy as np

from . import _proc, _segment, kernels
from ._wait import may_judge
from .layout import (
    H_CAPACITY,
    H_HEAD,
    H_INSTANCE,
    H_NSLOTS,
    H_WRITE_POS,
    HEADER_BYTES,
    HEADER_WORDS,
    MAGIC,
    MAX_SLOTS,
    S_CURSOR,
    SLOT_BYTES,
    SLOT_WORDS,
)
from .stats import snapshot

#: Exit statuses: fine; no such queue, not a queue or corrupt; Ctrl-C.
EXIT_OK, EXIT_BAD, EXIT_INTERRUPTED = 0, 1, 130
#: The ANSI sequences that redraw a terminal from its top left corner.
HOME_CLEAR = "\x1b[H\x1b[2J"


class Unreadable(Exception):
    """The name is not there, or is not a pysyncq queue."""


class _Copy:
    """A private copy of a segment's header and member table, shaped like
    ``_segment.Segment`` as far as ``stats.snapshot`` and ``may_judge`` look."""

    def __init__(self, name, data, size):
        self.name = name
        self.size = size  # bytes of the whole segment
        self.mem = np.frombuffer(bytearray(data), np.uint8)
        self.words = self.mem.view(np.int64)
        self.capacity = int(self.words[H_CAPACITY])
        self.nslots = int(self.words[H_NSLOTS])
        self.instance = int(self.words[H_INSTANCE])


def look(name):
    """A ``_Copy`` of queue ``name`` as it is now; ``Unreadable`` if none."""
    try:
        fd = os.open(os.path.join(_segment.SHM_DIR, name), os.O_RDONLY)
    except FileNotFoundError:
        raise Unreadable(f"no queue named {name!r} in {_segment.SHM_DIR}") from None
    except OSError as e:
        raise Unreadable(f"cannot open {name!r}: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER_BYTES, 0)
        if len(head) < HEADER_BYTES or int.from_bytes(head[:8], "little") != MAGIC:
            raise Unreadable(f"shared memory {name!r} is not a pysyncq queue")
        nslots = int.from_bytes(head[8 * H_NSLOTS : 8 * H_NSLOTS + 8], "little", signed=True)
        room = max(0, (size - HEADER_BYTES) // SLOT_BYTES)
        nslots = min(max(nslots, 0), room, MAX_SLOTS)
        data = head + os.pread(fd, nslots * SLOT_BYTES, HEADER_BYTES)
    finally:
        os.close(fd)
    data = data[: len(data) // 8 * 8]
    return _Copy(name, data, size)


def problem(seg):
    """What is wrong with the copy (as ``QueueCorrupt`` would say), or None."""
    w = seg.words
    header = tuple(int(x) for x in w[:HEADER_WORDS])
    bad = _segment.header_problem(header, seg.size)
    if bad:
        return bad
    end, head = int(w[H_WRITE_POS]), int(w[H_HEAD])
    for slot, _, is_reader in kernels.members(seg.mem):
        if slot >= 0 and is_reader:
            c = int(w[HEADER_WORDS + int(slot) * SLOT_WORDS + S_CURSOR])
            if not head <= c <= end or c % 8:
                return (
                    f"the cursor of slot {slot} is {c}, expected a multiple of 8 between the "
                    f"head {head} and the write position {end}"
                )
    return None


def describe(seg):
    """Everything ``stat`` shows, as a dict of plain values (``--json``)."""
    s = snapshot(seg, seg.name)
    judged = may_judge(seg)
    rows = kernels.members(seg.mem)
    in_use = not judged or any(_proc.is_alive(int(t)) for t in rows[:, 1])
    members = []
    for r in s.members:
        d = asdict(r)
        if isinstance(d["name"], bytes):
            d["name"] = d["name"].decode("utf-8", "backslashreplace")
        d["alive"] = r.alive if judged else None
        members.append(d)
    return {
        "name": s.name,
        "state": "in use" if in_use else "stale",
        "corrupt": problem(seg),
        "segment_bytes": seg.size,
        "slots": seg.nslots,
        "capacity": s.capacity,
        "used": s.used,
        "free": s.free,
        "held": s.held,
        "appended": s.appended,
        "recoveries": s.recoveries,
        "reaped": s.reaped,
        "members": members,
    }


# -- Formatting for 80 columns ----------------------------------------------------


def size(n):
    """``1.5 MiB``; exact below 1 KiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def count(n):
    """At most 6 characters: ``999999``, ``1.23M``, ``45.6G``."""
    if abs(n) < 1_000_000:
        return str(n)
    for unit, scale in (("M", 1e6), ("G", 1e9), ("T", 1e12)):
        if abs(n) < scale * 1000 or unit == "T":
            v = n / scale
            return f"{v:.2f}{unit}" if abs(v) < 10 else f"{v:.1f}{unit}"
    return str(n)  # pragma: no cover


def short_bytes(n):
    """At most 6 characters: ``512B``, ``12.1K``, ``3.0M``."""
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1000 or unit == "T":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}"  # pragma: no cover


_COLUMNS = (
    f"{'NAME':<13}{'PID':>7} {'STATE':<6}{'ROLE':<7}{'LAG':>6} {'LAG B':>6} "
    f"{'SENT':>6} {'RECV':>6} {'SCRN':>6} WAIT"
)


def _member_line(r):
    name = r["name"]
    if len(name) > 12:
        name = name[:11] + "~"
    state = "?" if r["alive"] is None else ("alive" if r["alive"] else "DEAD")
    role = "reader" if r["reader"] else "writer"
    lag = count(r["lag_messages"]) if r["reader"] else "-"
    lagb = short_bytes(r["lag"]) if r["reader"] else "-"
    return (
        f"{name:<13}{r['pid']:>7} {state:<6}{role:<7}{lag:>6} {lagb:>6} {count(r['sent']):>6} "
        f"{count(r['received']):>6} {count(r['screened']):>6} {r['waiting'] or '-'}"
    )


def render(d, rate=None):
    """The text of ``stat``: a few lines of totals, then a row per member."""
    members = d["members"]
    dead = sum(1 for r in members if r["alive"] is False)
    readers = sum(1 for r in members if r["reader"])
    who = f"{len(members)} members ({readers} readers" + (f", {dead} dead)" if dead else ")")
    cap = d["capacity"]
    pct = f" ({100 * d['used'] / cap:.1f}%)" if cap > 0 else ""
    lines = [f"queue {d['name']}", f"state      {d['state']}, {who}, {d['slots']} slots"]
    if d["corrupt"]:
        lines.append(f"CORRUPT: {d['corrupt']}")
    lines += [
        f"capacity   {size(cap):<12} held {size(d['used'])}{pct} in {d['held']:,} messages",
        f"appended   {d['appended']:<12,} "
        + (f"rate {rate:,.1f} msg/s" if rate is not None else f"free {size(d['free'])}"),
        f"recoveries {d['recoveries']:<12,} reaped {d['reaped']:,}",
        "",
        _COLUMNS,
    ]
    lines += [_member_line(r) for r in members]
    if not members:
        lines.append("(no members)")
    return "\n".join(lines)


# -- The commands ------------------------------------------------------------------


def stat_main(name, as_json=False, watch=None, out=None):
    out = out or sys.stdout
    try:
        return _stat(name, as_json, watch, out)
    except KeyboardInterrupt:
        if watch is not None and not as_json:
            out.write("\n")
            out.flush()
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
        return EXIT_OK


def _stat(name, as_json, watch, out):
    name = name[1:] if name.startswith("/") else name
    try:
        seg = look(name)
    except Unreadable as e:
        print(f"python -m pysyncq stat: {e}", file=sys.stderr)
        return EXIT_BAD
    if watch is None:
        d = describe(seg)
        out.write((json.dumps(d) if as_json else render(d)) + "\n")
        out.flush()
        return EXIT_BAD if d["corrupt"] else EXIT_OK
    interval = max(0.05, watch)
    last = None  # (instance, appended, monotonic time)
    while True:
        now = time.monotonic()
        d = describe(seg)
        rate = None
        if last is not None and last[0] == seg.instance and now > last[2]:
            rate = (d["appended"] - last[1]) / (now - last[2])
        last = (seg.instance, d["appended"], now)
        if as_json:
            d["rate"] = rate
            d["time"] = time.time()
            out.write(json.dumps(d) + "\n")
        else:
            stamp = time.strftime("%H:%M:%S")
            top = f"pysyncq stat, every {interval:g} s, Ctrl-C to quit   {stamp}"
            out.write(HOME_CLEAR + top + "\n\n" + render(d, rate) + "\n")
        out.flush()
        time.sleep(interval)
        try:
            seg = look(name)
        except Unreadable as e:
            out.write(f"\n{e}: the queue is gone\n")
            out.flush()
            return EXIT_OK


def list_main(out=None):
    """``list``: name, state, size, members and bytes used of every queue."""
    out = out or sys.stdout
    names = _segment.list_queues()
    if not names:
        out.write("no queues\n")
        return EXIT_OK
    for name in names:
        try:
            seg = look(name)
        except Unreadable:
            continue  # removed meanwhile
        d = describe(seg)
        state = "corrupt" if d["corrupt"] else d["state"]
        n = len(d["members"])
        out.write(
            f"{name}\t{state}\t{size(d['capacity'])}\t{n} member{'s' if n != 1 else ''}"
            f"\t{size(d['used'])} used\n"
        )
    return EXIT_OK
