"""Fuzz a queue's shared memory: no value in it may crash, hang or raise a
foreign exception (issue 6).

Each trial runs in a forked child, so that a crash is a failed trial and not
a dead test run.  The child creates a small queue, opens two or three handles
on it, fills it with messages of mixed sizes that wrap the ring (popping some
so that the cursors differ), then overwrites one 8-byte word (or a run of
random bytes) of the header, the reader table or the ring through
``/dev/shm/NAME`` and calls every operation: pop (block=False, block=True,
decode=False), append, stats, attaching and opening a new handle, close, and
``pysyncq.remove(name, force=True)``.  The parent waits with a timeout and
records an exit signal, a timeout or the class of any exception that is not a
``PySyncQError``: each of those fails the test, with the trial's seed so that
it reproduces (``python tests/test_fuzz.py --seed N -v``).

Run as a script for a report on any checkout (``PYTHONPATH=<tree> python
tests/test_fuzz.py --trials 1000``); only what the layout module says (slot
size, header size) is taken from the tree under test.
"""

import collections
import json
import os
import random
import select
import signal
import struct
import sys
import tempfile
import time

import introspect
import pytest

import pysyncq
from pysyncq import layout as L

PySyncQError = pysyncq.PySyncQError
QueueCorrupt = getattr(pysyncq, "QueueCorrupt", None)
NotAQueue = pysyncq.NotAQueue

TRIAL_TIMEOUT = 10.0  # seconds a trial may take before it counts as a hang
DEFAULT_TRIALS = 200
SLOW_TRIALS = 5000
SEED_BASE = 0x5EED0000
HEADER_WORDS = L.HEADER_BYTES // 8
SLOT_WORDS = L.SLOT_BYTES // 8

#: Outcomes that fail a trial (anything else is a pass).
FAILURES = ("signal", "hang", "foreign", "harness", "left-behind", "after-corrupt")


# -- In the child -----------------------------------------------------------------


class Trial:
    """One trial: ``run()`` returns a dict of what happened."""

    def __init__(self, seed, name):
        self.seed = seed
        self.name = name
        self.rng = random.Random(seed)
        self.calls = []  # (step, exception class or "ok")
        self.foreign = []  # "step: Class: message"
        self.after_corrupt = []

    # -- Recording.
    def call(self, step, fn, *args, allow=(), **kw):
        try:
            result = fn(*args, **kw)
        except PySyncQError as e:
            self.calls.append((step, type(e).__name__, str(e)[:200]))
            return e
        except allow as e:
            self.calls.append((step, type(e).__name__, str(e)[:200]))
            return e
        except Exception as e:  # noqa: BLE001 - what the fuzz looks for
            self.calls.append((step, type(e).__name__, str(e)[:200]))
            self.foreign.append(f"{step}: {type(e).__name__}: {str(e)[:300]}")
            return e
        self.calls.append((step, "ok", ""))
        return result

    # -- Building a queue with some history.
    def message(self, cap):
        rng = self.rng
        n = rng.choice([0, 1, 7, 8, 9, 15, 16, rng.randrange(0, cap // 3)])
        mtype = rng.choice(["", "t", "type", b"\xff\x00"])
        body = (
            rng.randbytes(n)
            if rng.random() < 0.5
            else "x" * n
            if rng.random() < 0.5
            else "é" * (n // 2)
        )
        return mtype, body

    def build(self):
        rng = self.rng
        cap = rng.choice([512, 1024, 2048, 4096, rng.randrange(512, 4097)])
        nslots = rng.randrange(3, 7)
        q0 = pysyncq.PySyncQ(self.name, size=cap, slots=nslots)
        self.handles = [q0]
        q0.open("h0", filtself=rng.random() < 0.5)
        for i in range(1, rng.randrange(2, 4)):
            q = pysyncq.PySyncQ(self.name, create=False)
            q.open(f"h{i}", filtself=rng.random() < 0.5, reader=rng.random() < 0.85)
            self.handles.append(q)
        cap = q0.size
        for _ in range(rng.randrange(5, 60)):
            q = rng.choice(self.handles)
            if rng.random() < 0.65:
                mtype, body = self.message(cap)
                try:
                    q.append(mtype, body)
                except pysyncq.QueueFull:
                    for r in self.handles:
                        if introspect.reads(r):
                            for _ in range(rng.randrange(1, 4)):
                                r.pop()
                except pysyncq.MessageTooLarge:
                    pass
            elif introspect.reads(q):
                q.pop()
        self.cap = cap
        self.nslots = nslots

    def records(self):
        """Positions of the records between the head and the write position."""
        w = introspect.words(self.handles[0])
        cur, end = int(w[L.H_HEAD]), int(w[L.H_WRITE_POS])
        found = []
        while cur < end:
            room = self.cap - cur % self.cap
            if room < L.REC_HEADER:
                cur += room
                continue
            found.append(cur % self.cap)
            cur += int(w[(int(w[L.H_RING_OFFSET]) + cur % self.cap) // 8])
        return found

    # -- The corruption.
    def value(self, old):
        rng = self.rng
        kind = rng.randrange(12)
        return [
            0,
            -1,
            rng.randrange(1, 65),
            2**40,
            2**62,
            -(2**63),
            rng.randrange(-(2**63), 2**63),
            old + 8,
            old - 8,
            old + self.cap,
            old - self.cap,
            old ^ (1 << rng.randrange(64)),
        ][kind]

    def corrupt(self):
        rng = self.rng
        ring = L.ring_offset(self.nslots)
        where = rng.choice(["header", "slot", "size", "meta", "ring", "bytes"])
        recs = self.records()
        if where in ("size", "meta") and not recs:
            where = "ring"
        if where == "header":
            # The words of the hot path and the geometry more often than the rest.
            index = rng.choice([rng.randrange(HEADER_WORDS), rng.randrange(0, 28)])
            at = index * 8
        elif where == "slot":
            at = L.HEADER_BYTES + rng.randrange(self.nslots) * L.SLOT_BYTES
            at += rng.randrange(SLOT_WORDS) * 8
        elif where in ("size", "meta"):
            at = ring + rng.choice(recs) + (0 if where == "size" else 8)
        elif where == "ring":
            at = ring + rng.randrange(self.cap // 8) * 8
        else:
            at = rng.choice([0, L.HEADER_BYTES, ring]) + rng.randrange(self.cap)
            at = min(at, ring + self.cap - 1)
        fd = os.open(introspect.shm_path(self.name), os.O_RDWR)
        try:
            if where == "bytes":
                n = min(rng.randrange(1, 65), ring + self.cap - at)
                data = bytes(rng.randrange(256) for _ in range(n))
                what = f"{n} random bytes at {at}"
            else:
                (old,) = struct.unpack("<q", os.pread(fd, 8, at))
                new = self.value(old)
                new = (new + 2**63) % 2**64 - 2**63
                data = struct.pack("<q", new)
                what = f"{where} word at byte {at} (word {at // 8}): {old} -> {new}"
            os.pwrite(fd, data, at)
        finally:
            os.close(fd)
        return where, what

    # -- Using the corrupt queue.
    def exercise(self):
        rng = self.rng
        hs = self.handles
        cap = self.cap
        for i, q in enumerate(hs):
            if introspect.reads(q):
                self.call(f"h{i}.pop", q.pop)
                self.call(f"h{i}.pop(block)", q.pop, block=True, timer=0.005)
                self.call(f"h{i}.pop(raw)", q.pop, decode=False)
            self.call(f"h{i}.append", q.append, *self.message(cap))
            self.call(f"h{i}.append(big)", q.append, "big", b"b" * rng.randrange(cap))
        for i, q in enumerate(hs):
            self.call(f"h{i}.stats", q.stats)
        new = self.call(
            "attach", pysyncq.PySyncQ, self.name, create=False, allow=(FileNotFoundError,)
        )
        if isinstance(new, pysyncq.PySyncQ):
            hs.append(new)
            i = len(hs) - 1
            if not isinstance(self.call("new.open", new.open, "new"), Exception):
                self.call("new.append", new.append, "t", "hello")
                self.call("new.pop", new.pop)
            self.call("new.stats", new.stats)
        # A handle that saw QueueCorrupt must still answer stats() and close().
        corrupt = {step.split(".")[0] for step, cls, _ in self.calls if cls == "QueueCorrupt"}
        for i, q in enumerate(hs):
            key = "new" if q is new else f"h{i}"
            r = self.call(f"{key}.close", q.close)
            if key in corrupt:
                if isinstance(r, Exception) and not isinstance(
                    r, getattr(pysyncq, "QueueLocked", ())
                ):
                    self.after_corrupt.append(f"{key}.close raised {type(r).__name__}: {r}")
        for i, q in enumerate(hs):
            key = "new" if q is new else f"h{i}"
            if key in corrupt:
                # stats() of a closed handle raises QueueClosed; that of an open
                # one must answer, which the calls above checked.
                bad = [c for s, c, _ in self.calls if s == f"{key}.stats" and c not in ("ok",)]
                if bad:
                    self.after_corrupt.append(f"{key}.stats raised {bad[0]} after QueueCorrupt")
        self.call("remove", pysyncq.remove, self.name, force=True)

    def run(self):
        self.build()
        where, what = self.corrupt()
        self.exercise()
        return {
            "where": where,
            "what": what,
            "calls": self.calls,
            "foreign": self.foreign,
            "after_corrupt": self.after_corrupt,
        }


def _child(seed, name, wfd, tb_path):
    import faulthandler

    code = 0
    try:
        with open(tb_path, "w") as tb:
            faulthandler.enable(tb)
            # Not dump_traceback_later: under pytest's faulthandler_timeout the
            # parent's watchdog is armed, and re-arming it in a forked child
            # deadlocks.  The parent sends SIGUSR1 before it kills a hang.
            faulthandler.register(signal.SIGUSR1, file=tb)
            introspect.shorten_waits()
            try:
                result = Trial(seed, name).run()
            except BaseException as e:  # noqa: BLE001 - a bug of the harness (or of setup)
                result = {"harness": f"{type(e).__name__}: {e}"}
            os.write(wfd, json.dumps(result).encode())
    except BaseException:  # noqa: BLE001
        code = 3
    finally:
        os._exit(code)


# -- In the parent ----------------------------------------------------------------


def _read_all(fd, deadline):
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return b"".join(chunks), False
        data = os.read(fd, 1 << 16)
        if not data:
            return b"".join(chunks), True
        chunks.append(data)


def run_forked(target, *args, timeout=TRIAL_TIMEOUT):
    """Run ``target(*args, wfd, tb_path)`` in a forked child.  Returns
    ``(kind, detail, payload)``: kind is "ok", "signal", "hang" or "exit"."""
    rfd, wfd = os.pipe()
    fd, tb_path = tempfile.mkstemp(prefix="pysyncq-fuzz-tb-")
    os.close(fd)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)
        target(*args, wfd, tb_path)
        os._exit(4)
    os.close(wfd)
    try:
        data, eof = _read_all(rfd, time.monotonic() + timeout)
        deadline = time.monotonic() + 2.0
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        if not done:
            os.kill(pid, signal.SIGUSR1)  # its stack into tb_path (faulthandler)
            time.sleep(0.5)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            with open(tb_path) as f:
                return "hang", f.read()[-3000:], None
        if os.WIFSIGNALED(status):
            with open(tb_path) as f:
                tb = f.read()[-3000:]
            return "signal", f"{signal.Signals(os.WTERMSIG(status)).name}\n{tb}", None
        if os.WEXITSTATUS(status) != 0 or not data:
            return "exit", f"exit code {os.WEXITSTATUS(status)}", None
        return "ok", "", json.loads(data)
    finally:
        os.close(rfd)
        os.unlink(tb_path)


def classify(kind, detail, payload, name):
    """``(outcome, detail)`` of one trial."""
    left = introspect.read_header(name) is not None
    exists = os.path.exists(introspect.shm_path(name))
    introspect.remove_shm(name)
    if kind == "signal":
        return "signal:" + detail.split("\n", 1)[0], detail
    if kind == "hang":
        return "hang", detail
    if kind != "ok":
        return "harness", detail
    if "harness" in payload:
        return "harness", payload["harness"]
    if payload["foreign"]:
        return "foreign:" + payload["foreign"][0].split(": ")[1], "\n".join(payload["foreign"])
    if payload["after_corrupt"]:
        return "after-corrupt", "\n".join(payload["after_corrupt"])
    if left:
        # remove(force=True) found a queue (magic intact) and did not remove it.
        return "left-behind", payload["what"]
    classes = {c for _, c, _ in payload["calls"] if c != "ok"}
    if exists:
        return "magic-gone", payload["what"]  # not a queue any more: not ours to remove
    if "QueueCorrupt" in classes:
        return "corrupt-detected", ""
    if classes - {"QueueClosed", "QueueFull", "MessageTooLarge"}:
        return "other-pysyncq-error", ",".join(sorted(classes))
    return "no-error", ""


def is_failure(outcome):
    return outcome.split(":")[0] in FAILURES


def run_trials(seeds, name_prefix, verbose=False):
    """Run one trial per seed; return ``(Counter of outcomes, [failures])``."""
    introspect.warm_up()  # compile once in the parent, not in every child
    outcomes = collections.Counter()
    failures = []
    wheres = collections.Counter()
    for n, seed in enumerate(seeds):
        name = f"{name_prefix}-{n}"
        t0 = time.monotonic()
        kind, detail, payload = run_forked(_child, seed, name)
        took = time.monotonic() - t0
        outcome, why = classify(kind, detail, payload, name)
        outcomes[outcome] += 1
        if payload and "where" in payload:
            wheres[payload["where"]] += 1
        if is_failure(outcome):
            what = payload.get("what", "") if payload else ""
            failures.append(f"seed {seed}: {outcome} ({what})\n{why}")
        if verbose:
            what = payload.get("what", "") if payload else ""
            print(f"seed {seed}: {took:.2f} s {outcome}  {what}")
            if payload and verbose > 1:
                for c in payload["calls"]:
                    print("    ", c)
    return outcomes, failures, wheres


def report(outcomes, failures, wheres, elapsed):
    total = sum(outcomes.values())
    bad = sum(v for k, v in outcomes.items() if is_failure(k))
    lines = [f"fuzz: {total} trials in {elapsed:.1f} s, {bad} failed"]
    lines += [f"  {k:30s} {v}" for k, v in sorted(outcomes.items())]
    lines.append("  targets: " + ", ".join(f"{k} {v}" for k, v in sorted(wheres.items())))
    return "\n".join(lines)


def _fuzz(qname, trials):
    seeds = [SEED_BASE + i for i in range(trials)]
    t0 = time.monotonic()
    outcomes, failures, wheres = run_trials(seeds, qname)
    print("\n" + report(outcomes, failures, wheres, time.monotonic() - t0))
    assert not failures, f"{len(failures)} failed trials:\n\n" + "\n\n".join(failures[:10])


def test_fuzz_segment(qname):
    _fuzz(qname, DEFAULT_TRIALS)


#: Seeds that once failed, run in the default suite: 1592591305 wrote random
#: bytes over the header's flags, with F_UNLINKED among them, and stats()
#: took the corrupt word for a revocation (QueueClosed, not QueueCorrupt).
REGRESSIONS = [1592591305]


def test_fuzz_regressions(qname):
    outcomes, failures, _ = run_trials(REGRESSIONS, qname)
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_segment_long(qname):
    _fuzz(qname, SLOW_TRIALS)


# -- Shared memory that is not a queue ------------------------------------------


def _not_a_queue_files():
    magic = struct.pack("<q", L.MAGIC)
    rng = random.Random(7)

    def header(**words):
        w = [0] * HEADER_WORDS
        w[L.H_MAGIC] = L.MAGIC
        w[L.H_VERSION] = L.LAYOUT_VERSION
        w[L.H_CAPACITY] = 1024
        w[L.H_NSLOTS] = 4
        w[L.H_RING_OFFSET] = L.ring_offset(4)
        for k, v in words.items():
            w[getattr(L, k)] = v
        return struct.pack(f"<{HEADER_WORDS}q", *w)

    full = L.segment_bytes(1024, 4)
    return {
        "empty": b"",
        "short": b"\x01" * 100,
        "magic-only": magic,
        "random": bytes(rng.randrange(256) for _ in range(4096)),
        "random-with-magic": magic + bytes(rng.randrange(256) for _ in range(4088)),
        "header-only": header(),
        "shorter-than-header-says": header() + bytes(500),
        "older-version": header(H_VERSION=L.LAYOUT_VERSION - 1).ljust(full, b"\0"),
        "newer-version": header(H_VERSION=L.LAYOUT_VERSION + 1).ljust(full, b"\0"),
        "huge-capacity": header(H_CAPACITY=2**62).ljust(full, b"\0"),
        "negative-slots": header(H_NSLOTS=-1, H_RING_OFFSET=L.HEADER_BYTES).ljust(full, b"\0"),
        "huge-slots": header(H_NSLOTS=2**40).ljust(full, b"\0"),
        "bad-ring-offset": header(H_RING_OFFSET=2**50).ljust(full, b"\0"),
        "bad-positions": header(H_WRITE_POS=-8, H_HEAD=8).ljust(full, b"\0"),
    }


def _attach_child(name, wfd, tb_path):
    introspect.shorten_waits()
    try:
        q = pysyncq.PySyncQ(name, create=False)
    except PySyncQError as e:
        result = type(e).__name__
    except BaseException as e:  # noqa: BLE001
        result = f"foreign {type(e).__name__}: {e}"
    else:
        q.close()
        result = "attached"
    os.write(wfd, json.dumps(result).encode())
    os._exit(0)


@pytest.mark.parametrize("case", sorted(_not_a_queue_files()))
def test_attach_not_a_queue(qname, case):
    """Attaching to shared memory that is not a (readable) queue raises
    NotAQueue or QueueCorrupt in the child, and changes nothing."""
    data = _not_a_queue_files()[case]
    path = introspect.shm_path(qname)
    with open(path, "wb") as f:
        f.write(data)
    try:
        kind, detail, result = run_forked(_attach_child, qname)
        with open(path, "rb") as f:
            assert f.read() == data, "attaching changed a segment that is not a queue"
    finally:
        introspect.remove_shm(qname)
    assert kind == "ok", f"{case}: {kind} {detail}"
    assert result in ("NotAQueue", "QueueCorrupt"), f"{case}: {result}"


# -- After a QueueCorrupt ------------------------------------------------------------


def test_corrupt_then_close_and_stats(qname):
    """A record's size word overwritten with 0: pop raises QueueCorrupt naming
    it; stats() still answers, every handle closes, nothing is left."""
    q = pysyncq.PySyncQ(qname, size=512, slots=4)
    r = pysyncq.PySyncQ(qname, create=False)
    q.open("w")
    r.open("r")
    q.append("t", "hello")
    q.append("t", "world")
    ring = L.ring_offset(4)
    fd = os.open(introspect.shm_path(qname), os.O_RDWR)
    os.pwrite(fd, struct.pack("<q", 0), ring)
    os.close(fd)
    with pytest.raises(QueueCorrupt, match="record at position 0"):
        r.pop()
    with pytest.raises(QueueCorrupt):
        r.pop(block=True, timer=0.01)
    s = r.stats()
    assert {m.name for m in s.members} == {"w", "r"}
    assert q.stats().appended == 2
    q.append("t", "still appends")  # the writer does not read the ring
    r.close()
    q.close()
    assert not os.path.exists(introspect.shm_path(qname))


def test_corrupt_header_then_clean(qname):
    """The capacity overwritten: every call raises QueueCorrupt, a new handle
    cannot attach, and ``remove(force=True)`` removes the queue."""
    q = pysyncq.PySyncQ(qname, size=512, slots=4)
    q.open("w")
    fd = os.open(introspect.shm_path(qname), os.O_RDWR)
    os.pwrite(fd, struct.pack("<q", 2**40), L.H_CAPACITY * 8)
    os.close(fd)
    with pytest.raises(QueueCorrupt, match="capacity"):
        q.append("t", "x")
    with pytest.raises(QueueCorrupt, match="capacity"):
        q.pop()
    with pytest.raises(QueueCorrupt, match="capacity"):
        pysyncq.PySyncQ(qname, create=False)
    q.stats()
    q.close()
    if os.path.exists(introspect.shm_path(qname)):
        assert pysyncq.remove(qname, force=True)
    assert not os.path.exists(introspect.shm_path(qname))


def _lock_word_child(name, value, wfd, tb_path):
    introspect.shorten_waits()
    q = pysyncq.PySyncQ(name, size=512, slots=4)
    q.open("a", filtself=False)
    q.append("t", "x")
    introspect.words(q)[L.H_LOCK] = value
    results = []
    for call in (q.pop, lambda: q.append("t", "y"), q.pop, q.close):
        try:
            results.append(repr(call()))
        except PySyncQError as e:
            results.append(type(e).__name__)
    pysyncq.remove(name, force=True)
    os.write(wfd, json.dumps(results).encode())
    os._exit(0)


@pytest.mark.parametrize("value", [1 << 62, -(2**63), (1 << 62) | (1 << 40), -1])
def test_garbage_lock_word_is_taken_over(qname, value):
    """A lock word naming no live process (found by the fuzz, seed 1592593915:
    CONTENDED alone made every waiter retry for ever) is taken over."""
    kind, detail, result = run_forked(_lock_word_child, qname, value)
    introspect.remove_shm(qname)
    assert kind == "ok", f"{kind}: {detail}"
    assert result == ["('a', 't', 'x')", "None", "('a', 't', 'y')", "None"]


# -- As a script ------------------------------------------------------------------


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    p.add_argument("--first", type=int, default=0, help="index of the first seed")
    p.add_argument("--seed", type=int, action="append", help="run only these seeds")
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args(argv)
    seeds = args.seed or [SEED_BASE + i for i in range(args.first, args.first + args.trials)]
    print(f"pysyncq from {pysyncq.__file__}", file=sys.stderr)
    t0 = time.monotonic()
    outcomes, failures, wheres = run_trials(seeds, f"pysyncq-fuzz-{os.getpid()}", args.verbose)
    print(report(outcomes, failures, wheres, time.monotonic() - t0))
    for f in failures[:20]:
        print("\n" + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
