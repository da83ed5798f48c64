"""Several real ``PySyncQ`` handles on one small segment, in one process,
against the reference model (``model.py``), step by step.

Where ``test_kernels.py`` drives the ring kernels directly, this drives the
public API: handles are attached and opened (readers and writers, with and
without ``filtself``), append str and bytes of mixed sizes that wrap the ring,
pop (decoded, raw, blocking with no wait, through ``_pop_raw``), change their
screens and close.  Every observable result is checked against the model:
what each pop returns, ``QueueFull`` / ``None`` / ``MessageTooLarge``, and
after every step each handle's ``stats()`` (used, held, appended, and per
member: slot, name, reader, sent, received, screened, lag in bytes and in
messages).  So the validation added against corrupted segments (issue 6)
must never reject a state the queue reaches by valid use: a ``QueueCorrupt``
anywhere fails the test.

All handles share the process's token, so a slot is told apart by its index,
which the kernel and the model both choose as the lowest free one.
"""

import collections
import os
import time

import introspect
from conftest import new_name
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from model import RingModel, message_size

import pysyncq
from pysyncq import layout as L

NAMES = ["a", "b", b"c", "é"]  # senders; also screened by type (same bytes)
TYPES = ["", "t", b"u", "a"]
CAPS = [64, 136, 256, 512]
NSLOTS = 4
SEEN = collections.Counter()  # outcomes reached over all examples


def _dec(b):
    try:
        return b.decode()
    except UnicodeDecodeError:
        return b


class H:
    """One handle and what the test knows of it."""

    def __init__(self, q, sender, reader, slot, base):
        self.q = q
        self.sender = sender
        self.reader = reader
        self.slot = slot
        self.base = base  # model appends when it opened (S_BASE)

    def screens(self):
        return (
            {introspect.as_bytes(x) for x in self.q.scrnsend},
            {introspect.as_bytes(x) for x in self.q.scrntype},
        )


class HandlesMachine(RuleBasedStateMachine):
    handles = Bundle("handles")

    @initialize(
        target=handles,
        cap=st.sampled_from(CAPS),
        sender=st.sampled_from(NAMES),
        filtself=st.booleans(),
        reader=st.booleans(),
    )
    def setup(self, cap, sender, filtself, reader):
        self.name = new_name("model")
        self.creator = pysyncq.PySyncQ(self.name, size=cap, slots=NSLOTS)
        self.token = introspect.own_token()
        self.cap = self.creator.size
        self.model = RingModel(self.cap, NSLOTS, creator=self.token)
        self.live = []
        self.n = 0
        self.seen = set()  # outcomes reached, for the coverage note
        return self._open(self.creator, sender, filtself, reader)

    def _open(self, q, sender, filtself, reader):
        slot = self.model.open(self.token, reader)
        assert slot >= 0
        q.open(sender, filtself=filtself, reader=reader)
        assert introspect.slot(q) == slot
        h = H(q, introspect.as_bytes(sender), reader, slot, self.model.appends)
        self.live.append(h)
        return h

    def teardown(self):
        SEEN.update(getattr(self, "seen", ()))
        for h in self.live:
            h.q.close()
        if getattr(self, "creator", None) is not None:
            self.creator.close()
            leaked = os.path.exists(introspect.shm_path(self.name))
            introspect.remove_shm(self.name)
            assert not leaked, f"{self.name} left in /dev/shm"

    # -- Membership.
    @precondition(lambda self: len(self.live) < NSLOTS and not self.model.unlinked)
    @rule(
        target=handles,
        sender=st.sampled_from(NAMES),
        filtself=st.booleans(),
        reader=st.booleans(),
    )
    def attach_and_open(self, sender, filtself, reader):
        q = pysyncq.PySyncQ(self.name, create=False)
        return self._open(q, sender, filtself, reader)

    @rule(h=consumes(handles))
    def close(self, h):
        """Close a handle (the creator's too: then the last member to close
        removes the queue)."""
        creator = h.q is self.creator
        code, unlink = self.model.leave(h.slot, self.token, creator=creator)
        assert code == L.OK
        h.q.close()
        self.live.remove(h)
        assert h.q.closed
        exists = os.path.exists(introspect.shm_path(self.name))
        assert exists == (not self.model.unlinked), (exists, unlink)
        self.seen.add(("close", creator, unlink))

    # -- Screening.
    @rule(
        h=handles,
        which=st.sampled_from(["scrnsend", "scrntype"]),
        item=st.sampled_from(NAMES + TYPES),
        add=st.booleans(),
    )
    def screen(self, h, which, item, add):
        s = getattr(h.q, which)
        if add:
            s.add(item)
        else:
            s.discard(item)

    @rule(h=handles, on=st.booleans())
    def filtself(self, h, on):
        """Screen (or stop screening) the handle's own sender, as filtself does."""
        if on:
            h.q.scrnsend.add(h.sender)
        else:
            h.q.scrnsend.discard(h.sender)

    @rule(h=handles, senders=st.sets(st.sampled_from(NAMES)), types=st.sets(st.sampled_from(TYPES)))
    def replace_screens(self, h, senders, types):
        h.q.scrnsend = senders
        h.q.scrntype = types

    # -- Messages.
    @rule(
        h=handles,
        mtype=st.sampled_from(TYPES),
        size=st.integers(0, 48) | st.integers(0, 48) | st.integers(0, 105),
        as_str=st.booleans(),
        count=st.integers(1, 3),
    )
    def append(self, h, mtype, size, as_str, count):
        if h.q.closed:
            return
        if size > 48:  # a share of the ring, up to a little over all of it
            size = size * self.cap // 100
        for _ in range(count):
            self.n += 1
            text = (f"{self.n}:" + "xé" * size)[:size]
            body = text if as_str else os.urandom(size)
            b = introspect.as_bytes(body)
            t = introspect.as_bytes(mtype)
            senders, types = h.screens()
            skip = h.sender in senders or t in types
            lap = self.model.write_pos // self.cap
            kind = (L.KIND_STR if as_str else L.KIND_BYTES, h.slot)
            expect = self.model.append(h.slot, self.token, h.sender, t, b, kind, skip=skip)
            try:
                h.q.append(mtype, body)
            except pysyncq.QueueFull:
                got = L.FULL
            except pysyncq.MessageTooLarge:
                got = L.TOO_LARGE
            else:
                got = L.OK
                if (self.model.write_pos - 1) // self.cap > lap:
                    self.seen.add(("wrapped",))
            assert got == expect, (got, expect, message_size(h.sender, t, b), self.model.free())
            self.seen.add(("append", got, skip))

    @rule(
        h=handles,
        how=st.sampled_from(["decode", "raw", "block", "pop_raw"]),
        drain=st.booleans(),
    )
    def pop(self, h, how, drain):
        if h.q.closed or not h.reader:
            return
        while True:
            senders, types = h.screens()
            code, msg = self.model.pop(h.slot, self.token, senders, types)
            if how == "decode":
                got = h.q.pop()
            elif how == "raw":
                got = h.q.pop(decode=False)
            elif how == "block":
                got = h.q.pop(block=True, timer=0)
            else:
                got = introspect.raw_pop(h.q)
            self.seen.add(("pop", code, how))
            if code == L.EMPTY:
                assert got is None, got
                return
            assert code == L.OK
            s, t, b, (kind, writer) = msg
            if how == "decode":
                assert got == (_dec(s), _dec(t), _dec(b))
            elif how == "pop_raw":
                assert got == (s, t, b, kind, writer == h.slot)
            else:
                assert got == (s, t, b) if how == "raw" else (_dec(s), _dec(t), _dec(b))
            if not drain:
                return

    @rule()
    def idle(self):
        """Always possible (every handle may have been closed)."""

    # -- What every handle sees.
    @invariant()
    def stats_match(self):
        if not hasattr(self, "model"):
            return
        m = self.model
        unread = {}
        for i, s in enumerate(m.slots):
            if s is not None and s.reader:
                unread[i] = sum(1 for e in m.entries if e.msg is not None and e.pos >= s.cursor)
        for q in [self.creator] + [h.q for h in self.live]:
            if q.closed:
                continue
            st_ = q.stats()
            assert st_.appended == m.appends
            assert st_.capacity == self.cap
            assert st_.used == m.used(), (st_.used, m.used())
            assert st_.free == self.cap - m.used()
            assert st_.held == max([0] + list(unread.values()))
            rows = {r.slot: r for r in st_.members}
            assert set(rows) == {i for i, s in enumerate(m.slots) if s is not None}
            for h in self.live:
                r, s = rows[h.slot], m.slots[h.slot]
                assert r.name == _dec(h.sender)
                assert r.reader == h.reader
                assert r.pid == os.getpid() and r.alive
                assert (r.sent, r.received, r.screened) == (s.sent, s.received, s.screened)
                if h.reader:
                    assert r.lag == m.write_pos - s.cursor
                    assert r.lag_messages == unread[h.slot]
                    assert r.lag_messages == m.appends - h.base - s.received - s.screened
                else:
                    assert r.lag == 0 and r.lag_messages == 0


SETTINGS = settings(
    max_examples=int(os.environ.get("PYSYNCQ_MODEL_EXAMPLES", "650")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_handles_against_model():
    SEEN.clear()
    t0 = time.monotonic()
    run_state_machine_as_test(HandlesMachine, settings=SETTINGS)
    print(f"\nhandles model: {SETTINGS.max_examples} examples in {time.monotonic() - t0:.1f} s")
    for key, n in sorted(SEEN.items(), key=str):
        print(f"  {key}: {n}")
    # What the run must have reached to mean anything.
    wanted = [
        ("append", L.OK, False),
        ("append", L.OK, True),
        ("append", L.FULL, False),
        ("append", L.TOO_LARGE, False),
        ("close", True, True),
        ("close", False, False),
        ("wrapped",),
    ]
    wanted += [("pop", c, how) for c in (L.OK, L.EMPTY) for how in ("decode", "raw", "block")]
    missing = [k for k in wanted if not SEEN[k]]
    assert not missing, f"never reached: {missing}"
