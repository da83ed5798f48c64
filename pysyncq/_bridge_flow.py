"""The two directions of a bridge (:mod:`pysyncq.bridge`), over its Relay.

* **Outbound** (local queue -> stream): read ahead of the bridge's durable
  cursor without passing the records, add them to the stream (Redis drops
  repeats by sequence number), and only then pass them locally.
* **Inbound** (stream -> local queue): append each entry of another origin in
  the name of its original sender, recording around every append in the
  position file where the inbound side is, so that a bridge killed mid-way
  neither loses nor doubles an entry.

The functions take the :class:`~pysyncq.bridge.Bridge` (``br``) and run in
its two threads.
"""

import logging
import time

from ._redisq import id_tuple
from .errors import MessageTooLarge, QueueClosed, QueueFull, QueueLocked

log = logging.getLogger("pysyncq.bridge")

#: Most messages (and bytes) relayed per Redis round trip.
BATCH = 256
BATCH_BYTES = 4 << 20


def appended_since(br, wpos, patience=10.0):
    """Whether this bridge's slot (the one that it took over) wrote a record
    at local position ``wpos`` or after it."""
    relay = br._relay
    if wpos < cursor(br) or wpos % 8:
        # Passed: the outbound side passes wpos only once that try has
        # failed (or this is a new slot, not the one that tried).
        return False
    start = wpos
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            records, start = read(br, BATCH, start, 0.1)
        except QueueLocked:
            continue
        if any(r[5] for r in records):
            return True
        if not records and start >= relay.write_pos() and start >= cursor(br):
            return False
    log.warning(
        "bridge %s: could not tell whether the last entry was appended locally before the "
        "last stop (the local queue stays busy); it may be appended twice",
        br.origin,
    )
    return False


def outbound(br):
    # Read ahead (records stay in the local queue, pinned by this durable
    # member), add to the stream, and only then pass locally what Redis
    # has taken.  A record's sequence number is its local position (with
    # the queue's instance id as epoch), so whatever a killed bridge had
    # sent, its successor sends again from its slot's cursor and Redis
    # drops the repeats atomically: nothing lost, nothing twice.
    epoch = f"{br._instance:x}:"
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
    head = [br.origin, int(br.stale_after * 1000), -1]
    while not br._stop.is_set():
        while len(pending) < limit and nbytes < BATCH_BYTES:
            want = min(limit - len(pending), max(1, (BATCH_BYTES - nbytes) // avg))
            try:
                records, ahead = read(br, want, ahead, 0.0 if pending else 0.05)
            except QueueLocked as e:
                br._locked(e)
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
            args = head + [br._pos, 1, len(batch)]
            for _, item in batch:
                args.extend(item)
            got = br._retrying("add", br._scripts.add, keys=br._keys, args=args)
            if got is None:
                break
            done, room = got
            limit = BATCH if room < 0 else max(1, min(BATCH, room))
            br._out += done
            full = done < len(batch)
            if done:
                del pending[:done]
                nbytes = sum(len(p[1][4]) for p in pending)
            br._pending = len(pending)
        # Pass locally what the stream has (and the bridge's own records).
        target = pending[0][0] if pending else ahead
        if target is not None and target != committed:
            committed = commit(br, target)
        if full and br._stop.wait(0.01):
            break
    if pending:
        log.warning(
            "bridge %s stopped with %d local messages not yet in the full stream: they are "
            "not relayed",
            br.origin,
            len(pending),
        )


def cursor(br):
    return br._relay.cursor()


def read(br, n, ahead, wait):
    """``_read_ahead`` from ``ahead`` (None: the cursor), waiting up to
    ``wait`` seconds for data.

    A writer that pads the end of the ring moves a cursor that is at the
    write position past the padding, so a position read from the cursor
    (or an ``ahead`` equal to it) goes out of date when the cursor is at
    the write position, and ``_read_ahead`` from it would fail.  So read
    only when the cursor is below the write position (read first): then
    only this bridge moves it.
    """
    relay = br._relay
    seq = relay.data_seq()
    end = relay.write_pos()
    cursor = relay.cursor()
    start = cursor if ahead is None or ahead < cursor else ahead
    records, nxt = [], start
    if start < end:
        records, nxt = relay.read_ahead(n, start)
    if not records and wait > 0:
        relay.sleep_for_data(seq, wait)
    return records, nxt


def commit(br, target):
    """Pass local records before ``target``, but none after a position
    where the inbound side has an append under way (see ``_posfile.PosFile``).
    Returns where the cursor is now."""
    while True:
        with br._hold_lock:
            if br._hold is not None:
                target = min(target, br._hold)
            at = cursor(br)
            if target <= at:
                return at  # (and padding may move a cursor at the end: leave it)
            try:
                br._relay.commit_to(target)
                return target
            except QueueLocked as e:
                err = e
        br._locked(err)
        if br._stop.is_set():
            return None


def inbound(br):
    count = 32  # grows to BATCH while entries are small
    write = br._posfile.write
    origin = br.origin.encode()
    while not br._stop.is_set():
        got = br._retrying(
            "read",
            br._client.xread,
            {br.stream: br._pos},
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
                if not deliver(br, sid, ms, seq, f.get(b"s", b""), f.get(b"t", b""), b, f):
                    return
                br._in += 1
            write(ms, seq)
            br._hold = None
            br._pos = sid.decode()
        # Fewer entries per read when they are large.
        avg = size // max(1, len(entries))
        count = max(1, min(BATCH, 2 * count, BATCH_BYTES // max(1, avg)))


def deliver(br, sid, ms, seq, s, t, b, f):
    """Append one entry locally, waiting while the queue is full.

    Before each try the position file records that the append of ``sid``
    begins at the local queue's write position, which the outbound side
    then does not pass until the try has failed or the caller has recorded
    the success: a restarted bridge can look there for the record.  The
    tries are short, so that the outbound side is not held up for long.
    Returns False if the bridge was stopped first.
    """
    kind = int(f.get(b"k", b"2"))
    relay = br._relay
    while True:
        with br._hold_lock:
            br._hold = wpos = relay.write_pos()
        br._posfile.write(ms, seq, wpos, br._instance)
        try:
            br._append_raw(s, t, b, kind, block=True, timer=0.02)
            return True
        except (QueueFull, QueueLocked) as e:
            br._hold = None  # not appended: the outbound side may pass wpos
            if br._stop.is_set():
                return False
            if isinstance(e, QueueLocked):
                br._locked(e)
        except MessageTooLarge as e:
            br._dropped += 1
            log.error(
                "bridge %s: entry %s (sender %r, type %r) can never fit in queue %r; skipped: %s",
                br.origin,
                sid.decode(),
                s,
                t,
                br.name,
                e,
            )
            return True
        except QueueClosed:
            raise
