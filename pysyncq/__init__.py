"""pysyncq: a broadcast message queue in shared memory for Python multiprocessing.

Every process that opens a queue writes to it and reads every message the
others write, each at its own pace; a message's bytes are freed once every
reader has passed it.  See ``README.md`` for a tour.
"""

from ._exit import fast_exit
from ._lifecycle import list_queues, remove
from .errors import (
    ChildExited,
    MessageTooLarge,
    NotAQueue,
    NotOpened,
    PySyncQError,
    QueueClosed,
    QueueCorrupt,
    QueueExists,
    QueueFull,
    QueueLocked,
    TooManyProcesses,
)
from .group import Workers
from .queue import (
    DEFAULT_SIZE,
    DEFAULT_SLOTS,
    PySyncQ,
)
from .screen import ScreenSet
from .stats import QueueStats, ReaderStats

__version__ = "0.1.0"

__all__ = [
    "ChildExited",
    "DEFAULT_SIZE",
    "DEFAULT_SLOTS",
    "MessageTooLarge",
    "NotAQueue",
    "NotOpened",
    "PySyncQ",
    "PySyncQError",
    "QueueClosed",
    "QueueCorrupt",
    "QueueExists",
    "QueueFull",
    "QueueLocked",
    "QueueStats",
    "ReaderStats",
    "ScreenSet",
    "TooManyProcesses",
    "Workers",
    "fast_exit",
    "list_queues",
    "remove",
]


def __getattr__(name):
    # RedisQueue needs the optional redis extra: import it only when asked for.
    if name == "RedisQueue":
        from ._redisq import RedisQueue

        return RedisQueue
    raise AttributeError(f"module 'pysyncq' has no attribute {name!r}")
