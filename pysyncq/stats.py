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
    screened: int
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
    appended: int  #: messages appended since creation
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


def snapshot(seg, name):
    """A :class:`QueueStats` of segment ``seg`` (a ``_segment.Segment``)."""
    w = seg.words
    end = int(w[H_WRITE_POS])
    appended = int(w[H_APPENDS])
    readers = []
    for slot, token, is_reader in kernels.members(seg.mem):
        if slot < 0:
            continue
        slot = int(slot)

        def word(field, slot=slot):
            return int(w[kernels.slot_word(slot, field)])

        wait = word(S_WAIT)
        passed = word(S_BASE) + word(S_RECEIVED) + word(S_SCREENED)
        readers.append(
            ReaderStats(
                slot=slot,
                pid=_proc.token_pid(int(token)),
                reader=bool(is_reader),
                lag=end - word(S_CURSOR) if is_reader else 0,
                sent=word(S_SENT),
                received=word(S_RECEIVED),
                screened=word(S_SCREENED),
                name=_slot_name(seg, slot, w),
                lag_messages=max(0, appended - passed) if is_reader else 0,
                alive=_proc.is_alive(int(token)),
                waiting="+".join(n for b, n in _WAIT_NAMES if wait & b),
            )
        )
    lagging = [r for r in readers if r.reader]
    used = max(0, max([0] + [r.lag for r in lagging]))
    return QueueStats(
        name=name,
        capacity=seg.capacity,
        used=used,
        free=seg.capacity - used,
        appended=appended,
        recoveries=int(w[H_RECOVERIES]),
        reaped=int(w[H_REAPED]),
        members=tuple(readers),
        held=max([0] + [r.lag_messages for r in lagging]),
    )
