"""A seeded kill storm: many processes use one queue with every call while a
killer SIGKILLs them at the moments that matter, and every survivor checks
that it got exactly what it was owed.

Why it exists: each crash path of pysyncq (a loan or a reservation left by a
dead writer, a dead lock holder, a reader killed inside a view, a reaper
killed while it reaps) is tested alone elsewhere; this storm makes them meet,
on tiny rings that wrap and fill all the time, with more processes than
cores, so that interleavings nobody wrote a test for happen.  One integer
seed drives the trial (queue size, the members' choices, the killer's
choices); only the timing is not replayable.

What is checked, and why it is sound:

* Every message body starts with a 32-byte ASCII header: writer id, writer
  sequence number, kind (str, bytes, array, loan), crc32 and length of the
  payload.  Its type is a function of (writer, seq // 16), so a reader knows
  the type of a message it did *not* get, and whether its screens excuse it.
* Writers record two numbers per membership in the test's own shared memory
  (a ``RawArray``, not the queue): ``pend`` before each call (the sequence
  after the call, were it to succeed) and ``done`` after it returns (how many
  went in).  Sequence numbers of a call that failed (``QueueFull``,
  ``QueueLocked``, a discarded loan) are used again by the next call.
* A reader reads ``done`` before its ``open()`` and ``pend`` after it.  A
  message with a sequence below the first was appended before the reader
  opened and must never reach it; one at or above the second was appended
  after the open returned and must reach it unless screened; in between, a
  call overlapped the open and either outcome is right.
* A message whose call returned (below the writer's final ``done``) must reach
  every reader owed it that drains to the end; a reader that closes early is
  owed every message below the last one it got of that writer (the ring keeps
  one writer's messages in order).  A message at or above a writer's final
  ``done`` was in flight when its writer was killed and may or may not come;
  if the writer was not killed, it must not come (its call raised).
* Duplicates, order (per writer, per thread), corruption (checksum, length,
  header, sender name, type, body type) and screened messages are checked at
  each delivery, in the reader, and written to a file at once, so that a
  violation seen by a reader that is killed later still counts.  A killed
  reader is owed nothing.
* A durable member's stream continues across kills: its takeover owes every
  message after the last one its predecessor recorded, minus what the
  predecessor had popped but not yet recorded (its pending batch).

The killer reads the members' announced phases (``IN_LOAN``, ``IN_VIEW``,
``LARGE_APPEND``, ``BLOCK_APPEND`` ...) and the queue's lock word, and kills by
phase, by lock holder or at random; each victim is replaced by a new member.

Known bugs of issue 17 that the storm finds are reported under their item
number (:data:`KNOWN`): switch an item to False once its fix is merged, and
a trial that hits it fails instead of being reported as expected.

Run a long storm: ``python tests/storm.py --seed 1 --trials 20 --members 8``.
"""

import argparse
import asyncio
import glob
import multiprocessing as mp
import os
import pickle
import random
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field

import numpy as np

#: Issue 17 items still open: a trial that hits only these is reported as
#: "known" (the tests xfail, naming the item) instead of failing.  Set an item
#: to False when its fix is merged.
KNOWN = {
    1: False,  # a reaper killed while freeing a slot: orphaned reservation, readers stall
    2: False,  # QueueLocked "alive ... (stopped?)" for a dead holder
    4: False,  # stats() torn: lag < 0, used understated
    5: False,  # lag_messages / held stick at 1 after a loan published past a reader's open
    7: False,  # counters drift after kills: appended low
}
#: Whether the stats checks run at all (sampled during the storm, exact at the end).
CHECK_STATS = True

SEED_ENV = "PYSYNCQ_STORM_SEED"

# -- Phases the members announce, for the killer ---------------------------------------

PHASES = (
    "starting",
    "idle",
    "opening",
    "closing",
    "append",
    "large_append",
    "block_append",
    "append_array",
    "in_loan",
    "extend",
    "aappend",
    "pop",
    "pop_raw",
    "in_view",
    "pop_many",
    "iter",
    "apop",
    "too_large",
    "writes_done",
    "draining",
    "drained",
    "done",
)
P = {name: i for i, name in enumerate(PHASES)}
#: Phases the killer aims at (the rest it hits only at random).
AIMS = (
    "in_loan",
    "in_view",
    "large_append",
    "block_append",
    "pop_many",
    "closing",
    "opening",
    "apop",
    "extend",
    "iter",
)

# Lane status, as the parent reads it.
ST_START, ST_RUN, ST_WRITES_DONE, ST_DRAINED, ST_DRAIN_FAILED = range(5)

IDS = 16  # membership ids per member process: w = inc * IDS + k
DURABLE_K = IDS - 1  # the k of a durable membership (its sender name is DURABLE_NAME)
DURABLE_NAME = "d0"
TYPES = ("ta", "tb", "tc", "td")
HEADER = 32
KIND_CODES = "sbal"  # str, bytes, append_array, loan
TEXT = "abcdefghijklmnopqrstuvwxyz0123456789 éß€𝄞"

STALL_S = 15.0  # an op that makes no progress this long is a hang
DRAIN_S = 20.0  # a reader that has not got everything it is owed by then has stalled


def mix(*xs):
    """A deterministic 63-bit hash of integers (Python's hash of str is salted)."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = ((h ^ (x & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def mtype_of(w, seq):
    """The type of writer ``w``'s message ``seq``: fixed per block of 16, so that
    one ``extend`` (one type for all its bodies) stays within a block."""
    return TYPES[mix(w, seq // 16) % len(TYPES)]


def name_of(w):
    return DURABLE_NAME if w % IDS == DURABLE_K else f"m{w}"


def make_body(rng, w, seq, kind, n):
    """``(body, raw)``: the message body to append (str, bytes or the raw
    bytes an array is made from) and its bytes as a reader gets them."""
    if kind == "s":
        text = _text(rng, n)
        payload = text.encode()
    else:
        payload = rng.randbytes(n)
    head = b"%06x%08x%s%08x%08x|" % (w, seq, kind.encode(), zlib.crc32(payload), len(payload))
    raw = head + payload
    if kind == "s":
        return head.decode() + text, raw
    return raw, raw


def _text(rng, n):
    """A str of at most ``n`` UTF-8 bytes, some of its characters multi-byte."""
    chunk = "".join(rng.choice(TEXT) for _ in range(16))
    cb = len(chunk.encode())
    text = chunk * (n // cb)
    room = n - len(text.encode())
    for c in chunk:
        room -= len(c.encode())
        if room < 0:
            break
        text += c
    return text


def parse(raw):
    """``(w, seq, kind)`` of a delivered body's bytes, or a string saying why not."""
    if len(raw) < HEADER or raw[HEADER - 1 : HEADER] != b"|":
        return f"corrupt: {len(raw)} bytes without a header: {raw[:40]!r}"
    try:
        w = int(raw[0:6], 16)
        seq = int(raw[6:14], 16)
        kind = chr(raw[14])
        crc = int(raw[15:23], 16)
        n = int(raw[23:31], 16)
    except ValueError:
        return f"corrupt: bad header {raw[:HEADER]!r}"
    payload = raw[HEADER:]
    if kind not in KIND_CODES:
        return f"corrupt: kind {kind!r} in header {raw[:HEADER]!r}"
    if len(payload) != n:
        return f"corrupt: writer {w} seq {seq}: payload {len(payload)} bytes, header says {n}"
    if zlib.crc32(payload) != crc:
        return f"corrupt: writer {w} seq {seq}: checksum mismatch ({n} bytes)"
    return w, seq, kind


# -- The test's own shared memory ----------------------------------------------------------


class Board:
    """Words every process of a trial shares: control flags, each member's
    pid, phases and status, each writer's ``pend``/``done``/``clean``, and the
    durable member's progress.  Plain int64 stores: atomic on the machines
    this runs on, and nobody needs more than one word to be consistent."""

    CTL = 8  # 0 stop writing, 1 drain, 2 close, 3 trial start (ms)

    def __init__(self, raw, maxinc):
        self.raw = raw
        a = np.frombuffer(raw, np.int64)
        self.maxinc = maxinc
        nw = maxinc * IDS
        o = 0

        def take(n):
            nonlocal o
            v = a[o : o + n]
            o += n
            return v

        self.ctl = take(self.CTL)
        self.pid = take(maxinc)
        self.nlanes = take(maxinc)
        self.phase = take(2 * maxinc)
        self.beat = take(2 * maxinc)  # ms (monotonic) of the last phase change
        self.status = take(2 * maxinc)
        self.pend = take(nw)
        self.done = take(nw)
        self.clean = take(nw)  # 1: writer w makes no more calls (its done is final)
        self.recv = take(nw)  # deliveries counted by membership w (for stats)
        # loans writer w reserved and discarded: stats count them as sent
        # (a reservation is counted when it is made, see layout.H_APPENDS)
        self.discarded = take(nw)
        self.dD = take(nw)  # the durable member: done before its first open
        self.dP = take(nw)  # ... pend after it
        self.dlast = take(nw)  # ... last seq of each writer it recorded
        # 0: dD set, 1: dP set, 2: pending batch, 3: inside a view, 4: the pending
        # batches of every incarnation killed so far (a takeover killed before
        # it logged passes its predecessors' slack on)
        self.dflags = take(6)
        self.qidx = take(maxinc)  # which queue a member uses (the bridge variant has two)

    @staticmethod
    def words(maxinc):
        return Board.CTL + maxinc * 9 + maxinc * IDS * 8 + 6


def now_ms():
    return int(time.monotonic() * 1000)


# -- A reader's bookkeeping ------------------------------------------------------------------


class Tracker:
    """What one membership received, checked at each delivery."""

    def __init__(self, cfg, board, w, name, reader, filtself, scrnsend, scrntype, D, Pd):
        self.cfg = cfg
        self.board = board
        self.w = w
        self.name = name
        self.reader = reader
        self.filtself = filtself
        self.scrnsend = set(scrnsend) | ({name} if filtself else set())
        self.scrntype = set(scrntype)
        self.D = D  # {w: done before open}
        self.lower = Pd  # {w: pend after open}
        self.slack = 0  # durable takeover: messages the predecessor popped unrecorded
        self.repeat_ok = set()  # durable takeover inside a view: that seq may come again
        self.durable = w % IDS == DURABLE_K
        self.takeover = False
        self.got = {}  # w -> set of seqs
        self.last = {}  # (lane, w) -> last seq
        self.count = 0
        self.lock = threading.Lock()
        self.violations = []
        self.drained = False
        self.fault = None
        self.fault_hold = None

    def violation(self, text):
        text = f"{text} [reader {self.name} (membership {self.w}), seed {self.cfg['seed']}]"
        self.violations.append(text)
        path = os.path.join(self.cfg["dir"], f"v{self.w}-{os.getpid()}.txt")
        with open(path, "a") as f:
            f.write(text + "\n")

    def deliver(self, m, lane, decode, view=False):
        """Check one delivered ``(sender, mtype, body)``."""
        sender, mtype, body = m
        if isinstance(body, np.ndarray):
            raw, btype = body.tobytes(), "array"
        elif isinstance(body, memoryview):
            raw, btype = bytes(body), "view"
        elif isinstance(body, str):
            raw, btype = body.encode(), "str"
        else:
            raw, btype = bytes(body), "bytes"
        if self.fault is not None:
            raw = self._inject(m, raw, lane, decode, view)
            if raw is None:
                return
        self._check(sender, mtype, raw, btype, lane, decode, view)

    def _inject(self, m, raw, lane, decode, view):
        """The self-test: spoil one delivery that is owed (its call returned,
        it came after the open), as a broken queue would."""
        got = parse(raw)
        if isinstance(got, str):
            return raw
        w, seq, _ = got
        if w == self.w or self.count < 10:
            return raw  # another process's message: the path across processes
        if seq < self.lower.get(w, 0) or seq >= int(self.board.done[w]):
            return raw
        fault, self.fault = self.fault, None
        if fault == "drop":
            return None
        if fault == "dup":
            self._check(m[0], m[1], raw, self._btype(m[2]), lane, decode, view)
        elif fault == "corrupt":
            b = bytearray(raw)
            b[HEADER + (len(b) - HEADER) // 2 if len(b) > HEADER else 3] ^= 0x40
            raw = bytes(b)
        elif fault == "reorder":
            self.fault_hold = (m, raw, lane, decode, view, w)
            return None
        return raw

    @staticmethod
    def _btype(body):
        if isinstance(body, np.ndarray):
            return "array"
        if isinstance(body, memoryview):
            return "view"
        return "str" if isinstance(body, str) else "bytes"

    def _check(self, sender, mtype, raw, btype, lane, decode, view):
        got = parse(raw)
        if isinstance(got, str):
            self.violation(got)
            return
        w, seq, kind = got
        sender = sender.decode("utf-8", "replace") if isinstance(sender, bytes) else sender
        mtype = mtype.decode("utf-8", "replace") if isinstance(mtype, bytes) else mtype
        where = f"writer {w} seq {seq}"
        if sender != name_of(w):
            self.violation(f"corrupt: {where} came with sender {sender!r}")
        if mtype != mtype_of(w, seq):
            self.violation(f"corrupt: {where} came with type {mtype!r}, not {mtype_of(w, seq)!r}")
        want = ("array",) if kind in "al" else ("view",) if view else ()
        if not want:
            want = ("str",) if kind == "s" and decode else ("bytes",)
            if kind == "b" and decode:
                want = ("str", "bytes")
        if btype not in want:
            self.violation(f"corrupt: {where} (kind {kind}) came as {btype}, not {want}")
        if sender in self.scrnsend:
            self.violation(f"screened: {where} delivered though sender {sender!r} is screened")
        if mtype in self.scrntype:
            self.violation(f"screened: {where} delivered though type {mtype!r} is screened")
        with self.lock:
            seen = self.got.setdefault(w, set())
            if seq in seen and seq not in self.repeat_ok:
                self.violation(f"duplicate: {where} delivered twice")
            self.repeat_ok.discard(seq)
            seen.add(seq)
            last = self.last.get((lane, w), -1)
            if seq < last:
                self.violation(f"order: {where} after seq {last} of that writer")
            self.last[(lane, w)] = max(seq, last)
            stale = self.D.get(w, 0)
            # Across a bridge, a message appended before this reader opened may
            # be relayed into its queue after: only local writers are checked.
            local = self.board.qidx[w // IDS] == self.board.qidx[self.w // IDS]
            if seq < stale and local:
                self.violation(
                    f"stale: {where} delivered, appended before this reader opened "
                    f"(its writer had done {stale} before the open)"
                )
            self.count += 1
            self.board.recv[self.w] = self.count
            if self.durable:
                self.board.dlast[w] = max(int(self.board.dlast[w]), seq)
        if self.fault_hold is not None and self.fault_hold[5] == w and self.fault_hold[1] != raw:
            hm, hraw, hlane, hdecode, hview, _ = self.fault_hold
            self.fault_hold = None
            self._check(hm[0], hm[1], hraw, self._btype(hm[2]), hlane, hdecode, hview)

    def missing(self, done):
        """Messages owed and not received, given every writer's final ``done``
        (the drain's test of completeness)."""
        out = []
        with self.lock:
            for w in np.flatnonzero(done).tolist():
                if name_of(w) in self.scrnsend:
                    continue
                got = self.got.get(w, ())
                for seq in range(self.lower.get(w, 0), int(done[w])):
                    if seq not in got and mtype_of(w, seq) not in self.scrntype:
                        out.append((w, seq))
        return out

    def record(self):
        return {
            "w": self.w,
            "name": self.name,
            "reader": self.reader,
            "scrnsend": sorted(self.scrnsend),
            "scrntype": sorted(self.scrntype),
            "lower": self.lower,
            "got": {w: sorted(s) for w, s in self.got.items()},
            "drained": self.drained,
            "slack": self.slack,
            "takeover": self.takeover,
            "count": self.count,
        }

    def save(self):
        path = os.path.join(self.cfg["dir"], f"log{self.w}.pickle")
        with open(path + ".tmp", "wb") as f:
            pickle.dump(self.record(), f)
        os.replace(path + ".tmp", path)


# -- A member process ------------------------------------------------------------------


class _Abort(Exception):
    """Raised inside a loan or a view on purpose: the loan is discarded, the
    view's message stays unread."""


class Lane:
    """One thread of a member: a membership at a time, a seeded mix of calls."""

    def __init__(self, member, idx, ks, mode):
        self.mb = member
        self.cfg = member.cfg
        self.board = member.board
        self.idx = idx
        self.ks = list(ks)
        self.mode = mode  # "full", "reads" (2nd thread on a shared handle), "durable", "fault"
        self.rng = random.Random(mix(self.cfg["seed"], member.inc, idx))
        self.slot = member.inc * 2 + idx
        self.h = None
        self.tr = None
        self.w = -1
        self.loop = None
        self.shared = None  # for mode "reads": the lane whose handle it pops

    def phase(self, name):
        self.board.phase[self.slot] = P[name]
        self.board.beat[self.slot] = now_ms()

    def stopping(self):
        return self.board.ctl[0] != 0

    # -- membership --

    def open_new(self):
        from pysyncq import PySyncQ, QueueLocked, TooManyProcesses

        if not self.ks:
            return False
        cfg, rng, b = self.cfg, self.rng, self.board
        k = DURABLE_K if self.mode == "durable" else self.ks.pop(0)
        w = self.mb.inc * IDS + k
        reader = self.mode != "full" or rng.random() < 0.85
        filtself = rng.random() < 0.6
        follow = rng.random() < 0.3
        scrntype = rng.sample(TYPES, rng.choice([0, 0, 0, 1, 1, 2])) if reader else []
        ids = max(1, self.mb.inc * IDS + IDS)
        scrnsend = [name_of(rng.randrange(ids)) for _ in range(rng.choice([0, 0, 1, 2]))]
        if self.mode == "durable":
            drng = random.Random(mix(cfg["seed"], 777))  # the same screens in every incarnation
            filtself = drng.random() < 0.5
            scrntype = drng.sample(TYPES, drng.choice([0, 1]))
            scrnsend = []
        if self.mode == "fault":
            reader, filtself, scrntype, scrnsend = True, False, [], []
        name = name_of(w)
        qname = cfg["qnames"][self.mb.qidx]
        self.phase("opening")
        durable = self.mode == "durable"
        takeover = durable and b.dflags[0] != 0
        if durable and not takeover:
            b.dD[:] = b.done
            b.dflags[0] = 1
        D = b.done.copy()
        deadline = time.monotonic() + STALL_S
        while True:
            try:
                h = PySyncQ(qname, create=False)
                h.copy_outside = cfg["copy_outside"]
                h.reap_interval = rng.choice(cfg["reap_intervals"])
                h.open(name, filtself=filtself, reader=reader, follow=follow, durable=durable)
                break
            except (QueueLocked, TooManyProcesses):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for t in scrntype:
            h.scrntype.add(t if rng.random() < 0.5 else t.encode())
        for s in scrnsend:
            h.scrnsend.add(s if rng.random() < 0.5 else s.encode())
        Pd = b.pend.copy()
        Dd = {int(i): int(D[i]) for i in np.flatnonzero(D)}
        Pmap = {int(i): int(Pd[i]) for i in np.flatnonzero(Pd)}
        tr = Tracker(cfg, b, w, name, reader, filtself, scrnsend, scrntype, Dd, Pmap)
        if durable:
            if b.dflags[1] == 0:
                b.dP[:] = Pd
                b.dflags[1] = 1
                if not takeover:
                    b.dlast[:] = -1
            dD, dP, dlast = b.dD.copy(), b.dP.copy(), b.dlast.copy()
            tr.D = {int(i): int(dD[i]) for i in np.flatnonzero(dD)}
            if takeover:
                tr.takeover = True
                tr.lower = {}
                for i in np.flatnonzero((dP > 0) | (dlast >= 0)).tolist():
                    tr.lower[i] = max(int(dP[i]), int(dlast[i]) + 1)
                b.dflags[4] += b.dflags[2]
                tr.slack = int(b.dflags[4])
                for i in np.flatnonzero(dlast >= 0).tolist():
                    # The predecessor's last: a repeat of it is a duplicate, unless
                    # it was killed inside the view that showed it (then the
                    # message is still unread and comes again); anything older
                    # is out of order.
                    tr.got[i] = {int(dlast[i])}
                    tr.last[(0, i)] = int(dlast[i])
                    if b.dflags[3]:
                        tr.repeat_ok.add(int(dlast[i]))
            b.dflags[2] = 0
            b.dflags[3] = 0
        if self.mode == "fault" and cfg["fault"] != "hang":
            tr.fault = cfg["fault"]
        if self.mb.shared_lock is not None:
            with self.mb.shared_lock:
                self.h, self.tr, self.w = h, tr, w
        else:
            self.h, self.tr, self.w = h, tr, w
        self.life = rng.choice([10**9, 10**9, 40, 150, 400]) if self.mode == "full" else 10**9
        self.phase("idle")
        return True

    def close(self, drained=False):
        h, tr = self.h, self.tr
        self.board.clean[self.w] = 1
        self.phase("closing")
        if self.mb.shared_lock is not None:
            with self.mb.shared_lock:
                self.h = self.tr = None
                h.close()
        else:
            self.h = self.tr = None
            h.close()
        tr.drained = drained
        if tr.reader:
            tr.save()
        self.phase("idle")

    # -- writes --

    def timer(self):
        return self.rng.choice(self.cfg["timers"])

    def size(self, h):
        r = self.rng.random()
        room = max(0, min(h.max_message, self.cfg["size"]) - HEADER - 16 - 40)
        if r < 0.5:
            n = self.rng.randrange(0, 64)
        elif r < 0.75:
            n = self.rng.randrange(64, 600)
        else:
            lo = max(0, h.copy_outside - HEADER)
            n = self.rng.randrange(lo, lo + lo // 2 + 16)
        return min(n, room)

    def begin(self, count=1):
        seq = int(self.board.done[self.w])
        self.board.pend[self.w] = seq + count
        return seq

    def finish(self, seq, written):
        self.board.done[self.w] = seq + written

    def locked(self, e):
        """A QueueLocked: fine if its holder is alive (slow under load), issue 17
        item 2 if the process it names is dead."""
        text = str(e)
        try:
            pid = int(text.split("locked by process ", 1)[1].split(",", 1)[0])
        except (IndexError, ValueError):
            self.mb.note("queuelocked_other", text)
            return
        if not _pid_alive(pid):
            self.mb.note("item2", f"QueueLocked names dead process {pid}: {text}")
        else:
            self.mb.note("queuelocked_alive", text)

    def op_append(self, how):
        from pysyncq import MessageTooLarge, QueueFull, QueueLocked

        h, rng = self.h, self.rng
        block = how == "block" or rng.random() < 0.3
        n = self.size(h)
        seq = self.begin()
        kind = rng.choice("sb")
        body, raw = make_body(rng, self.w, seq, kind, n)
        t = mtype_of(self.w, seq)
        big = len(raw) >= h.copy_outside
        self.phase("block_append" if block else "large_append" if big else "append")
        try:
            if how == "async":
                self.phase("aappend")
                self.aloop().run_until_complete(h.aappend(t, body, timer=self.timer()))
            else:
                h.append(t, body, block=block, timer=self.timer())
        except MessageTooLarge as e:
            self.mb.note("too_large_unexpected", f"{len(raw)} bytes: {e}")
            return
        except QueueFull:
            return
        except QueueLocked as e:
            self.locked(e)
            return
        self.finish(seq, 1)

    def op_append_array(self):
        from pysyncq import QueueFull, QueueLocked

        h, rng = self.h, self.rng
        seq = self.begin()
        n = self.size(h)
        n = max(0, n - (HEADER + n) % 8)
        _, raw = make_body(rng, self.w, seq, "a", n)
        dt = rng.choice([np.uint8, np.int32, np.int64])
        arr = np.frombuffer(raw, dt)
        if rng.random() < 0.3 and arr.size % 2 == 0:
            arr = arr.reshape(2, -1)
        self.phase("append_array")
        try:
            h.append_array(mtype_of(self.w, seq), arr, block=rng.random() < 0.3, timer=self.timer())
        except QueueFull:
            return
        except QueueLocked as e:
            self.locked(e)
            return
        self.finish(seq, 1)

    def op_loan(self):
        from pysyncq import QueueFull, QueueLocked

        h, rng = self.h, self.rng
        seq = self.begin()
        n = self.size(h)
        _, raw = make_body(rng, self.w, seq, "l", n)
        src = np.frombuffer(raw, np.uint8)
        abort = rng.random() < 0.1
        try:
            with h.loan(mtype_of(self.w, seq), src.shape, np.uint8, rng.random() < 0.3,
                        self.timer()) as arr:  # fmt: skip
                self.phase("in_loan")
                arr[: len(src) // 2] = src[: len(src) // 2]
                if rng.random() < 0.3:
                    time.sleep(rng.choice([0.0005, 0.002, 0.005]))
                arr[len(src) // 2 :] = src[len(src) // 2 :]
                if abort:
                    self.board.discarded[self.w] += 1
                    raise _Abort
        except _Abort:
            return
        except QueueFull:
            return
        except QueueLocked as e:
            self.locked(e)
            return
        self.finish(seq, 1)

    def op_extend(self):
        from pysyncq import MessageTooLarge, QueueFull, QueueLocked

        h, rng = self.h, self.rng
        seq0 = int(self.board.done[self.w])
        count = rng.randint(1, min(8, 16 - seq0 % 16))
        seq = self.begin(count)
        kinds = rng.choice(["s", "b", "mixed"])
        bodies = []
        for i in range(count):
            kind = rng.choice("sb") if kinds == "mixed" else kinds
            bodies.append(make_body(rng, self.w, seq + i, kind, self.size(h) // 2)[0])
        self.phase("extend")
        try:
            wrote = h.extend(mtype_of(self.w, seq), bodies, block=rng.random() < 0.3,
                             timer=self.timer())  # fmt: skip
        except (QueueFull, MessageTooLarge) as e:
            wrote = e.written
        except QueueLocked as e:
            self.locked(e)
            wrote = getattr(e, "written", 0)
        self.finish(seq, wrote)

    def op_too_large(self):
        from pysyncq import MessageTooLarge

        h = self.h
        n = h.max_message - len(name_of(self.w).encode()) - 2 + 1
        self.phase("too_large")
        try:
            h.append("ta", b"\0" * n)
        except MessageTooLarge:
            return
        self.tr.violation(f"a {n}-byte body past max_message {h.max_message} was accepted")

    # -- reads --

    def aloop(self):
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop

    def durable_pending(self, n):
        if self.mode == "durable":
            self.board.dflags[2] = n

    def op_read(self, how, h=None, tr=None):
        h = h or self.h
        tr = tr or self.tr
        rng = self.rng
        block = rng.random() < 0.5
        timer = self.timer()
        decode = rng.random() < 0.6
        lane = self.idx
        if how == "pop":
            self.phase("pop" if decode else "pop_raw")
            self.durable_pending(1)
            m = h.pop(block=block, timer=timer, decode=decode)
            if m is not None:
                tr.deliver(m, lane, decode)
        elif how == "pop_many":
            n = rng.choice([1, 2, 8, 64])
            self.phase("pop_many")
            self.durable_pending(n)
            for m in h.pop_many(n, block=block, timer=timer, decode=decode):
                tr.deliver(m, lane, decode)
        elif how == "iter":
            n = rng.randint(1, 20)
            self.phase("iter")
            self.durable_pending(1)
            for i, m in enumerate(h(block=block, timer=timer, decode=decode)):
                tr.deliver(m, lane, decode)
                if i + 1 >= n:
                    break
        elif how == "apop":
            self.phase("apop")
            self.durable_pending(1)
            m = self.aloop().run_until_complete(h.apop(timer=timer, decode=decode))
            if m is not None:
                tr.deliver(m, lane, decode)
        elif how == "view":
            abort = rng.random() < 0.1
            try:
                with h.pop_view(block=block, timer=timer) as v:
                    if v is not None:
                        self.phase("in_view")
                        if rng.random() < 0.3:
                            time.sleep(rng.choice([0.0005, 0.002, 0.005]))
                        if abort:
                            raise _Abort
                        if self.mode == "durable":
                            self.board.dflags[3] = 1
                        tr.deliver(v, lane, True, view=True)
            except _Abort:
                pass
            if self.mode == "durable":
                self.board.dflags[3] = 0
        self.durable_pending(0)

    # -- the loop --

    def choose(self):
        rng = self.rng
        if not self.tr.reader:
            ops = ["append", "append", "block", "array", "loan", "extend", "async"]
        elif self.mode == "durable":
            ops = ["pop", "pop_many", "iter", "view", "append", "extend"]
        else:
            ops = ["append", "append", "block", "array", "loan", "extend", "async"]
            ops += ["pop", "pop", "pop_many", "iter", "view", "apop", "too_large"]
            if self.mb.shared_lock is not None:  # a second thread pops this handle
                ops = [o for o in ops if o not in ("view", "apop")]
        return rng.choice(ops)

    def hang(self):
        """The self-test of the stall watch: a loan that is never given back."""
        with self.h.loan("ta", (8,), "u1", block=True, timer=1.0):
            self.phase("in_loan")
            time.sleep(3600)

    def step(self):
        self.steps = getattr(self, "steps", 0) + 1
        if self.mode == "fault" and self.cfg["fault"] == "hang" and self.steps > 20:
            self.hang()
        op = self.choose()
        if op == "too_large":
            if self.rng.random() < 0.1:
                self.op_too_large()
        elif op in ("append", "block", "async"):
            self.op_append(op)
        elif op == "array":
            self.op_append_array()
        elif op == "loan":
            self.op_loan()
        elif op == "extend":
            self.op_extend()
        else:
            self.op_read(op)
        if self.rng.random() < 0.05:
            self.phase("idle")
            time.sleep(self.rng.choice([0.0, 0.001, 0.003]))

    def status(self, st):
        self.board.status[self.slot] = st

    def run(self):
        try:
            if self.mode == "reads":
                return self.run_reads()
            self.status(ST_RUN)
            if self.mode == "durable":
                self.open_new()  # takes its slot over even after the storm: it owes a drain
            while not self.stopping():
                if self.h is None and not self.open_new():
                    break
                self.step()
                self.life -= 1
                if self.life <= 0 and self.ks:
                    self.close()
            if self.h is not None:
                self.board.clean[self.w] = 1
            self.phase("writes_done")
            self.status(ST_WRITES_DONE)
            while self.board.ctl[1] == 0 and self.h is not None and self.tr.reader:
                self.drain_some(0.02)
            while self.board.ctl[1] == 0:
                time.sleep(0.01)
            ok = self.drain()
            self.status(ST_DRAINED if ok else ST_DRAIN_FAILED)
            while self.board.ctl[2] == 0:
                if self.h is not None and self.tr.reader:
                    self.drain_some(0.02)  # catch what should never come
                else:
                    time.sleep(0.01)
            if self.h is not None:
                self.close(drained=ok)
            self.phase("done")
        finally:
            if self.loop is not None:
                self.loop.close()

    def drain_some(self, timer):
        for m in self.h.pop_many(64, block=True, timer=timer, decode=False):
            self.tr.deliver(m, self.idx, False)

    def drain(self):
        """Read until everything owed has come; False (and a violation naming
        what is missing) if it has not within DRAIN_S."""
        if self.h is None or not self.tr.reader:
            return True
        self.phase("draining")
        done = self.board.done.copy()
        deadline = time.monotonic() + DRAIN_S
        while True:
            self.drain_some(0.05)
            if self.tr.fault_hold is not None:
                self.tr.fault_hold = None  # a reorder with nothing after it: a drop
            missing = self.tr.missing(done)
            if not missing:
                break
            if self.passed_everything():
                break  # what is missing was passed over: lost (the log check says so)
            if time.monotonic() > deadline:
                s = _stats_text(self.h)
                self.tr.violation(
                    f"stall: {len(missing)} messages owed not delivered within {DRAIN_S} s "
                    f"of the drain (first: writer {missing[0][0]} seq {missing[0][1]}); "
                    f"{s}"
                )
                return False
        self.tr.drained = True
        self.phase("drained")
        return True

    def passed_everything(self):
        """Whether this reader's cursor is at the write position (nothing more
        will come: writing has stopped): asked twice, 0.2 s apart, so that a
        reservation being voided is not mistaken for the end."""
        for _ in range(2):
            s = self.h.stats()
            me = [r for r in s.members if r.pid == os.getpid() and r.name == self.tr.name]
            if not me or me[0].lag != 0:
                return False
            time.sleep(0.2)
        late = self.h.pop_many(64, block=False, decode=False)
        for m in late:
            self.tr.deliver(m, self.idx, False)
        return not late

    def run_reads(self):
        """The second thread of a shared handle: pops whatever handle its
        partner lane has open, until the partner closes for the last time."""
        self.status(ST_RUN)
        partner = self.shared
        while self.board.ctl[2] == 0 and not self.mb.finished:
            with self.mb.shared_lock:
                h, tr = partner.h, partner.tr
                if h is not None and tr.reader:
                    self.op_read(self.rng.choice(["pop", "pop_many", "iter"]), h, tr)
                    got = True
                else:
                    got = False
            if not got:
                time.sleep(0.005)
            st = int(self.board.status[partner.slot])
            self.status(min(st, ST_DRAINED) if st >= ST_WRITES_DONE else ST_RUN)
        self.status(max(int(self.board.status[self.slot]), ST_WRITES_DONE))


def _pid_alive(pid):
    """False if ``pid`` has ended (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _stats_text(h):
    try:
        s = h.stats()
    except Exception as e:  # noqa: BLE001 - a diagnostic only
        return f"stats() failed: {e!r}"
    members = ", ".join(
        f"{r.name}(pid {r.pid}{'' if r.alive else ' DEAD'}, lag {r.lag}, {r.waiting or '-'})"
        for r in s.members
    )
    return f"queue used {s.used}/{s.capacity}, held {s.held}, members: {members}"


class Member:
    def __init__(self, cfg, raw, inc, role, qidx):
        self.cfg = cfg
        self.inc = inc
        self.role = role
        self.qidx = qidx
        self.board = Board(raw, cfg["maxinc"])
        self.shared_lock = None
        self.finished = False

    def note(self, kind, text):
        path = os.path.join(self.cfg["dir"], f"n{self.inc}.txt")
        with open(path, "a") as f:
            f.write(f"{kind}\t{text}\n")

    def run(self):
        b = self.board
        if self.role == "shared2":
            self.shared_lock = threading.RLock()
            lanes = [Lane(self, 0, range(0, 14), "full"), Lane(self, 1, (), "reads")]
            lanes[1].shared = lanes[0]
        elif self.role == "two":
            lanes = [Lane(self, 0, range(0, 7), "full"), Lane(self, 1, range(7, 14), "full")]
        elif self.role == "durable":
            lanes = [Lane(self, 0, [DURABLE_K], "durable")]
        elif self.role == "fault":
            lanes = [Lane(self, 0, [0], "fault")]
        else:
            lanes = [Lane(self, 0, range(0, 14), "full")]
        b.nlanes[self.inc] = len(lanes)
        errors = []

        def guard(lane):
            try:
                lane.run()
            except BaseException:
                errors.append(traceback.format_exc())
                lane.status(ST_DRAIN_FAILED)
                lane.phase("done")

        threads = [threading.Thread(target=guard, args=(lane,), daemon=True) for lane in lanes]
        for t in threads:
            t.start()
        threads[0].join()
        self.finished = True
        for t in threads[1:]:
            t.join(STALL_S)
        if errors:
            with open(os.path.join(self.cfg["dir"], f"crash{self.inc}.txt"), "w") as f:
                f.write("\n".join(errors))
            sys.stderr.write("\n".join(errors))
            os._exit(3)


def member_main(cfg, raw, inc, role, qidx):
    """A member process's target."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cfg.get("lock_check"):
        import introspect

        introspect.LOCK_CHECK.set(cfg["lock_check"])
    Member(cfg, raw, inc, role, qidx).run()


def bridge_main(qname, url, stream, origin, ready):
    """A bridge process (the bridge variant): relays until SIGTERM.  Sets
    ``ready`` once relaying has begun: a message appended before that is
    owed to nobody across the bridge, so members start after it."""
    import threading

    from pysyncq.bridge import Bridge

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    b = Bridge(qname, url, stream=stream, origin=origin).start(timeout=120)
    ready.set()
    stop.wait()
    b.stop()


# -- A trial ------------------------------------------------------------------------------


@dataclass
class Result:
    seed: int
    method: str
    members: int
    size: int = 0
    kills: int = 0
    aimed: dict = field(default_factory=dict)
    deliveries: int = 0
    checked_readers: int = 0
    failures: list = field(default_factory=list)  # (category, text)
    known: dict = field(default_factory=dict)  # issue-17 item -> [texts]
    notes: dict = field(default_factory=dict)
    seconds: float = 0.0

    def fail(self, category, text):
        self.failures.append((category, text))

    def hit(self, item, text):
        """A finding that matches a known issue-17 item: a failure once the
        item is marked fixed in KNOWN."""
        if KNOWN.get(item):
            self.known.setdefault(item, []).append(text)
        else:
            self.fail(f"item{item}", text)

    @property
    def ok(self):
        return not self.failures

    def summary(self):
        k = ", ".join(f"item {i}: {len(v)}" for i, v in sorted(self.known.items())) or "none"
        return (
            f"seed {self.seed} ({self.method}, {self.members} members, ring {self.size} B): "
            f"{self.kills} kills {dict(sorted(self.aimed.items()))}, "
            f"{self.deliveries} deliveries checked by {self.checked_readers} readers, "
            f"{len(self.failures)} failures, known bugs hit: {k}, {self.seconds:.1f} s"
        )

    def report(self, replay):
        lines = [self.summary()]
        lines += [f"  [{c}] {t}" for c, t in self.failures[:30]]
        if len(self.failures) > 30:
            lines.append(f"  ... and {len(self.failures) - 30} more")
        lines.append(f"replay: {replay}")
        return "\n".join(lines)


_names = iter(range(10**9))


def plan(seed, members=None, method=None, duration=None, size=None, **over):
    """The trial that ``seed`` stands for: every choice the parent makes, drawn
    from the seed (keywords override one)."""
    rng = random.Random(mix(seed, 1))
    n = members or rng.randint(4, 16)
    if size is None:
        size = rng.choice([4096, 8192, 16384, 16384, 65536, 65536, 1 << 20])
    t = {
        "seed": seed,
        "method": method or rng.choice(["fork", "spawn"]),
        "members": n,
        "size": size,
        "copy_outside": rng.choice([size // 16, size // 8, size // 4]),
        "reap_intervals": rng.choice([(0.1, 0.3), (0.2, 1.0), (1.0,)]),
        "timers": (0.0, 0.001, 0.01, 0.05, 0.2),
        "lock_check": rng.choice([None, None, 0.05]),
        "duration": duration or rng.uniform(2.0, 5.0),
        "kill_rate": rng.uniform(4, 15),  # kills per second
        "roles": [],
        "fault": None,
        "durable": rng.random() < 0.5,
        "threads": rng.random() < 0.6,
        "bridge": False,
        "stall_s": STALL_S,
    }
    t.update(over)
    if t["method"] == "spawn":  # a replacement costs ~0.5-1 s of CPU to start
        t["kill_rate"] = min(t["kill_rate"], 1.0)
    return t


def run_trial(seed, name=None, **over):
    """Run one trial; return its :class:`Result`.  Never hangs: every wait has
    a deadline, every process is killed and joined, the queue is removed."""
    import introspect

    from pysyncq import PySyncQ, remove

    t = plan(seed, **over)
    rng = random.Random(mix(seed, 2))
    ctx = mp.get_context(t["method"])
    res = Result(seed=seed, method=t["method"], members=t["members"], size=t["size"])
    t0 = time.monotonic()
    max_kills = int(t["duration"] * t["kill_rate"] * 1.5) + 4
    maxinc = t["members"] + max_kills + 4
    raw = ctx.RawArray("q", Board.words(maxinc))
    board = Board(raw, maxinc)
    tmp = tempfile.mkdtemp(prefix="pysyncq-storm-")
    base = name or f"pysyncq-test-{os.getpid()}-storm-{next(_names)}"
    qnames = [base] + ([base + "-b"] if t["bridge"] else [])
    cfg = {
        "seed": seed,
        "qnames": qnames,
        "size": t["size"],
        "copy_outside": max(64, t["copy_outside"]),
        "reap_intervals": t["reap_intervals"],
        "timers": t["timers"],
        "lock_check": t["lock_check"],
        "dir": tmp,
        "maxinc": maxinc,
        "fault": t["fault"],
        "stall_s": t["stall_s"],
    }
    cfg["slots"] = 4 * t["members"] + 16
    slots = 4 * t["members"] + 16
    queues = [PySyncQ(qn, size=t["size"], slots=slots) for qn in qnames]
    q = queues[0]
    procs = {}  # inc -> Process
    roles = {}
    killed = set()
    bridges = {}
    redis = None
    state = {"next": 0}

    def start(role=None, qidx=0):
        inc = state["next"]
        if inc >= maxinc:
            return None
        state["next"] += 1
        if role is None:
            r = rng.random()
            role = "plain"
            if t["threads"] and r < 0.15:
                role = "shared2"
            elif t["threads"] and r < 0.3:
                role = "two"
        board.qidx[inc] = qidx
        p = ctx.Process(target=member_main, args=(cfg, raw, inc, role, qidx), daemon=True)
        p.start()
        board.pid[inc] = p.pid
        procs[inc] = p
        roles[inc] = (role, qidx)
        return inc

    def lanes_of(inc):
        return max(1, int(board.nlanes[inc]))

    def state_of(inc):
        if not board.nlanes[inc]:
            return ST_START
        return min(int(board.status[2 * inc + j]) for j in range(lanes_of(inc)))

    def live():
        return [i for i, p in procs.items() if i not in killed and p.exitcode is None]

    try:
        if t["bridge"]:
            from redis_server import RedisServer

            redis = RedisServer(tmp).start()
            for i, qn in enumerate(qnames):
                bridges[i] = _start_bridge(ctx, qn, redis.url, base, "AB"[i])
            for p in bridges.values():
                if not p.ready.wait(120):
                    _stall(res, board, procs, killed, f"bridge {p.name} did not start")
        protected = set()
        if t["fault"]:
            protected.add(start("fault"))
        if t["durable"]:
            start("durable", 0)
        while state["next"] < t["members"]:
            start(qidx=state["next"] % len(qnames))
        # The storm's clock starts once the first members have opened: under
        # spawn each takes about a second of CPU to import numba and pysyncq.
        if not _wait_all(lambda: all(board.beat[2 * i] for i in procs), 60):
            _stall(res, board, procs, killed, "members did not start")
        storm_end = time.monotonic() + t["duration"]
        next_stats = time.monotonic() + 0.2
        budget, last_round = 0.0, time.monotonic()
        while time.monotonic() < storm_end:
            _reap_exits(procs, killed, res, roles, tmp)
            for inc, p in list(procs.items()):
                if p.exitcode is not None and not getattr(p, "_replaced", False):
                    p._replaced = True
                    role, qidx = roles[inc]
                    start(role if role == "durable" else None, qidx)
            # Kills come at kill_rate per second however long a round takes; a
            # round whose aim finds nobody in that phase tries another aim next.
            now = time.monotonic()
            budget = min(2.0, budget + t["kill_rate"] * (now - last_round))
            last_round = now
            if budget >= 1 and res.kills < max_kills:
                wanted = range(t["members"])
                if _kill_one(rng, q, board, procs, killed, protected, roles, res, wanted):
                    budget -= 1
            if CHECK_STATS and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + 0.25
                _sample_stats(queues, res)
            _watch_stalls(board, procs, killed, res, t["stall_s"])
            if any(c == "stall" for c, _ in res.failures):
                break
            time.sleep(0.005)
        if not any(c == "stall" for c, _ in res.failures):
            _finish(t, board, procs, killed, queues, roles, res, live, state_of)
        _reap_exits(procs, killed, res, roles, tmp)
        _check_logs(res, board, tmp, roles)
    finally:
        for p in procs.values():
            if p.exitcode is None:
                p.kill()
        for p in procs.values():
            p.join(10)
        for p in bridges.values():
            _stop_bridge(p)
        if redis is not None:
            redis.stop()
        for qq in queues:
            qq.close()
        for qn in qnames:
            try:
                remove(qn, force=True)
            except Exception:  # noqa: BLE001 - gone already
                pass
            introspect.remove_shm(qn)
        if t["bridge"] and redis is not None:
            from pysyncq.bridge import Bridge

            for i, qn in enumerate(qnames):
                path = introspect.bridge_position_file(
                    Bridge(qn, redis.url, stream=base, origin="AB"[i])
                )
                if os.path.exists(path):
                    os.unlink(path)
        for f in glob.glob(os.path.join(tmp, "*")):
            os.unlink(f)
        os.rmdir(tmp)
    res.seconds = time.monotonic() - t0
    return res


def _finish(t, board, procs, killed, queues, roles, res, live, state_of):
    """Stop writing, drain, check the stats of the idle queue, close."""
    stall_s = t["stall_s"]
    board.ctl[0] = 1
    if not _wait_all(lambda: all(state_of(i) >= ST_WRITES_DONE for i in live()), stall_s):
        return _stall(res, board, procs, killed, "members did not stop writing")
    board.ctl[1] = 1
    if not _wait_all(lambda: all(state_of(i) >= ST_DRAINED for i in live()), DRAIN_S + 10):
        return _stall(res, board, procs, killed, "members did not finish draining")
    if CHECK_STATS and not res.failures and not t["fault"]:
        _final_stats(queues, board, procs, killed, roles, res, bool(t["bridge"]))
    board.ctl[2] = 1
    deadline = time.monotonic() + stall_s
    for inc in live():
        procs[inc].join(max(0.1, deadline - time.monotonic()))
    if live():
        _stall(res, board, procs, killed, "members did not close and exit")


def _start_bridge(ctx, qname, url, stream, origin):
    ready = ctx.Event()
    p = ctx.Process(target=bridge_main, args=(qname, url, stream, origin, ready), daemon=True)
    p.start()
    p.ready = ready
    return p


def _stop_bridge(p):
    if p.exitcode is None:
        p.terminate()
        p.join(10)
    if p.exitcode is None:
        p.kill()
        p.join(10)


def _wait_all(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _phases(board, procs, killed):
    out = []
    for inc, p in procs.items():
        if inc in killed or p.exitcode is not None:
            continue
        n = max(1, int(board.nlanes[inc]))
        ph = "/".join(PHASES[int(board.phase[2 * inc + j])] for j in range(n))
        st = "/".join(str(int(board.status[2 * inc + j])) for j in range(n))
        out.append(f"member {inc} (pid {p.pid}): {ph} [status {st}]")
    return "; ".join(out)


def _stall(res, board, procs, killed, what):
    res.fail("stall", f"{what}: {_phases(board, procs, killed)}")


def _watch_stalls(board, procs, killed, res, stall_s):
    now = now_ms()
    for inc, p in procs.items():
        if inc in killed or p.exitcode is not None:
            continue
        for j in range(max(1, int(board.nlanes[inc]))):
            beat = int(board.beat[2 * inc + j])
            ph = PHASES[int(board.phase[2 * inc + j])]
            if (
                beat
                and ph not in ("writes_done", "drained", "done", "starting")
                and (now - beat > stall_s * 1000)
            ):
                res.fail(
                    "stall",
                    f"member {inc} lane {j} (pid {p.pid}) stuck in {ph} for "
                    f"{(now - beat) / 1000:.1f} s; all: {_phases(board, procs, killed)}",
                )
                return


def _reap_exits(procs, killed, res, roles, tmp):
    for inc, p in procs.items():
        if p.exitcode is not None and inc not in killed and not getattr(p, "_seen", False):
            p._seen = True
            if p.exitcode != 0:
                path = os.path.join(tmp, f"crash{inc}.txt")
                why = _read(path)[-3000:] if os.path.exists(path) else ""
                res.fail("crash", f"member {inc} ({roles[inc][0]}) exited {p.exitcode}: {why}")


def _kill_one(rng, q, board, procs, killed, protected, roles, res, procs_wanted=()):
    """SIGKILL one member: by phase, the lock holder, or at random."""
    import introspect

    alive = [
        i
        for i, p in procs.items()
        if i not in killed and i not in protected and p.exitcode is None and board.nlanes[i]
    ]
    # Keep at least half of the members running: under spawn a replacement
    # needs a second or more to start, and a storm of members still starting
    # tests nothing.
    running = [i for i in alive if board.status[2 * i] == ST_RUN]
    if len(running) < max(2, len(procs_wanted) // 2):
        return False
    aim = rng.choice(AIMS + ("lock", "lock", "random"))
    victim = None
    if aim == "lock":
        pids = {int(board.pid[i]): i for i in alive}
        deadline = time.monotonic() + 0.03
        while victim is None and time.monotonic() < deadline:
            victim = pids.get(introspect.lock_holder_pid(q))
        if victim is not None:
            ph = PHASES[int(board.phase[2 * victim])]
            aim = f"lock@{ph}"
    elif aim == "random":
        victim = rng.choice(alive)
    else:
        lanes = {i: range(int(board.nlanes[i])) for i in alive}
        hits = [i for i in alive if any(board.phase[2 * i + j] == P[aim] for j in lanes[i])]
        victim = rng.choice(hits) if hits else None
    if victim is None:
        res.notes["missed_aims"] = res.notes.get("missed_aims", 0) + 1
        return False
    try:
        os.kill(int(board.pid[victim]), signal.SIGKILL)
    except ProcessLookupError:
        return False
    killed.add(victim)
    res.kills += 1
    key = aim.split("@")[0] if not aim.startswith("lock@") else aim
    if roles[victim][0] == "durable":
        key = "durable:" + key
    res.aimed[key] = res.aimed.get(key, 0) + 1
    return True


def _sample_stats(queues, res):
    for q in queues:
        s = q.stats()
        for r in s.members:
            if r.reader and r.lag < 0:
                res.hit(4, f"stats() during the storm: member {r.name} lag {r.lag} < 0")
        if s.used > s.capacity or s.free < 0:
            res.hit(4, f"stats() during the storm: used {s.used}, free {s.free}")


def _final_stats(queues, board, procs, killed, roles, res, bridged):
    """With every member drained and idle: counters exact, nothing held."""
    done = board.done
    for q in queues:
        s = q.stats()
        for r in s.members:
            name = r.name if isinstance(r.name, str) else r.name.decode("utf-8", "replace")
            if not r.alive or not re.fullmatch(r"m\d+", name):
                continue  # dead (reaped at the next full queue), durable or a bridge
            w = int(name[1:])
            sent = int(done[w]) + int(board.discarded[w])
            if r.sent != sent and not bridged:
                res.fail(
                    "stats",
                    f"member {name}: stats sent {r.sent}, it appended {done[w]} and"
                    f" discarded {board.discarded[w]} loans",
                )
            if r.reader and r.received != int(board.recv[w]):
                res.fail(
                    "stats", f"member {name}: stats received {r.received}, it got {board.recv[w]}"
                )
            if r.reader and r.lag != 0:
                (res.hit(4, f"final stats: {name} lag {r.lag}") if r.lag < 0 else res.fail(
                    "stats", f"final stats: drained member {name} has lag {r.lag}"))  # fmt: skip
            if r.reader and r.lag_messages != 0:
                res.hit(5, f"final stats: drained member {name} lag_messages {r.lag_messages}")
        dead = [r.name for r in s.members if not r.alive]
        if s.held != 0 and not dead and not bridged:  # a bridge may still be relaying
            res.hit(5, f"final stats: held {s.held} with every member drained")
        if not bridged:
            gone = int(board.discarded.sum())  # reserved, so counted, then discarded
            lo, hi = int(board.done.sum()) + gone, int(board.pend.sum()) + gone
            if s.appended < lo:
                res.hit(7, f"final stats: appended {s.appended} < {lo} appends that returned")
            elif s.appended > hi + len(killed) * 8:
                res.fail("stats", f"final stats: appended {s.appended} > {hi} attempted")


def _read(path):
    with open(path) as f:
        return f.read()


def _check_logs(res, board, tmp, roles):
    """The end-of-trial verdict from every membership's log and violations."""
    for path in sorted(glob.glob(os.path.join(tmp, "v*.txt"))):
        for line in _read(path).splitlines():
            cat = line.split(":", 1)[0]
            if cat == "stall":
                res.hit(1, line) if KNOWN.get(1) else res.fail("stall", line)
            else:
                res.fail(cat, line)
    for path in sorted(glob.glob(os.path.join(tmp, "n*.txt"))):
        for line in _read(path).splitlines():
            kind, _, text = line.partition("\t")
            if kind == "item2":
                res.hit(2, text)
            else:
                res.notes[kind] = res.notes.get(kind, 0) + 1
    done, pend, clean = board.done, board.pend, board.clean
    for path in sorted(glob.glob(os.path.join(tmp, "log*.pickle"))):
        with open(path, "rb") as f:
            log = pickle.load(f)
        res.checked_readers += 1
        res.deliveries += log["count"]
        who = f"[reader {log['name']} (membership {log['w']}), seed {res.seed}]"
        missing = []
        for w in set(np.flatnonzero(pend).tolist()) | set(log["got"]):
            got = set(log["got"].get(w, ()))
            if log["takeover"] and w in log["lower"]:
                got.discard(log["lower"][w] - 1)  # the predecessor's last, seeded in
            for seq in got:
                if seq >= pend[w]:
                    res.fail("phantom", f"writer {w} seq {seq} delivered, never appended {who}")
                elif seq >= done[w] and clean[w]:
                    res.fail(
                        "phantom",
                        f"writer {w} seq {seq} delivered though its call raised {who}",
                    )
            if name_of(w) in log["scrnsend"]:
                continue
            hi = int(done[w]) if log["drained"] else (max(got) + 1 if got else 0)
            hi = min(hi, int(done[w]))
            for seq in range(log["lower"].get(w, 0), hi):
                if seq not in got and mtype_of(w, seq) not in log["scrntype"]:
                    missing.append((w, seq))
        if len(missing) > log["slack"]:
            first = ", ".join(f"writer {w} seq {s}" for w, s in missing[:5])
            res.fail("lost", f"{len(missing)} messages owed never delivered ({first}) {who}")


def _check_env_seed(default):
    v = os.environ.get(SEED_ENV)
    return int(v) if v else default


def replay_command(seed, test=None, **over):
    if test:
        return f"{SEED_ENV}={seed} python -m pytest tests/test_storm.py -k '{test}'"
    extra = "".join(f" --{k} {v}" for k, v in over.items() if v is not None)
    return f"python tests/storm.py --seed {seed} --trials 1{extra}"


def cli(argv=None):
    ap = argparse.ArgumentParser(description="a long seeded kill storm against pysyncq")
    ap.add_argument("--seed", type=int, default=1, help="trial i runs seed + i")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--members", type=int, default=None, help="default: 4-16 from the seed")
    ap.add_argument("--method", choices=["fork", "spawn"], default=None)
    ap.add_argument("--duration", type=float, default=None, help="seconds of storm per trial")
    ap.add_argument("--bridge", action="store_true", help="two queues joined by Redis bridges")
    ap.add_argument("--fault", choices=["drop", "dup", "reorder", "corrupt"], default=None)
    a = ap.parse_args(argv)
    total = Result(seed=a.seed, method=a.method or "mixed", members=a.members or 0)
    failed = []
    for i in range(a.trials):
        seed = a.seed + i
        over = {"members": a.members, "method": a.method, "duration": a.duration}
        extra = {"bridge": True} if a.bridge else {}
        if a.fault:
            extra["fault"] = a.fault
        r = run_trial(seed, **{k: v for k, v in over.items() if v is not None}, **extra)
        print(r.summary(), flush=True)
        for c, text in r.failures[:10]:
            print(f"  [{c}] {text[:600]}", flush=True)
        for item, texts in sorted(r.known.items()):
            print(f"  known item {item}: {len(texts)}x, e.g. {texts[0][:300]}", flush=True)
        total.kills += r.kills
        total.deliveries += r.deliveries
        total.checked_readers += r.checked_readers
        total.failures += r.failures
        for k, v in r.aimed.items():
            total.aimed[k] = total.aimed.get(k, 0) + v
        for k in r.known:
            total.known.setdefault(k, []).append(seed)
        if r.failures:
            failed.append(seed)
    cats = {}
    for c, _ in total.failures:
        cats[c] = cats.get(c, 0) + 1
    print(
        f"\n{a.trials} trials, {total.kills} kills, {total.deliveries} deliveries checked "
        f"({total.checked_readers} reader logs), {len(total.failures)} failures {cats} "
        f"in seeds {failed}"
    )
    for item, seeds in sorted(total.known.items()):
        print(f"known issue-17 item {item} hit in {len(seeds)} trials: seeds {seeds}")
    print(f"kills by aim: {dict(sorted(total.aimed.items()))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import storm as _storm  # the children's targets must live in module "storm"

    sys.exit(_storm.cli())
