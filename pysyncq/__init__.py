"""pysyncq: a broadcast message queue in shared memory for Python multiprocessing.

Every process that opens a queue writes to it and reads every message the
others write, each at its own pace; a message's bytes are freed once every
reader has passed it.  See ``README.md`` for a tour.
"""

from .errors import (
    MessageTooLarge,
    NotAQueue,
    NotOpened,
    PySyncQError,
    QueueClosed,
    QueueExists,
    QueueFull,
    TooManyProcesses,
)
from .queue import (
    DEFAULT_SIZE,
    DEFAULT_SLOTS,
    PySyncQ,
    QueueStats,
    ReaderStats,
    list_queues,
    remove,
)
from .screen import ScreenSet

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SIZE",
    "DEFAULT_SLOTS",
    "MessageTooLarge",
    "NotAQueue",
    "NotOpened",
    "PySyncQ",
    "PySyncQError",
    "QueueClosed",
    "QueueExists",
    "QueueFull",
    "QueueStats",
    "ReaderStats",
    "ScreenSet",
    "TooManyProcesses",
    "list_queues",
    "remove",
]
