"""A pysyncq queue carried by a Redis stream: the shared Redis side, and
:class:`RedisQueue`, a handle with no shared memory.

The stream
----------
One stream ``KEY`` carries the messages of every host.  Each entry has the
fields ``o`` (origin: the bridge or handle that added it), ``n`` (that origin's
sequence number: 1, 2, ... for a handle; ``EPOCH:POSITION`` for a bridge, the
local queue's instance id and the record's position in it), ``s`` (sender),
``t`` (type), ``k`` (kind, see
:mod:`pysyncq.layout`) and ``b`` (body).  Beside it, four hashes:

``KEY:pysyncq:acks``   origin -> id of the last entry that member has taken in
``KEY:pysyncq:beats``  origin -> when it was last heard of (ms, Redis clock)
``KEY:pysyncq:seqs``   origin -> the last sequence number added to the stream
``KEY:pysyncq:cfg``    ``maxlen``: the bound of the stream (0: unbounded)

Every change that must be atomic is one Lua script (below), so a retried call
after a lost reply, or a restarted bridge sending again what it had sent just
before it was killed, adds nothing twice: an entry whose ``n`` is not above
the origin's recorded ``seqs`` (in the same epoch) is dropped as a duplicate.
Entries are trimmed only below the smallest ack of the members heard of within
``stale_after`` seconds.

Needs Redis >= 6.2 (``XTRIM ... MINID``); redis-py >= 4.5.
"""

import os
import socket
import threading
import time
import weakref
from collections import deque
from urllib.parse import urlsplit, urlunsplit

try:
    import redis
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("pysyncq's Redis support needs redis-py: pip install 'pysyncq[redis]'") from e


from ._args import check_timer as _check_timer
from ._args import msgtype_bytes
from .codec import decode_array, encode_array
from .codec import encode_body as _encode_body
from .codec import message as _message
from .errors import MessageTooLarge, NotOpened, QueueClosed, QueueFull
from .layout import KIND_ARRAY, MAX_NAME_BYTES
from .screen import Screened, ScreenSet, as_bytes

#: Redis refuses a bulk string over 512 MiB; keep room for the other fields.
MAX_BODY = (512 << 20) - (2 * MAX_NAME_BYTES + 1024)
#: Default seconds after which a silent member no longer pins the stream.
STALE_AFTER = 300.0
#: Errors that mean "Redis cannot be reached now": retry with backoff.
CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
#: ... except these, which retrying will not cure.
FATAL_ERRORS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)

_LUA_COMMON = """
local function pid(id)
  local a, b = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(a), tonumber(b)
end
local function lt(a, b)
  local am, as = pid(a)
  local bm, bs = pid(b)
  return am < bm or (am == bm and as < bs)
end
-- a sequence number: 'N' (epoch '') or 'EPOCH:N'
local function seqof(s)
  local e, n = string.match(s, '^([^:]*):(%d+)$')
  if e then return e, tonumber(n) end
  return '', tonumber(s)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- the smallest ack among the members heard of within stale ms, or false
local function min_ack(now, stale)
  local beats = redis.call('HGETALL', KEYS[3])
  local best = false
  for i = 1, #beats, 2 do
    if now - tonumber(beats[i + 1]) <= stale then
      local a = redis.call('HGET', KEYS[2], beats[i])
      if a and (not best or lt(a, best)) then best = a end
    end
  end
  return best
end
local function trim(now, stale)
  local best = min_ack(now, stale)
  if not best then return 0, best end
  local m, s = pid(best)
  return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', m, s + 1)), best
end
local function last_id()
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then return last[1][1] end
  return '0-0'
end
"""

# KEYS: stream acks beats seqs cfg.  ARGV: origin, stale_ms, maxlen (-1: the
# stream's), ack ('': leave), may_overfill (1 for bridges), n, then n x (seq,
# sender, type, kind, body).  Adds the entries in order, dropping those
# already added (seq <= the origin's last of the same epoch), and stops at
# the first that does not fit a bounded stream; returns {how many were dealt
# with, room left (-1: no bound)}.  A bridge holding the trim back (smallest
# ack) may always add: it is throttled by its own local readers, and refusing
# it could deadlock it (its own cursor would pin the local queue that its
# inbound side must append to).
_LUA_ADD = (
    _LUA_COMMON
    + """
local origin, stale = ARGV[1], tonumber(ARGV[2])
local maxlen = tonumber(ARGV[3])
if maxlen < 0 then maxlen = tonumber(redis.call('HGET', KEYS[5], 'maxlen') or '0') end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], origin, ARGV[4]) end
local n = tonumber(ARGV[6])
local lastraw = redis.call('HGET', KEYS[4], origin) or '0'
local first = lastraw
local epoch, last = seqof(lastraw)
local room = math.huge
if maxlen > 0 then
  local len = redis.call('XLEN', KEYS[1])
  local now = now_ms()
  local best = false
  if len + n > maxlen then
    local _
    _, best = trim(now, stale)
    len = redis.call('XLEN', KEYS[1])
  end
  room = maxlen - len
  if room < n and ARGV[5] == '1' then
    local mine = redis.call('HGET', KEYS[2], origin)
    if mine and best and not lt(best, mine) then room = math.huge end
  end
end
local done = 0
for i = 0, n - 1 do
  local at = 7 + 5 * i
  local e, seq = seqof(ARGV[at])
  -- a new epoch (a bridge's local queue made anew) starts a new sequence
  if e ~= epoch or seq > last then
    if room <= 0 then break end
    redis.call('XADD', KEYS[1], '*', 'o', origin, 'n', ARGV[at], 's', ARGV[at + 1],
               't', ARGV[at + 2], 'k', ARGV[at + 3], 'b', ARGV[at + 4])
    epoch, last, lastraw = e, seq, ARGV[at]
    room = room - 1
  end
  done = i + 1
end
if lastraw ~= first then redis.call('HSET', KEYS[4], origin, lastraw) end
if room == math.huge then return {done, -1} end
return {done, room}
"""
)

# KEYS as above.  ARGV: origin, maxlen to set (-1: leave), reader (1/0).  A
# member seen for the first time starts at the end of the stream; one that
# does not read holds no ack.  Returns {ack, last seq, previous beat or '', now}.
_LUA_REGISTER = (
    _LUA_COMMON
    + """
local origin = ARGV[1]
local now = now_ms()
local ack = redis.call('HGET', KEYS[2], origin)
local beat = redis.call('HGET', KEYS[3], origin)
if not ack then
  ack = last_id()
  if ARGV[3] == '1' then redis.call('HSET', KEYS[2], origin, ack) end
end
if ARGV[3] == '1' then redis.call('HSET', KEYS[3], origin, now) end
if tonumber(ARGV[2]) >= 0 then redis.call('HSET', KEYS[5], 'maxlen', ARGV[2]) end
return {ack, redis.call('HGET', KEYS[4], origin) or '0', beat or '', tostring(now)}
"""
)

# KEYS as above.  ARGV: origin, stale_ms, ack ('' to leave).  Heartbeat, ack
# and trim.  Returns {previous beat or '', trimmed, min ack or '', length,
# last id, now}.
_LUA_BEAT = (
    _LUA_COMMON
    + """
local origin, stale = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local beat = redis.call('HGET', KEYS[3], origin)
redis.call('HSET', KEYS[3], origin, now)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], origin, ARGV[3]) end
local trimmed, best = trim(now, stale)
return {beat or '', trimmed, best or '', redis.call('XLEN', KEYS[1]), last_id(), tostring(now)}
"""
)


def meta_keys(stream):
    """The keys the scripts take: the stream and its four hashes."""
    base = f"{stream}:pysyncq:"
    return [stream, base + "acks", base + "beats", base + "seqs", base + "cfg"]


def redact(url):
    """``url`` with any password replaced by ``***``: safe to log or print."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable Redis URL>"


def scrub(text, url):
    """``text`` with the password of ``url`` (if any) replaced by ``***``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


def connect(url, block_s=1.0):
    """A redis-py client for ``url`` whose reads outlast a ``block_s`` XREAD."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str such as redis://host:6379/0, not {type(url).__name__}")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"Redis URL must start with redis://, rediss:// or unix://: {redact(url)}")
    return redis.Redis.from_url(
        url, socket_connect_timeout=5.0, socket_timeout=block_s + 10.0, health_check_interval=0
    )


class Scripts:
    """The Lua scripts registered on one client."""

    def __init__(self, client):
        self.add = client.register_script(_LUA_ADD)
        self.register = client.register_script(_LUA_REGISTER)
        self.beat = client.register_script(_LUA_BEAT)


def id_tuple(sid):
    """A stream id (bytes or str) as a comparable ``(ms, seq)``."""
    if isinstance(sid, bytes):
        sid = sid.decode()
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def default_origin(tag):
    return f"{socket.gethostname()}:{tag}"


def decode_message(s, t, b, kind, decode):
    """The tuple ``pop`` returns, as ``PySyncQ.pop`` builds it."""
    return _message(s, t, decode_array(b) if kind == KIND_ARRAY else b, decode)


_live = weakref.WeakSet()


def _forget_after_fork():
    # As with PySyncQ: a forked child is a new process, not a member under the
    # parent's name and position; it may open() the handle afresh.
    for q in list(_live):
        q._origin = None
        q._buf = deque()
        q._lock = threading.RLock()


os.register_at_fork(after_in_child=_forget_after_fork)


class RedisQueue(Screened):
    """A handle on a queue carried by a Redis stream, with no shared memory.

    ``RedisQueue(url, name, *, stream=None, stale_after=300.0)``

    Joins the queue that bridges (``python -m pysyncq bridge NAME URL``) relay
    through the stream ``stream`` (default ``name``) on the Redis server at
    ``url``, with the API of :class:`pysyncq.PySyncQ`: ``open``, ``append``,
    ``pop``, ``scrnsend``/``scrntype``, iteration, ``close``.  Like a local
    reader it sees the messages added after its ``open()`` and pins them in the
    stream until it has popped them, unless it stays silent (no call) for
    ``stale_after`` seconds.  ``append`` raises :class:`QueueFull` while a
    bounded stream (a bridge's ``--max-len``) is full.
    """

    _FETCH = 512

    def __init__(self, url, name, *, stream=None, stale_after=STALE_AFTER):
        if not isinstance(name, str) or not name:
            raise TypeError("name must be a non-empty str")
        self.name = name
        self.stream = stream or name
        self._url = url
        self.stale_after = float(stale_after)
        self._client = connect(url)
        self._scripts = Scripts(self._client)
        self._keys = meta_keys(self.stream)
        self._origin = None
        self._reader = True
        self._sender = None
        self._sender_bytes = None
        self._closed = False
        self._seq = 0
        self._pos = None
        self._acked = None
        self._buf = deque()
        self._next_beat = 0.0
        self._lock = threading.RLock()
        self._scrnsend = ScreenSet()
        self._scrntype = ScreenSet()
        _live.add(self)

    def __reduce__(self):
        return (_rebuild, (self._url, self.name, self.stream, self.stale_after))

    def __repr__(self):
        state = "closed" if self._closed else ("open" if self._origin else "not opened")
        return f"RedisQueue({redact(self._url)!r}, {self.name!r}, {state})"

    # -- Membership ------------------------------------------------------------

    def open(self, sender=None, filtself=True, *, reader=True):
        """Join the queue as ``sender`` (default the process id); return the handle.

        With ``reader=False`` the handle only appends: it holds no position in
        the stream, so it never holds entries back (and cannot ``pop``).
        """
        self._usable()
        if self._origin is not None:
            raise RuntimeError(f"queue {self.name!r} is already open in this handle")
        if sender is None:
            sender = str(os.getpid())
        if not isinstance(sender, (str, bytes)):
            raise TypeError(f"sender must be a str or bytes, not {type(sender).__name__}")
        sb = as_bytes(sender)
        if len(sb) > MAX_NAME_BYTES:
            raise ValueError(f"sender is {len(sb)} bytes long; the limit is {MAX_NAME_BYTES}")
        origin = f"rq:{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        ack, _, _, _ = self._scripts.register(keys=self._keys, args=[origin, -1, int(reader)])
        self._pos = self._acked = ack.decode()
        self._origin = origin
        self._reader = reader
        self._sender, self._sender_bytes = sender, sb
        self._next_beat = time.monotonic() + self._beat_every()
        if filtself:
            self._scrnsend.add(sender)
        return self

    def close(self):
        """Leave the queue: stop pinning the stream.  Closing twice does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            origin, self._origin = self._origin, None
            try:
                if origin is not None:
                    pipe = self._client.pipeline(transaction=False)
                    for key in self._keys[1:4]:
                        pipe.hdel(key, origin)
                    pipe.execute()
            except CONNECTION_ERRORS:
                pass  # it stops pinning after stale_after anyway
            finally:
                self._buf.clear()
                self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if not self._closed and self._origin is not None:
                self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    @property
    def closed(self):
        return self._closed

    @property
    def sender(self):
        return self._sender

    def _usable(self):
        if self._closed:
            raise QueueClosed(f"queue {self.name!r} is closed in this handle; it cannot be used")

    def _member(self):
        self._usable()
        if self._origin is None:
            raise NotOpened(f"call open() on queue {self.name!r} in this process first")

    def _beat_every(self):
        return max(0.05, min(5.0, self.stale_after / 4))

    # -- Messages --------------------------------------------------------------

    def append(self, msgtype="", msg="", block=False, timer=0.5):
        """Append ``(sender, msgtype, msg)`` to the stream, as ``PySyncQ.append``.

        Raises :class:`QueueFull` when a bounded stream stays full (at once, or
        after ``timer`` seconds with ``block=True``), :class:`MessageTooLarge`
        for a body Redis cannot hold.
        """
        self._member()
        timer = _check_timer(timer)
        t = msgtype_bytes(msgtype)
        body, kind = _encode_body(msg)
        self._add(t, body, kind, block, timer)

    def append_array(self, mtype, arr, block=False, timer=0.5):
        """Append a numpy array as an array message, as ``PySyncQ.append_array``."""
        self._member()
        timer = _check_timer(timer)
        t = msgtype_bytes(mtype)
        desc, data = encode_array(arr, len(self._sender_bytes) + len(t))
        self._add(t, desc + data.tobytes(), KIND_ARRAY, block, timer)

    def _add(self, t, body, kind, block, timer):
        if len(body) > MAX_BODY:
            raise MessageTooLarge(
                f"message body of {len(body)} bytes can never fit in a Redis stream entry "
                f"(at most {MAX_BODY})"
            )
        deadline = time.monotonic() + (timer if block else 0.0)
        pause = 0.005
        with self._lock:
            self._member()
            seq = self._seq + 1
            args = [self._origin, int(self.stale_after * 1000), -1, "", 0, 1, seq]
            args += [self._sender_bytes, t, kind, body]
            while True:
                if self._scripts.add(keys=self._keys, args=args)[0]:
                    self._seq = seq
                    return
                now = time.monotonic()
                if now >= deadline:
                    why = f"waited {timer} s" if block else "block=False"
                    raise QueueFull(
                        f"stream {self.stream!r} of queue {self.name!r} is full ({why}): the "
                        f"slowest reader behind a bridge must catch up first"
                    )
                time.sleep(min(pause, deadline - now))
                pause = min(pause * 2, 0.1)

    def pop(self, block=False, timer=0.5, decode=True):
        """The next unread message not screened out, or None; as ``PySyncQ.pop``."""
        self._member()
        if not self._reader:
            raise NotOpened(
                f"queue {self.name!r} was opened with reader=False in this handle: it cannot pop"
            )
        timer = _check_timer(timer)
        deadline = time.monotonic() + timer
        with self._lock:
            while True:
                self._member()
                while self._buf:
                    sid, f = self._buf.popleft()
                    self._pos = sid
                    s, t = f.get(b"s", b""), f.get(b"t", b"")
                    if s in self._scrnsend or t in self._scrntype:
                        continue
                    return decode_message(s, t, f.get(b"b", b""), int(f.get(b"k", 2)), decode)
                wait = None
                if block:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    wait = max(1, int(min(left, 1.0) * 1000))
                self._fetch(wait)
                if not self._buf and not block:
                    return None

    def _fetch(self, block_ms):
        pipe = self._client.pipeline(transaction=False)
        if self._pos != self._acked or time.monotonic() >= self._next_beat:
            self._next_beat = time.monotonic() + self._beat_every()
            self._scripts.beat(
                keys=self._keys,
                args=[self._origin, int(self.stale_after * 1000), self._pos],
                client=pipe,
            )
        pipe.xread({self.stream: self._pos}, count=self._FETCH, block=block_ms)
        *_, got = pipe.execute()
        self._acked = self._pos
        for _, entries in got or ():
            self._buf.extend(entries)

    def __call__(self, block=False, timer=0.5, decode=True):
        """An iterator that pops until :meth:`pop` returns None."""
        self._member()
        _check_timer(timer)
        return self._iterate(block, timer, decode)

    def _iterate(self, block, timer, decode):
        while (m := self.pop(block, timer, decode)) is not None:
            yield m

    def __iter__(self):
        return self()


def _rebuild(url, name, stream, stale_after):
    return RedisQueue(url, name, stream=stream, stale_after=stale_after)
