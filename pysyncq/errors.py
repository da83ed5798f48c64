"""The exceptions pysyncq raises.

Each derives from :class:`PySyncQError` and from the built-in exception that
code written for pysyncq 0.0.1 (or for Python in general) would catch, so
``except MemoryError`` still catches a full queue.  Every exception carries only
its message, so it pickles and crosses a process boundary unchanged.
"""


class PySyncQError(Exception):
    """Base class of every pysyncq exception."""


class QueueFull(PySyncQError, MemoryError):
    """The queue has no room for the message now (after waiting, if asked to)."""


class MessageTooLarge(PySyncQError, MemoryError):
    """The message cannot fit even in an empty queue: waiting would never end."""


class QueueClosed(PySyncQError, RuntimeError):
    """The handle was closed, or the queue was removed, and cannot be used."""


class NotOpened(PySyncQError, RuntimeError):
    """The call needs ``open()`` to have been called in this process first."""


class NotAQueue(PySyncQError, ValueError):
    """The named shared memory exists but is not a pysyncq queue."""


class QueueExists(PySyncQError, FileExistsError):
    """A live queue with this name exists already."""


class TooManyProcesses(PySyncQError, RuntimeError):
    """Every reader slot of the queue is held by a live process."""


class QueueCorrupt(PySyncQError, RuntimeError):
    """The queue's shared memory holds an impossible value (something wrote over it).

    The message names the word, its value and what was expected.  Nothing was
    read, freed or allocated on the strength of the bad value; the handle can
    still be closed, ``stats()`` still answers, and ``python -m pysyncq clean``
    can remove the queue.  The queue cannot be repaired: recreate it.
    """


class QueueLocked(PySyncQError, TimeoutError):
    """A live process held the queue lock past the caller's deadline (stopped?)."""


class ChildExited(PySyncQError, ChildProcessError):
    """A process that ``wait_for_readers(..., processes=...)`` waited for has
    exited before enough readers opened the queue; ``exitcode`` and ``pid`` say
    which and how."""
