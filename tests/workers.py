"""Process targets for the multi-process tests.

Top-level functions, so fork, spawn and forkserver can all run them.  Each
checks what it receives itself and reports failure through its exit code
(``raise SystemExit("why")``).
"""

import os
import random
import signal
import struct
import sys
import time
import zlib

from pysyncq import QueueClosed, QueueFull

WAIT = 60  # seconds any single wait in a worker may take before it is a failure


def fail(why):
    raise SystemExit(why)


# -- Seed guide -----------------------------------------------------------------


def seed_child(q, name):
    """The guide's child: open, wait for the parent's start, reply, wait for stop."""
    q.open(name)
    m = q.pop(block=True, timer=WAIT)
    if m != ("parent", "user", "start"):
        fail(f"{name}: expected the start signal, got {m!r}")
    q.append("reply", name)
    for m in q(block=True, timer=WAIT):
        if m == ("parent", "user", "stop"):
            break
    else:
        fail(f"{name}: no stop signal")
    q.close()


def default_sender_child(q):
    q.open()
    q.append("hello", "from child")
    if q.pop(block=True, timer=WAIT) != ("parent", "bye", ""):
        fail("no bye")
    q.close()


def echo_child(q, name, echo):
    """Echo every 'ping' (if ``echo``) until 'stop'; others just read."""
    q.open(name)
    q.scrntype.add("echo")
    for _, mtype, body in q(block=True, timer=WAIT):
        if mtype == "stop":
            break
        if echo:
            q.append("echo", body, block=True, timer=WAIT)
    else:
        fail(f"{name}: timed out waiting")
    q.close()


# -- Checked message streams ----------------------------------------------------
#
# A checked body is: writer id (u32), incarnation (u32), sequence (u64),
# crc32 of the payload (u32), payload.  Readers verify the checksum and that
# each (writer, incarnation) stream arrives in order with no gap or repeat.

_HEAD = struct.Struct("<IIQI")


def checked_body(writer, incarnation, seq, payload):
    return _HEAD.pack(writer, incarnation, seq, zlib.crc32(payload)) + payload


def parse_checked(body):
    writer, inc, seq, crc = _HEAD.unpack_from(body)
    payload = body[_HEAD.size :]
    if zlib.crc32(payload) != crc:
        fail(f"corrupt message from writer {writer}.{inc} seq {seq}")
    return writer, inc, seq


class StreamChecker:
    def __init__(self, name):
        self.name = name
        self.next = {}
        self.count = 0

    def check(self, body):
        writer, incarnation, seq = parse_checked(body)
        key = (writer, incarnation)
        want = self.next.get(key, 0)
        if seq != want:
            fail(f"{self.name}: writer {key} sent seq {seq}, expected {want}")
        self.next[key] = seq + 1
        self.count += 1


def checked_writer(q, writer, count, max_size, seed, block=True):
    """Append ``count`` checked messages of random payload sizes, then 'done'."""
    q.open(f"w{writer}", reader=False)
    rng = random.Random(seed)
    for seq in range(count):
        payload = rng.randbytes(rng.randint(0, max_size))
        q.append("data", checked_body(writer, 0, seq, payload), block=block, timer=WAIT)
    q.append("done", str(writer), block=True, timer=WAIT)
    q.close()


def checked_reader(q, name, writers, counts, started=None, delay=0.0):
    """Read until every writer said 'done'; check each stream and its length.

    ``counts`` maps writer id to the number of messages expected from it.
    """
    q.open(name)
    if started is not None:
        started.set()
    checker = StreamChecker(name)
    done = set()
    while len(done) < writers:
        m = q.pop(block=True, timer=WAIT, decode=False)
        if m is None:
            fail(f"{name}: stalled with {checker.count} messages, done={sorted(done)}")
        _, mtype, body = m
        if mtype == b"done":
            done.add(int(body))
        else:
            checker.check(body)
        if delay:
            time.sleep(delay)
    for writer, count in counts.items():
        if checker.next.get((writer, 0), 0) != count:
            fail(f"{name}: got {checker.next.get((writer, 0), 0)} of {count} from {writer}")
    q.close()


def append_until(q, name, started, stop):
    """Open as a writer only and append small messages as fast as the ring
    lets it (waiting for space) until ``stop`` is set."""
    q.open(name, reader=False)
    started.set()
    n = 0
    while not stop.is_set():
        try:
            q.append("n", b"x" * (n % 97), block=True, timer=0.05)
        except QueueFull:
            pass
        n += 1
    q.close()


def pop_until(q, name, started, stop):
    """Open as a reader and pop as fast as it can until ``stop`` is set."""
    q.open(name)
    started.set()
    while not stop.is_set():
        q.pop(block=True, timer=0.05)
    q.close()


# -- Crash tests ------------------------------------------------------------------


def open_and_idle(q, name, started):
    """Open as a reader, never read, sleep until killed."""
    q.open(name)
    started.set()
    time.sleep(3600)


def hold_lock_and_idle(q, started):
    """Take the queue lock, tell the parent, sleep until killed."""
    import introspect

    if not introspect.take_lock(q):
        fail("the queue lock was not free")
    started.set()
    time.sleep(3600)


def block_in_pop(q, name, started):
    q.open(name)
    started.set()
    q.pop(block=True, timer=None)
    time.sleep(3600)


def block_in_append(q, name, started):
    q.open(name, reader=False)
    started.set()
    while True:
        q.append("fill", b"x" * 100, block=True, timer=None)


def storm_writer(q, writer, incarnation, size):
    """Append checked messages of ``size`` bytes as fast as possible until killed."""
    import numpy as np

    q.open(f"s{writer}", reader=False)
    rng = random.Random(incarnation)
    payload = rng.randbytes(size)
    # Three ways to write, by incarnation: a loan filled in place; an append
    # copied outside the lock (reserve, copy, publish); an append copied with
    # the lock held, so that kills land in the critical section.
    how = incarnation % 3
    if how == 2:
        q.copy_outside = 1 << 62
    seq = 0
    while True:
        body = checked_body(writer, incarnation, seq, payload)
        try:
            if how == 0:
                with q.loan("data", len(body), np.uint8, block=True, timer=WAIT) as arr:
                    arr[:] = np.frombuffer(body, np.uint8)
            else:
                q.append("data", body, block=True, timer=WAIT)
        except QueueFull:
            fail(f"storm writer {writer}.{incarnation} stalled")
        seq += 1


def print_pid_and_sleep(q):
    q.open()
    print(os.getpid(), flush=True)
    time.sleep(3600)


# -- Stress ---------------------------------------------------------------------


def stress_writer(q, writer, count, max_size, seed):
    """Append ``count`` checked messages with payloads of 0..max_size bytes."""
    q.open(f"w{writer}", reader=False)
    rng = random.Random(seed)
    pool = rng.randbytes(2 * max_size + 1)
    sizes = [rng.randint(0, max_size) for _ in range(1024)]
    for seq in range(count):
        n = sizes[seq & 1023]
        at = (seq * 7919) % (max_size + 1)
        q.append("d", checked_body(writer, 0, seq, pool[at : at + n]), block=True, timer=WAIT)
    q.append("done", str(writer), block=True, timer=WAIT)
    q.close()


def storm_killer(q, kills_wanted, counts, seed):
    """SIGKILL writers (slots opened with reader=False) until ``kills_wanted``.

    Half of the kills are aimed: spin on the lock word and kill the writer the
    moment it holds the lock.  ``counts`` (an mp.Array of 2 ints) gets the
    kills and the aimed kills.  Does not open the queue: it only watches it.
    """
    import signal

    import introspect

    from pysyncq import kernels
    from pysyncq.layout import CONTENDED, H_LOCK

    rng = random.Random(seed)
    words = introspect.words(q)
    killed = set()
    while counts[0] < kills_wanted:
        rows = kernels.members(introspect.mem(q))  # slot -1 is the creator's hold: not a writer
        writers = {int(t) for slot, t, reader in rows if slot >= 0 and not reader} - killed
        writers = {t for t in writers if introspect.is_alive(t)}
        if not writers:
            time.sleep(0.001)
            continue
        victim = rng.choice(sorted(writers))
        if rng.random() < 0.5:
            spin_until = time.monotonic() + 0.1
            while time.monotonic() < spin_until:
                holder = int(words[H_LOCK]) & ~CONTENDED
                if holder in writers:
                    victim = holder
                    counts[1] += 1
                    break
        else:
            time.sleep(rng.uniform(0, 0.01))
        killed.add(victim)
        os.kill(introspect.token_pid(victim), signal.SIGKILL)
        counts[0] += 1


# -- Arrays -------------------------------------------------------------------


def array_echo_child(q, name):
    """Pop arrays and send each one back (same type, dtype and shape) until
    type 'stop'; check each is private and writable."""
    import numpy as np

    q.open(name)
    q.scrntype.add("back")
    while True:
        m = q.pop(block=True, timer=WAIT)
        if m is None:
            fail(f"{name}: nothing arrived")
        sender, mtype, body = m
        if mtype == "stop":
            break
        if not isinstance(body, np.ndarray) or not body.flags.writeable:
            fail(f"{name}: expected a writable ndarray, got {type(body).__name__}")
        q.append_array("back", body, block=True, timer=WAIT)
    q.close()


def loan_and_die(q, started):
    """Open, reserve a loan, tell the parent, then wait to be killed."""
    import numpy as np

    q.open("dier", reader=False)
    with q.loan("lost", 100, np.uint8) as arr:
        arr[:] = 7
        started.set()
        time.sleep(WAIT)


def follow_writer(q, started, count):
    """A write-only producer that follows the creator and never reads: it
    appends until the creator has left, then must end with QueueClosed."""
    q.open("producer", reader=False, follow=True)
    started.set()
    try:
        while True:
            q.append("data", "x", block=True, timer=None)
            with count.get_lock():
                count.value += 1
            time.sleep(0.001)
    except QueueClosed:
        sys.exit(0)
    sys.exit(3)  # the loop only ends by QueueClosed


def follow_loaner(q, started, count):
    """As follow_writer, with loan and append_array."""
    import numpy as np

    q.open("producer", reader=False, follow=True)
    started.set()
    try:
        while True:
            with q.loan("data", 8) as buf:
                buf[:] = 1
            q.append_array("arr", np.zeros(3))
            with count.get_lock():
                count.value += 1
            time.sleep(0.001)
    except QueueClosed:
        sys.exit(0)
    sys.exit(3)


def open_then_fail(q, started, code):
    """Open, write one message, then exit with ``code``."""
    q.open("child", reader=False)
    q.append("before", "sent before failing", block=True, timer=10)
    started.set()
    time.sleep(0.3)
    sys.exit(code)


def square_worker(q, index, n):
    """A worker of a group: squares its share of the tasks (i % n == index)."""
    q.scrntype.add("result")
    for _, mtype, body in q(block=True, timer=None):
        if mtype == "stop":
            return
        if int(body) % n == index:
            q.append("result", f"{body} {int(body) ** 2}", block=True, timer=None)


def failing_worker(q, index, bad):
    """A worker of a group that raises on task ``bad``."""
    for _, _mtype, body in q(block=True, timer=None):
        if body == str(bad) and index == 0:
            raise ValueError(f"worker {index} cannot do task {body}")


def stubborn_worker(q, index):
    """A worker of a group that never calls the queue again: terminated."""
    q.append("ready", str(os.getpid()))
    while True:
        time.sleep(1)


def idle_worker(q, index):
    """A worker of a group that waits for ever (until the parent leaves)."""
    q.scrntype.add("ready")  # the other workers'
    q.append("ready", str(os.getpid()))
    q.pop(block=True, timer=None)


def quick_worker(q, index):
    """A worker of a group that is done at once."""


def open_durable_and_idle(q, started):
    """Open as a durable member (a relay), sleep until killed."""
    q.open("relay", durable=True)
    started.set()
    time.sleep(3600)


def tour_worker(q, name):
    """The README tour's worker, without a send helper: every task squared
    back as a result until "stop"."""
    with q.open(name, follow=True):
        q.scrntype.add("result")  # not the other workers' results
        while True:
            sender, mtype, body = q.pop(block=True, timer=60)
            if mtype == "stop":
                break
            q.append("result", f"{name} squared {body}: {int(body) ** 2}", block=True, timer=60)


def square(x):
    """For Workers.map."""
    return x * x


def square_or_fail(x):
    """For Workers.map: fails on 13."""
    if x == 13:
        raise ValueError(f"unlucky {x}")
    return x * x


def die_on(x):
    """For Workers.map: a worker killed by a signal on 5."""
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def exit_quietly_on(x):
    """For Workers.map: ends its process with exit code 0 on 5."""
    if x == 5:
        os._exit(0)
    return x


def sys_exit_on(x):
    """For Workers.map: sys.exit(0) on 5."""
    if x == 5:
        sys.exit(0)
    return x
