"""Snapshots of a queue: frozen value objects, never raw header words.

``snapshot`` reads a segment without taking its lock and without trusting it:
on a corrupt segment it still answers (the odd figures are the corruption's),
so that ``stats()`` and the command line can show what is there.
"""

from dataclasses import dataclass

from . import _proc, kernels
from .layout import (
    H_APPENDS,
    H_REAPED,
    H_RECOVERIES,
    H_WRITE_POS,
    S_BASE,
    S_CURSOR,
    S_NAME,
    S_NAME_LEN,
    S_RECEIVED,
    S_SCREENED,
    S_SENT,
    S_WAIT,
    SLOT_NAME_BYTES,
    W_ASYNC,
    W_DATA,
    W_SPACE,
    appends_count,
)

_WAIT_NAMES = ((W_DATA, "data"), (W_SPACE, "space"), (W_ASYNC, "async"))


@dataclass(frozen=True)
class ReaderStats:
    """One open slot of a queue, as seen at one moment."""

    slot: int
    pid: int
    reader: bool  #: holds a read cursor (False for ``open(reader=False)``)
    lag: int  #: bytes appended that this reader has not passed yet
    sent: int
    received: int
    screened: int  #: messages passed unread: screened out, or discarded by their writer
    name: str = ""  #: the sender name given to ``open()`` (bytes if not UTF-8)
    lag_messages: int = 0  #: messages appended that this reader has not passed yet
    alive: bool = True  #: False once its process has ended (until it is reaped)
    #: what it sleeps on: "data", "space", "data+space" or "", with "+async"
    #: when it waits in an asyncio loop (``apop``, ``aappend``)
    waiting: str = ""


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of a queue, read without taking its lock."""

    name: str
    capacity: int  #: usable bytes of the ring
    used: int  #: bytes held by records some reader has not passed
    free: int
    #: messages appended since creation; a loan or a large message counts from
    #: when its space is reserved, and still counts if it is discarded then
    appended: int
    recoveries: int  #: locks taken over from a dead holder
    reaped: int  #: slots freed because their process had died
    members: tuple  #: ``ReaderStats`` of every open slot
    held: int = 0  #: messages some reader has not passed yet


def slot_name_matches(seg, slot, name):
    """Whether ``slot`` holds sender ``name`` (bytes): its length and its
    first ``SLOT_NAME_BYTES`` bytes, which is all a slot keeps of it."""
    words = seg.words
    if int(words[kernels.slot_word(slot, S_NAME_LEN)]) != len(name):
        return False
    at = kernels.slot_word(slot, S_NAME) * 8
    n = min(len(name), SLOT_NAME_BYTES)
    return bytes(seg.mem[at : at + n]) == name[:n]


def _slot_name(seg, slot, words):
    length = int(words[kernels.slot_word(slot, S_NAME_LEN)])
    at = kernels.slot_word(slot, S_NAME) * 8
    raw = bytes(seg.mem[at : at + max(0, min(length, SLOT_NAME_BYTES))])
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        return raw
    return name + "..." if length > SLOT_NAME_BYTES else name


#: Tries of ``snapshot`` to read the slots while no record is appended.
_SNAPSHOT_TRIES = 4


def _read_words(seg):
    """One look at the words a snapshot derives from: ``(end, appended,
    rows)``, ``rows`` a ``(slot, token, is_reader, cursor, passed, wait)``
    per open slot, in an order that keeps every figure derived from them in
    range, whatever the members do meanwhile.

    Every slot's cursor and passed count (base + received + screened) is
    read before the write position and the append count, and each of those
    only grows: so a cursor is never past the write position read after it
    (lag >= 0), and a reader never passed more messages than were counted
    after it (lag_messages >= 0; appends are counted before they are
    published, see ``kernels.write``).  Read the other way round (the write
    position first), a reader that popped meanwhile showed a negative lag
    and ``used`` came out too small."""
    w = seg.words
    rows = []
    for slot, token, is_reader in kernels.members(seg.mem):
        if slot < 0:
            continue
        slot = int(slot)
        at = kernels.slot_word(slot, 0)
        cursor = int(w[at + S_CURSOR])
        passed = int(w[at + S_BASE]) + int(w[at + S_RECEIVED]) + int(w[at + S_SCREENED])
        rows.append((slot, int(token), bool(is_reader), cursor, passed, int(w[at + S_WAIT])))
    appended = appends_count(int(w[H_APPENDS]))
    end = int(w[H_WRITE_POS])
    return end, appended, rows


def snapshot(seg, name):
    """A :class:`QueueStats` of segment ``seg`` (a ``_segment.Segment``).

    Read without the lock, so not one instant: the slots are read first,
    the write position and append count after them (``_read_words``), and
    the read is tried again (a few times) if a record was appended
    meanwhile.  A snapshot that settles is exact for the write position; on
    a queue appended to without pause, each reader's lag is measured from
    its cursor to a later write position: never negative, and capped at the
    capacity (the bytes appended during the look are counted as lag; a
    negative lag is a corrupt cursor's)."""
    w = seg.words
    for _ in range(_SNAPSHOT_TRIES):
        before = int(w[H_WRITE_POS])
        end, appended, rows = _read_words(seg)
        if end == before:
            break
    cap = seg.capacity
    readers = []
    for slot, token, is_reader, cursor, passed, wait in rows:

        def word(field, slot=slot):
            return int(w[kernels.slot_word(slot, field)])

        readers.append(
            ReaderStats(
                slot=slot,
                pid=_proc.token_pid(token),
                reader=is_reader,
                lag=min(end - cursor, cap) if is_reader else 0,
                sent=word(S_SENT),
                received=word(S_RECEIVED),
                screened=word(S_SCREENED),
                name=_slot_name(seg, slot, w),
                lag_messages=max(0, appended - passed) if is_reader else 0,
                alive=_proc.is_alive(token),
                waiting="+".join(n for b, n in _WAIT_NAMES if wait & b),
            )
        )
    lagging = [r for r in readers if r.reader]
    used = max([0] + [r.lag for r in lagging])
    return QueueStats(
        name=name,
        capacity=cap,
        used=used,
        free=cap - used,
        appended=appended,
        recoveries=int(w[H_RECOVERIES]),
        reaped=int(w[H_REAPED]),
        members=tuple(readers),
        held=max([0] + [r.lag_messages for r in lagging]),
    )
