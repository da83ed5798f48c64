"""One queue across hosts: a bridge between a local queue and a Redis stream.

``python -m pysyncq bridge NAME URL`` (or :class:`Bridge` in Python) attaches
to the local queue ``NAME`` (creating it if need be), opens it as a member and
relays both ways through one Redis stream (see :mod:`pysyncq._redisq` for the
keys it keeps there):

* out: every message a local process appends (not one the bridge put there
  itself) is added to the stream with its sender, type, kind and body, and the
  bridge's origin id and a sequence number;
* in: every stream entry of another origin is appended to the local queue with
  its original sender and type, in stream order.

Two threads do the two directions over one local handle; ``run()`` itself
beats, acks and trims every ``beat`` seconds and logs.  Nothing is relayed
twice in normal operation and nothing is dropped: a full local queue makes the
inbound side wait, and a full bounded stream makes the outbound side stop
draining the local queue, so local writers meet :class:`QueueFull`.
"""

import hashlib
import logging
import mmap
import os
import signal
import threading
import time
from dataclasses import dataclass

from . import _wait, kernels
from ._redisq import (
    CONNECTION_ERRORS,
    FATAL_ERRORS,
    STALE_AFTER,
    RedisQueue,
    Scripts,
    connect,
    default_origin,
    id_tuple,
    meta_keys,
    redact,
    scrub,
)
from .errors import MessageTooLarge, QueueClosed, QueueExists, QueueFull, QueueLocked
from .layout import H_DATA_SEQ, H_WRITE_POS, S_CURSOR, W_DATA
from .queue import DEFAULT_SIZE, PySyncQ

__all__ = ["Bridge", "BridgeStats", "RedisQueue", "main"]

log = logging.getLogger("pysyncq.bridge")

#: Most messages (and bytes) relayed per Redis round trip.
BATCH = 256
BATCH_BYTES = 4 << 20
#: Inbound lag (seconds of stream time) that is logged as a warning.
LAG_WARN = 10.0


@dataclass(frozen=True)
class BridgeStats:
    """What a bridge has done, at one moment."""

    relayed_out: int  #: local messages added to the stream
    relayed_in: int  #: stream entries appended to the local queue
    lag_s: float  #: how far (stream time) the inbound side is behind the stream's end
    pending_out: int  #: messages read ahead locally, not yet in the stream (full stream)
    stream_len: int  #: entries in the stream at the last beat
    trimmed: int  #: entries this bridge trimmed from the stream
    dropped_too_large: int  #: entries that can never fit in the local queue
    connected: bool


class _PosFile:
    """Where the inbound side is, in a small file in /dev/shm, written around
    every append.  Redis gets the position only every ``beat`` seconds; after a
    SIGKILL this file tells the restarted bridge where it really was.

    A record is ``(gen, ms, seq, wpos, instance, check)``: entry ``ms-seq``
    is appended locally (``wpos`` 0), or its append has begun (``wpos`` is 1
    + the local queue's write position just before, in queue ``instance``).
    In the second case the restarted bridge looks in the local queue from
    that position for a record its durable slot wrote, which tells whether the
    append took place: so no entry is appended twice, or lost.

    Two records, written in turn (the higher ``gen`` is the latest), the check
    word stored last: a kill in the middle of a write spoils only the record
    being written, and the other still holds the state before.
    """

    MAGIC = 0x5059_5359_4E43_5122
    WORDS = 6

    def __init__(self, path):
        self.path = path
        size = 16 * self.WORDS
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.words = memoryview(self.mm).cast("Q")
        self.gen = 0
        self.next = 0
        got = self._latest()
        if got is not None:
            self.gen, self.next = got[0], self.WORDS - got[5]

    def _latest(self):
        w, k = self.words, self.WORDS
        best = None
        for i in (0, k):
            rec = w[i : i + k - 1].tolist()
            check = self.MAGIC
            for x in rec:
                check ^= x
            if w[i + k - 1] == check and rec[0] and (best is None or rec[0] > best[0]):
                best = (*rec, i)
        return best

    def read(self):
        """The latest intact ``(ms, seq, wpos or None, instance)``, or None."""
        got = self._latest()
        if got is None:
            return None
        _, ms, seq, wpos1, instance, _ = got
        return ms, seq, (wpos1 - 1 if wpos1 else None), instance

    def write(self, ms, seq, wpos=None, instance=0):
        w, i, k = self.words, self.next, self.WORDS
        self.gen += 1
        rec = (self.gen, ms, seq, 0 if wpos is None else wpos + 1, instance & _U64)
        w[i + k - 1] = 0
        check = self.MAGIC
        for j, x in enumerate(rec):
            w[i + j] = x
            check ^= x
        w[i + k - 1] = check
        self.next = k - i

    def remove(self):
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self):
        self.words.release()
        self.mm.close()


_U64 = (1 << 64) - 1


def _before(ms, seq):
    """The stream id just before ``ms-seq``: XREAD from it returns ``ms-seq`` first."""
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{_U64}"


class Bridge:
    """Relays local queue ``name`` both ways through a Redis stream.

    ``Bridge(name, url, *, stream=None, size=DEFAULT_SIZE, max_len=None,
    origin=None, stale_after=300.0)``

    ``stream`` defaults to ``name``; ``size`` is used if the local queue must
    be created; ``max_len`` bounds the stream (stored in Redis for every member;
    None keeps what is there).  ``origin`` (default ``host:name``) must be
    unique among the bridges of a stream and the same across restarts: the
    bridge resumes from the position acknowledged under it.  A member silent
    for ``stale_after`` seconds no longer holds the stream back.

    ``run()`` relays until ``stop()`` (from another thread or a signal
    handler); ``start()`` runs it in a daemon thread.  Usable as a context
    manager (``with Bridge(...).start(): ...``).
    """

    def __init__(
        self,
        name,
        url,
        *,
        stream=None,
        size=DEFAULT_SIZE,
        max_len=None,
        origin=None,
        stale_after=STALE_AFTER,
        beat=0.25,
        log_every=60.0,
    ):
        self.name = name
        self.url = url
        self.stream = stream or name
        self.size = size
        self.max_len = max_len
        self.origin = origin or default_origin(name)
        self.stale_after = float(stale_after)
        self.beat = beat
        self.log_every = log_every
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None, not {max_len}")
        if not self.stale_after > 0:
            raise ValueError(f"stale_after must be > 0 seconds, not {stale_after}")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"Redis URL must start with redis://, rediss:// or unix://: {redact(url)}"
            )
        self._keys = meta_keys(self.stream)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = None
        self._error = None
        self._down_since = None
        self._down_lock = threading.Lock()
        self._out = self._in = self._trimmed = self._dropped = 0
        self._pending = 0
        self._lag = 0.0
        self._len = 0
        self._pos = None
        self._acked = None
        self._hold = None  # local position the outbound side must not commit past
        self._hold_lock = threading.Lock()
        self._next_locked_log = 0.0

    def __reduce__(self):
        # Its threads and events stay behind: a Bridge handed to a spawned
        # process arrives as new, ready to run() there.
        kw = dict(stream=self.stream, size=self.size, max_len=self.max_len, origin=self.origin)
        kw.update(stale_after=self.stale_after, beat=self.beat, log_every=self.log_every)
        return (_new_bridge, (self.name, self.url, kw))

    # -- Life cycle ----------------------------------------------------------

    def start(self, timeout=30.0):
        """Run in a daemon thread; return once relaying has begun."""
        self._thread = threading.Thread(target=self._run_caught, name=f"bridge-{self.name}")
        self._thread.daemon = True
        self._thread.start()
        if not self._ready.wait(timeout) and self._error is None:
            self.stop()
            raise TimeoutError(f"bridge for queue {self.name!r} did not start in {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def _run_caught(self):
        try:
            self.run()
        except BaseException as e:  # noqa: BLE001 - reported to start()/stop()
            self._error = e
            self._ready.set()

    def stop(self, timeout=10.0):
        """Ask ``run()`` to finish; wait for a ``start()``-ed thread to end."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"bridge for queue {self.name!r} did not stop in {timeout} s")
            if self._error is not None and not isinstance(self._error, KeyboardInterrupt):
                raise self._error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stats(self):
        return BridgeStats(
            relayed_out=self._out,
            relayed_in=self._in,
            lag_s=self._lag,
            pending_out=self._pending,
            stream_len=self._len,
            trimmed=self._trimmed,
            dropped_too_large=self._dropped,
            connected=self._down_since is None,
        )

    def run(self):
        """Relay until :meth:`stop` is called."""
        log.info(
            "bridge %s: connecting queue %r to stream %r on %s",
            self.origin,
            self.name,
            self.stream,
            redact(self.url),
        )
        q = self._q = self._attach()
        self._posfile = self._client = None
        try:
            # Durable: if this process is killed, its slot stays (pinning what
            # it has not sent) for the bridge started next under this origin.
            q.open(f"bridge:{self.origin}", filtself=False, durable=True)
            self._append_raw = q._append_raw
            self._instance = q._seg.instance & _U64
            self._register()
            if self._pos is None:
                return  # stopped before Redis could be reached
            threads = [
                threading.Thread(target=self._guard, args=(self._inbound,), daemon=True),
                threading.Thread(target=self._guard, args=(self._outbound,), daemon=True),
            ]
            for t in threads:
                t.start()
            self._ready.set()
            self._housekeeping()
            for t in threads:
                t.join()
            self._beat_once()  # the final ack, if Redis is there
        finally:
            self._stop.set()
            self._ready.set()
            q.close()
            if self._client is not None:
                self._client.close()
            if self._posfile is not None:
                if self._acked == self._pos:
                    self._posfile.remove()  # Redis has it all
                else:
                    self._posfile.close()
            log.info("bridge %s stopped: %d relayed out, %d in", self.origin, self._out, self._in)
        if self._error is not None:
            raise self._error

    def leave(self):
        """Remove for good a bridge that is gone (killed, not to be started
        again): free its durable slot, which pins the local queue ``name``
        (what it had not sent is dropped), its position file, and its
        position in Redis (if reachable).  Raises ``RuntimeError`` if Redis
        heard of it within the last few seconds: it may still run."""
        client = connect(self.url)
        try:
            last = client.hget(self._keys[2], self.origin)
            now = client.time()
            if last is not None and now[0] * 1000 + now[1] // 1000 - int(last) < 5000:
                raise RuntimeError(f"bridge {self.origin} was heard of just now: stop it first")
            pipe = client.pipeline(transaction=False)
            for key in self._keys[1:4]:
                pipe.hdel(key, self.origin)
            pipe.execute()
        except CONNECTION_ERRORS as e:
            log.warning(
                "bridge %s: Redis unreachable (%s); its position stays there", self.origin, e
            )
        finally:
            client.close()
        try:
            q = PySyncQ(self.name, create=False)
        except FileNotFoundError:
            pass
        else:
            with q:
                q.open(f"bridge:{self.origin}", filtself=False, durable=True)  # takes it over
        _PosFile(self._posfile_path()).remove()
        log.info(
            "bridge %s: removed from queue %r and stream %r", self.origin, self.name, self.stream
        )

    def _posfile_path(self):
        key = "\0".join((self.name, self.stream, self.origin, redact(self.url)))
        return f"/dev/shm/pysyncq-bridge-{hashlib.sha1(key.encode()).hexdigest()[:20]}"

    def _attach(self):
        for _ in range(3):
            try:
                return PySyncQ(self.name, create=False)
            except FileNotFoundError:
                pass
            try:
                return PySyncQ(self.name, create=True, size=self.size)
            except QueueExists:
                pass  # created by someone else meanwhile
        return PySyncQ(self.name, create=False)

    def _guard(self, loop):
        try:
            loop()
        except BaseException as e:  # noqa: BLE001 - stop the whole bridge, report it
            log.exception("bridge %s: %s side failed", self.origin, loop.__name__[1:])
            self._error = e
            self._stop.set()

    # -- Redis connections ------------------------------------------------------

    def _retrying(self, what, fn, *args, **kw):
        """``fn(*args, **kw)``, retried with backoff while Redis is unreachable.

        Returns None if the bridge is stopped meanwhile.
        """
        pause = 0.05
        while True:
            try:
                result = fn(*args, **kw)
            except FATAL_ERRORS:
                raise  # a wrong password will not get right by retrying
            except CONNECTION_ERRORS as e:
                with self._down_lock:
                    if self._down_since is None:
                        self._down_since = time.monotonic()
                        log.warning(
                            "bridge %s: connection to %s lost (%s: %s); retrying with backoff",
                            self.origin,
                            redact(self.url),
                            type(e).__name__,
                            e,
                        )
                if self._stop.wait(pause):
                    return None
                pause = min(pause * 2, 2.0)
                continue
            if self._down_since is not None:
                with self._down_lock:
                    if self._down_since is not None:
                        log.info(
                            "bridge %s: connection to %s regained after %.1f s (%s)",
                            self.origin,
                            redact(self.url),
                            time.monotonic() - self._down_since,
                            what,
                        )
                        self._down_since = None
            return result

    def _register(self):
        self._client = connect(self.url)
        self._scripts = Scripts(self._client)
        maxlen = -1 if self.max_len is None else self.max_len
        got = self._retrying(
            "register", self._scripts.register, keys=self._keys, args=[self.origin, maxlen, 1]
        )
        if got is None:
            return
        ack, _, beat, now = (x.decode() for x in got)
        self._pos = self._acked = ack
        self._posfile = _PosFile(self._posfile_path())
        local = self._resume_at() if beat else None
        if local is not None and id_tuple(local) > id_tuple(ack):
            self._pos = local
            log.info(
                "bridge %s: entries up to %s were appended locally before the last stop; "
                "acknowledged only up to %s",
                self.origin,
                self._pos,
                ack,
            )
        self._posfile.write(*id_tuple(self._pos))
        ack = self._pos
        how = "resuming after" if beat else "new member: starting at the end,"
        log.info(
            "bridge %s: relaying; %s %s (max_len=%s, stale_after=%g s)",
            self.origin,
            how,
            ack,
            self.max_len,
            self.stale_after,
        )
        if beat:
            gone = (int(now) - int(beat)) / 1000
            if gone > self.stale_after:
                log.warning(
                    "bridge %s was gone %.0f s, longer than stale_after (%g s): the stream was "
                    "not held for it meanwhile, and entries trimmed then never reach this host",
                    self.origin,
                    gone,
                    self.stale_after,
                )
            elif gone < 2 * self.beat + 1:
                log.warning(
                    "bridge %s was heard of %.1f s ago: if another bridge runs under the same "
                    "id, stop one (each needs its own --id)",
                    self.origin,
                    gone,
                )

    def _resume_at(self):
        """The stream id after which the inbound side goes on, by the position
        file (None if there is none): the last entry appended locally.  If the
        last stop came in the middle of an append, the local queue tells
        whether it took place."""
        got = self._posfile.read()
        if got is None:
            return None
        ms, seq, wpos, instance = got
        if wpos is None:
            return f"{ms}-{seq}"
        if instance == self._instance and self._appended_since(wpos):
            log.info(
                "bridge %s: entry %d-%d was appended before the last stop", self.origin, ms, seq
            )
            return f"{ms}-{seq}"
        return _before(ms, seq)

    def _appended_since(self, wpos, patience=10.0):
        """Whether this bridge's slot (the one that it took over) wrote a record
        at local position ``wpos`` or after it."""
        q = self._q
        words = q._seg.words
        if wpos < self._cursor() or wpos % 8:
            # Passed: the outbound side passes wpos only once that try has
            # failed (or this is a new slot, not the one that tried).
            return False
        start = wpos
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                records, start = self._read(BATCH, start, 0.1)
            except _wait.LockBusy:
                continue
            if any(r[5] for r in records):
                return True
            if not records and start >= int(words[H_WRITE_POS]) and start >= self._cursor():
                return False
        log.warning(
            "bridge %s: could not tell whether the last entry was appended locally before the "
            "last stop (the local queue stays busy); it may be appended twice",
            self.origin,
        )
        return False

    # -- Housekeeping: beat, ack, trim, lag, logs ---------------------------------

    def _housekeeping(self):
        next_log = time.monotonic() + self.log_every
        next_lag = 0.0
        while not self._stop.wait(self.beat):
            self._beat_once()
            now = time.monotonic()
            if self._lag > LAG_WARN and now >= next_lag:
                next_lag = now + self.log_every
                log.warning(
                    "bridge %s: inbound lags %.1f s behind the stream (a slow local reader, "
                    "or a full local queue)",
                    self.origin,
                    self._lag,
                )
            if now >= next_log:
                next_log = now + self.log_every
                log.info(
                    "bridge %s: %d relayed out, %d in; lag %.2f s; stream length %d",
                    self.origin,
                    self._out,
                    self._in,
                    self._lag,
                    self._len,
                )

    def _beat_once(self):
        ack = self._pos
        try:
            got = self._scripts.beat(
                keys=self._keys,
                # Always the ack: Redis may have restarted without its data.
                args=[self.origin, int(self.stale_after * 1000), ack],
            )
        except CONNECTION_ERRORS:
            return  # the relaying threads report and retry
        self._acked = ack
        prev, trimmed, low, length, last, now = got
        if prev and int(now) - int(prev) > self.stale_after * 1000:
            log.warning(
                "bridge %s was not heard of for %.0f s, longer than stale_after (%g s): the "
                "stream was not held for it meanwhile",
                self.origin,
                (int(now) - int(prev)) / 1000,
                self.stale_after,
            )
        if trimmed:
            self._trimmed += trimmed
            log.debug("bridge %s: trimmed %d entries up to %s", self.origin, trimmed, low.decode())
        self._len = length
        last, pos = id_tuple(last), id_tuple(ack)
        self._lag = max(0.0, (last[0] - pos[0]) / 1000) if last > pos else 0.0

    def _locked(self, e):
        """A live process holds the local queue's lock for long: wait, and say so."""
        now = time.monotonic()
        if now >= self._next_locked_log:
            self._next_locked_log = now + 10.0
            log.warning("bridge %s: local queue %r: %s; waiting", self.origin, self.name, e)
        self._stop.wait(0.1)

    # -- Outbound: local queue -> stream -------------------------------------------

    def _outbound(self):
        # Read ahead (records stay in the local queue, pinned by this durable
        # member), add to the stream, and only then pass locally what Redis
        # has taken.  A record's sequence number is its local position (with
        # the queue's instance id as epoch), so whatever a killed bridge had
        # sent, its successor sends again from its slot's cursor and Redis
        # drops the repeats atomically: nothing lost, nothing twice.
        epoch = f"{self._instance:x}:"
        pending = []  # [(position, [seq, sender, type, kind, body])] not yet in the stream
        ahead = None  # where to read ahead from next (None: the cursor)
        committed = None
        nbytes = 0
        avg = 1024
        full = False
        # Read ahead no more than a bounded stream has room for (as of the
        # last add; one at first), so that local writers meet a full queue,
        # not a bridge that reads on into memory.
        limit = 1
        head = [self.origin, int(self.stale_after * 1000), -1]
        while not self._stop.is_set():
            while len(pending) < limit and nbytes < BATCH_BYTES:
                want = min(limit - len(pending), max(1, (BATCH_BYTES - nbytes) // avg))
                try:
                    records, ahead = self._read(want, ahead, 0.0 if pending else 0.05)
                except (QueueLocked, _wait.LockBusy) as e:
                    self._locked(e)
                    break
                if not records:
                    break
                size = 0
                for pos, s, t, b, kind, own in records:
                    if own:
                        continue  # put there by the inbound side
                    b = bytes(b)
                    size += len(b)
                    pending.append((pos, (epoch + str(pos), bytes(s), bytes(t), kind, b)))
                nbytes += size
                avg = max(64, size // len(records))
            if pending:
                # The inbound position goes along: whether this bridge is the
                # one holding the stream back must be judged on its latest ack.
                # While the stream is full, probe with the first message alone
                # rather than send the whole batch every few milliseconds.
                batch = pending[:1] if full else pending
                args = head + [self._pos, 1, len(batch)]
                for _, item in batch:
                    args.extend(item)
                got = self._retrying("add", self._scripts.add, keys=self._keys, args=args)
                if got is None:
                    break
                done, room = got
                limit = BATCH if room < 0 else max(1, min(BATCH, room))
                self._out += done
                full = done < len(batch)
                if done:
                    del pending[:done]
                    nbytes = sum(len(p[1][4]) for p in pending)
                self._pending = len(pending)
            # Pass locally what the stream has (and the bridge's own records).
            target = pending[0][0] if pending else ahead
            if target is not None and target != committed:
                committed = self._commit(target)
            if full and self._stop.wait(0.01):
                break
        if pending:
            log.warning(
                "bridge %s stopped with %d local messages not yet in the full stream: they are "
                "not relayed",
                self.origin,
                len(pending),
            )

    def _cursor(self):
        q = self._q
        return int(q._seg.words[kernels.slot_word(q._m.slot, S_CURSOR)])

    def _read(self, n, ahead, wait):
        """``_read_ahead`` from ``ahead`` (None: the cursor), waiting up to
        ``wait`` seconds for data.

        A writer that pads the end of the ring moves a cursor that is at the
        write position past the padding, so a position read from the cursor
        (or an ``ahead`` equal to it) goes out of date when the cursor is at
        the write position, and ``_read_ahead`` from it would fail.  So read
        only when the cursor is below the write position (read first): then
        only this bridge moves it.
        """
        q = self._q
        words = q._seg.words
        seq = int(words[H_DATA_SEQ]) & 0xFFFFFFFF
        end = int(words[H_WRITE_POS])
        cursor = self._cursor()
        start = cursor if ahead is None or ahead < cursor else ahead
        records, nxt = [], start
        if start < end:
            records, nxt = q._read_ahead(n, start, block=False)
        if not records and wait > 0:
            q._sleep(q._m, W_DATA, H_DATA_SEQ, seq, wait)
        return records, nxt

    def _commit(self, target):
        """Pass local records before ``target``, but none after a position
        where the inbound side has an append under way (see ``_PosFile``).
        Returns where the cursor is now."""
        while True:
            with self._hold_lock:
                if self._hold is not None:
                    target = min(target, self._hold)
                at = self._cursor()
                if target <= at:
                    return at  # (and padding may move a cursor at the end: leave it)
                try:
                    self._q._commit_to(target)
                    return target
                except QueueLocked as e:
                    err = e
            self._locked(err)
            if self._stop.is_set():
                return None

    # -- Inbound: stream -> local queue --------------------------------------------

    def _inbound(self):
        count = 32  # grows to BATCH while entries are small
        write = self._posfile.write
        origin = self.origin.encode()
        while not self._stop.is_set():
            got = self._retrying(
                "read",
                self._client.xread,
                {self.stream: self._pos},
                count=count,
                block=100,
            )
            if not got:
                continue
            entries = got[0][1]
            size = 0
            for sid, f in entries:
                ms, seq = id_tuple(sid)
                if f.get(b"o") != origin:
                    b = f.get(b"b", b"")
                    size += len(b)
                    if not self._deliver(sid, ms, seq, f.get(b"s", b""), f.get(b"t", b""), b, f):
                        return
                    self._in += 1
                write(ms, seq)
                self._hold = None
                self._pos = sid.decode()
            # Fewer entries per read when they are large.
            avg = size // max(1, len(entries))
            count = max(1, min(BATCH, 2 * count, BATCH_BYTES // max(1, avg)))

    def _deliver(self, sid, ms, seq, s, t, b, f):
        """Append one entry locally, waiting while the queue is full.

        Before each try the position file records that the append of ``sid``
        begins at the local queue's write position, which the outbound side
        then does not pass until the try has failed or the caller has recorded
        the success: a restarted bridge can look there for the record.  The
        tries are short, so that the outbound side is not held up for long.
        Returns False if the bridge was stopped first.
        """
        kind = int(f.get(b"k", b"2"))
        words = self._q._seg.words
        while True:
            with self._hold_lock:
                self._hold = wpos = int(words[H_WRITE_POS])
            self._posfile.write(ms, seq, wpos, self._instance)
            try:
                self._append_raw(s, t, b, kind, block=True, timer=0.02)
                return True
            except (QueueFull, QueueLocked) as e:
                self._hold = None  # not appended: the outbound side may pass wpos
                if self._stop.is_set():
                    return False
                if isinstance(e, QueueLocked):
                    self._locked(e)
            except MessageTooLarge as e:
                self._dropped += 1
                log.error(
                    "bridge %s: entry %s (sender %r, type %r) can never fit in queue %r; "
                    "skipped: %s",
                    self.origin,
                    sid.decode(),
                    s,
                    t,
                    self.name,
                    e,
                )
                return True
            except QueueClosed:
                raise


def _new_bridge(name, url, kw):
    return Bridge(name, url, **kw)


# -- Command line --------------------------------------------------------------------


def main(args):
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        bridge = Bridge(
            args.name,
            args.url,
            stream=args.stream,
            size=args.size,
            max_len=args.max_len,
            origin=args.origin,
            stale_after=args.stale_after,
        )
    except (TypeError, ValueError) as e:
        log.error("bridge: %s", scrub(str(e), args.url))
        return 2
    if getattr(args, "leave", False):
        try:
            bridge.leave()
        except RuntimeError as e:
            log.error("bridge: %s", e)
            return 1
        log.info("bridge %s: removed", bridge.origin)
        return 0

    def on_signal(signum, frame):
        bridge._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        bridge.run()
    except Exception as e:  # noqa: BLE001 - one line, no traceback, for the user
        log.error("bridge %s failed: %s", bridge.origin, scrub(str(e), args.url))
        return 1
    return 0
