"""Screening sets: the senders and types a process does not want to read.

``PySyncQ.scrnsend`` and ``PySyncQ.scrntype`` are :class:`ScreenSet` objects.
An entry may be given as str, as bytes, or as any object (stored as
``str(obj)``, as the message fields are), and ``'me'`` and ``b'me'`` are the
same entry: adding, testing and removing work in either form.  Iteration
yields each entry in the form it was last added in.

It is a real ``set`` subclass, so ``isinstance(q.scrnsend, set)`` holds, as
the 0.0.1 guide ("Both of these are sets") suggests.

Every change bumps a counter shared by the two sets of a queue handle, which
tells the handle to rebuild the compact table (``screen_table``) that the pop
kernel scans.
"""

from collections.abc import Set

import numpy as np


def as_bytes(obj):
    """The bytes that stand for ``obj`` in the queue (str is UTF-8 encoded)."""
    t = type(obj)
    if t is str:
        return obj.encode()
    if t is bytes:
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    return str(obj).encode()


def _setlike(obj):
    return isinstance(obj, (set, frozenset, Set))


class ScreenSet(set):
    """A set of names compared as bytes, whatever form they are given in.

    It is a real ``set`` (``isinstance(q.scrnsend, set)``, as the 0.0.1 guide
    says), holding each entry in the form it was last added in, with a map
    from each entry's bytes to that form beside it.  Every method of ``set``
    is overridden to keep the two in step and to compare as bytes; only
    calling ``set``'s methods on it directly (``set.add(s, x)``) would bypass
    that.
    """

    __slots__ = ("_keys", "_changes")

    def __init__(self, iterable=(), _changes=None):
        super().__init__()
        self._keys = {}
        self._changes = _changes if _changes is not None else [0]
        for item in list(iterable):
            self.add(item)

    # -- Membership and single changes.
    def __contains__(self, item):
        try:
            return as_bytes(item) in self._keys
        except UnicodeEncodeError:
            return False

    def add(self, item):
        key = as_bytes(item)
        old = self._keys.get(key, _NONE)
        if old is item:
            return
        if old is not _NONE:
            set.discard(self, old)
        set.add(self, item)
        self._keys[key] = item
        self._changes[0] += 1

    def discard(self, item):
        try:
            key = as_bytes(item)
        except UnicodeEncodeError:
            return
        old = self._keys.pop(key, _NONE)
        if old is not _NONE:
            set.discard(self, old)
            self._changes[0] += 1

    def remove(self, item):
        if item not in self:
            raise KeyError(item)
        self.discard(item)

    def pop(self):
        if not self._keys:
            raise KeyError("pop from an empty set")
        key, item = self._keys.popitem()
        set.discard(self, item)
        self._changes[0] += 1
        return item

    def clear(self):
        if self._keys:
            self._keys.clear()
            set.clear(self)
            self._changes[0] += 1

    # -- Changes by many.  The other operand may be any iterable of names; it
    # -- is compared as bytes too ('me' matches b'me' on either side).
    @staticmethod
    def _other_keys(other):
        if isinstance(other, ScreenSet):
            return other._keys.keys()
        return {as_bytes(x) for x in other}

    def update(self, *iterables):
        for iterable in iterables:
            for item in list(iterable):
                self.add(item)

    def difference_update(self, *iterables):
        for iterable in iterables:
            for key in list(self._other_keys(iterable)):
                self.discard(key)

    def intersection_update(self, *iterables):
        keep = set(self._keys)
        for iterable in iterables:
            keep &= set(self._other_keys(iterable))
        for key in [k for k in self._keys if k not in keep]:
            self.discard(key)

    def symmetric_difference_update(self, iterable):
        other = ScreenSet(list(iterable))
        for key, item in list(other._keys.items()):
            if key in self._keys:
                self.discard(key)
            else:
                self.add(item)

    def replace(self, items):
        """Make the entries those of ``items`` (what ``q.scrnsend = items`` does).

        ``q.scrnsend |= x`` also ends in the setter, with the set itself,
        already updated in place: then there is nothing to do.
        """
        if items is self:
            return
        items = list(items)
        self.clear()
        self.update(items)

    # -- New sets.
    def copy(self):
        """A plain ``set`` of the entries, in the forms they were added in."""
        return set(iter(self))

    def copy_screen(self):
        """An independent ``ScreenSet`` with the same entries."""
        return ScreenSet(list(self))

    def union(self, *iterables):
        new = self.copy_screen()
        new.update(*iterables)
        return new

    def intersection(self, *iterables):
        new = self.copy_screen()
        new.intersection_update(*iterables)
        return new

    def difference(self, *iterables):
        new = self.copy_screen()
        new.difference_update(*iterables)
        return new

    def symmetric_difference(self, iterable):
        new = self.copy_screen()
        new.symmetric_difference_update(iterable)
        return new

    # -- Comparisons, as bytes.
    def issubset(self, other):
        return self._keys.keys() <= set(self._other_keys(other))

    def issuperset(self, other):
        return self._keys.keys() >= set(self._other_keys(other))

    def isdisjoint(self, other):
        return not self._keys.keys() & set(self._other_keys(other))

    def __eq__(self, other):
        if isinstance(other, (set, frozenset)):
            try:
                return self._keys.keys() == set(self._other_keys(other))
            except UnicodeEncodeError:
                return False
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None

    # -- Operators take sets only, as a built-in set's do; methods take iterables.
    def __ior__(self, other):
        self.update(other)
        return self

    def __iand__(self, other):
        self.intersection_update(other)
        return self

    def __isub__(self, other):
        self.difference_update(other)
        return self

    def __ixor__(self, other):
        self.symmetric_difference_update(other)
        return self

    def __or__(self, other):
        return self.union(other) if _setlike(other) else NotImplemented

    def __and__(self, other):
        return self.intersection(other) if _setlike(other) else NotImplemented

    def __sub__(self, other):
        return self.difference(other) if _setlike(other) else NotImplemented

    def __rsub__(self, other):
        return ScreenSet(other).difference(self) if _setlike(other) else NotImplemented

    def __xor__(self, other):
        return self.symmetric_difference(other) if _setlike(other) else NotImplemented

    __ror__, __rand__, __rxor__ = __or__, __and__, __xor__

    def __le__(self, other):
        return self.issubset(other) if _setlike(other) else NotImplemented

    def __ge__(self, other):
        return self.issuperset(other) if _setlike(other) else NotImplemented

    def __lt__(self, other):
        if not _setlike(other):
            return NotImplemented
        return self.issubset(other) and len(self) < len(set(self._other_keys(other)))

    def __gt__(self, other):
        if not _setlike(other):
            return NotImplemented
        return self.issuperset(other) and len(self) > len(set(self._other_keys(other)))

    def keys_bytes(self):
        """The entries as bytes (what the queue compares)."""
        return list(self._keys)

    def __repr__(self):
        return f"ScreenSet({set(iter(self))!r})" if self._keys else "ScreenSet()"

    def __reduce__(self):
        return (ScreenSet, (list(self),))


_NONE = object()


class Screened:
    """The ``scrnsend`` and ``scrntype`` attributes of a queue handle (a
    ``PySyncQ`` or a ``RedisQueue``), over its ``_scrnsend``/``_scrntype``
    ``ScreenSet`` objects: assigning a set replaces the entries in place."""

    @property
    def scrnsend(self):
        """Senders whose messages this process does not read (str or bytes)."""
        return self._scrnsend

    @scrnsend.setter
    def scrnsend(self, items):
        self._scrnsend.replace(items)

    @property
    def scrntype(self):
        """Message types this process does not read (str or bytes)."""
        return self._scrntype

    @scrntype.setter
    def scrntype(self, items):
        self._scrntype.replace(items)


def screen_table(senders, types):
    """Pack two lists of bytes into the uint8 table the pop kernel reads.

    Layout, in int64 words: ``[n_senders, n_types, (offset, length) per entry]``
    followed by the entries' bytes; senders first.  The length is a multiple
    of 8 so the kernel can view it as int64.
    """
    entries = list(senders) + list(types)
    head = 8 * (2 + 2 * len(entries))
    total = head + sum(len(e) for e in entries)
    table = np.zeros((total + 7) & ~7, np.uint8)
    words = table[:head].view(np.int64)
    words[0] = len(senders)
    words[1] = len(types)
    at = head
    for k, e in enumerate(entries):
        words[2 + 2 * k] = at
        words[3 + 2 * k] = len(e)
        table[at : at + len(e)] = np.frombuffer(e, np.uint8)
        at += len(e)
    return table
