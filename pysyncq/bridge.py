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
import signal
import threading
import time
from dataclasses import dataclass

from . import _bridge_flow
from ._bridge_flow import BATCH, BATCH_BYTES  # noqa: F401 - the bridge's batch sizes
from ._posfile import U64, PosFile, id_before
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
from ._relay import Relay
from .errors import QueueExists
from .queue import DEFAULT_SIZE, PySyncQ

__all__ = ["Bridge", "BridgeStats", "RedisQueue", "main"]

log = logging.getLogger("pysyncq.bridge")

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
            self._relay = Relay(q)
            self._append_raw = self._relay.append
            self._instance = self._relay.instance & U64
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
        PosFile(self._posfile_path()).remove()
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
        self._posfile = PosFile(self._posfile_path())
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
        return id_before(ms, seq)

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

    # -- The two directions (pysyncq._bridge_flow) ------------------------------------

    _outbound = _bridge_flow.outbound
    _inbound = _bridge_flow.inbound
    _appended_since = _bridge_flow.appended_since
    _cursor = _bridge_flow.cursor


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
