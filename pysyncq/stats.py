"""Snapshots of a queue: frozen value objects, never raw header words."""

from dataclasses import dataclass


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
