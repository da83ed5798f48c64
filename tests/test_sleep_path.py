"""The sleep path of a blocking pop: the pop kernel that finds nothing sets the
slot's W_DATA bit itself (no call of its own), the next pop kernel clears it,
and a wait that ends without a message clears it.  A stale bit would make
every append pay a futex wake; a missing one would leave a sleeper to its
tick.  No timing is asserted: only the bits, which say who a writer wakes.
"""

import threading
import time

import introspect

from pysyncq import PySyncQ, kernels
from pysyncq import layout as L


def wait_bits(q, sender):
    """The S_WAIT word of the member named ``sender``."""
    (m,) = [m for m in q.stats().members if m.name == sender]
    return int(introspect.words(q)[kernels.slot_word(m.slot, L.S_WAIT)])


def until(cond, what, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def test_a_wait_that_times_out_leaves_no_bit(qname):
    with PySyncQ(qname, size=4096) as q:
        q.open("r")
        assert q.pop(block=True, timer=0.02) is None
        assert wait_bits(q, "r") == 0
        assert q.stats().members[0].waiting == ""


def test_a_non_blocking_pop_sets_no_bit(qname):
    with PySyncQ(qname, size=4096) as q:
        q.open("r")
        assert q.pop() is None
        assert wait_bits(q, "r") == 0


def test_the_bit_is_set_while_asleep_and_gone_after_the_message(qname):
    with PySyncQ(qname, size=4096) as q, PySyncQ(qname, create=False) as w:
        q.open("r")
        w.open("w")
        got = []
        t = threading.Thread(target=lambda: got.append(q.pop(block=True, timer=10)))
        t.start()
        try:
            until(lambda: wait_bits(q, "r") == L.W_DATA, "the sleeper's bit")
            assert [m.waiting for m in q.stats().members if m.name == "r"] == ["data"]
            w.append("t", "hello")
        finally:
            t.join(15)
        assert not t.is_alive()
        assert got == [("w", "t", "hello")]
        assert wait_bits(q, "r") == 0


def test_another_threads_pops_keep_a_sleepers_bit(qname):
    # Thread A sleeps in pop(block=True); thread B of the same handle pops
    # (nothing there, then a message A does not get).  B's kernels must leave
    # W_DATA set while A sleeps, or the writer would not wake A.
    with PySyncQ(qname, size=4096) as q, PySyncQ(qname, create=False) as w:
        q.open("r")
        w.open("w")
        got = []
        a = threading.Thread(target=lambda: got.append(q.pop(block=True, timer=10)))
        a.start()
        try:
            until(lambda: wait_bits(q, "r") == L.W_DATA, "A's bit")
            assert q.pop() is None  # B: an empty pop
            assert wait_bits(q, "r") == L.W_DATA
            with introspect.handle_lock(q):  # hold A off the queue while B takes a message
                w.append("t", "for B")
                status = introspect.pop_kernel(q)
                assert status & L.CODE_MASK == L.OK
                assert wait_bits(q, "r") == L.W_DATA  # A still sleeps, counted
            w.append("t", "for A")
        finally:
            a.join(15)
        assert not a.is_alive()
        assert got == [("w", "t", "for A")]
        assert wait_bits(q, "r") == 0


def test_a_sleeper_in_space_and_one_in_data_share_the_word(qname):
    # One thread waits for space (W_SPACE, set by _sleep), another for data
    # (W_DATA, set by the pop kernel): neither's update drops the other's bit.
    with PySyncQ(qname, size=256) as q, PySyncQ(qname, create=False) as other:
        q.open("rw")
        other.open("slow")  # never reads: the queue fills
        while True:
            try:
                q.append("t", "x" * 40)
            except MemoryError:
                break
        for _ in q:  # q itself has read everything; 'slow' holds the space
            pass
        errors = []

        def appender():
            try:
                q.append("t", "y" * 40, block=True, timer=10)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        got = []
        sp = threading.Thread(target=appender)
        dp = threading.Thread(target=lambda: got.append(q.pop(block=True, timer=10)))
        sp.start()
        until(lambda: wait_bits(q, "rw") & L.W_SPACE, "the space waiter's bit")
        dp.start()
        try:
            until(lambda: wait_bits(q, "rw") == L.W_SPACE | L.W_DATA, "both bits")
            for _ in other:  # frees the space: the appender goes on
                pass
            sp.join(15)
            assert not sp.is_alive() and not errors
            # The data sleeper is still asleep (q's own message is screened).
            assert wait_bits(q, "rw") == L.W_DATA
            other.append("t", "wake")
        finally:
            sp.join(15)
            dp.join(15)
        assert got == [("slow", "t", "wake")]
        assert wait_bits(q, "rw") == 0


def test_spin_for_watches_only_with_few_members(qname):
    with PySyncQ(qname, size=4096) as q:
        q.open("r")
        mem, w = introspect.mem(q), introspect.words(q)
        seq = int(w[L.H_DATA_SEQ]) & 0xFFFFFFFF
        assert kernels.spin_for(mem, L.H_DATA_SEQ, seq, 1, 1000) == 0  # one member, one CPU
        # it differs at once: the rounds left, plus one
        assert kernels.spin_for(mem, L.H_DATA_SEQ, seq + 1, 1, 1000) == 1000
        assert kernels.spin_for(mem, L.H_DATA_SEQ, seq, 0, 1000) == -1  # more members than CPUs


def test_a_spinning_pop_gets_what_comes_and_sleeps_after(qname):
    # With spinning on (one member per CPU is plenty here), a blocking pop
    # still gets a message appended by a thread, and a timeout still
    # leaves no bit behind.
    with PySyncQ(qname, size=4096) as q, PySyncQ(qname, create=False) as w:
        q.open("r")
        w.open("w", reader=False)
        q.spin = 0.01
        introspect.remeasure_spin()  # measure again, on this queue
        t = threading.Timer(0.005, lambda: w.append("t", "soon"))
        t.start()
        try:
            assert q.pop(block=True, timer=10) == ("w", "t", "soon")
        finally:
            t.join(10)
        assert q.pop(block=True, timer=0.03) is None
        assert wait_bits(q, "r") == 0
        q.spin = 0
        assert q.pop(block=True, timer=0.01) is None


def test_a_spinning_pop_is_not_armed_until_it_sleeps(qname, monkeypatch):
    # While a blocking pop only watches (q.spin), its slot has no W_DATA bit
    # and H_WAITERS stays 0, so that writers make no wake call for it; when
    # the watch ends with nothing it arms the bit and sleeps.  Spinning needs
    # no more members than CPUs: pretend there are plenty.
    introspect.CPUS.patch(monkeypatch, 64)
    with PySyncQ(qname, size=4096) as q, PySyncQ(qname, create=False) as w:
        q.open("r")
        w.open("w", reader=False)
        words = introspect.words(q)
        for spin, armed in ((30.0, False), (0.0, True)):
            q.spin = spin
            got = []
            t = threading.Thread(target=lambda got=got: got.append(q.pop(block=True, timer=60)))
            t.start()
            try:
                time.sleep(0.2)  # the pop has found nothing and now watches or sleeps
                assert t.is_alive()
                if armed:
                    until(lambda: wait_bits(q, "r") == L.W_DATA, "the W_DATA bit")
                    assert int(words[L.H_WAITERS]) == 1
                else:
                    assert wait_bits(q, "r") == 0
                    assert int(words[L.H_WAITERS]) == 0
                w.append("t", f"spin={spin}")
            finally:
                t.join(10)
            assert got == [("w", "t", f"spin={spin}")]
            assert wait_bits(q, "r") == 0 and int(words[L.H_WAITERS]) == 0


def test_waiters_count_follows_the_bits_of_every_member(qname):
    # H_WAITERS counts the slots with wait bits: raised by each sleeping pop,
    # lowered by its wake-up, and by a wait that times out.
    with (
        PySyncQ(qname, size=4096) as q,
        PySyncQ(qname, create=False) as r2,
        PySyncQ(qname, create=False) as w,
    ):
        q.open("r1")
        r2.open("r2")
        w.open("w", reader=False)
        q.spin = r2.spin = 0
        words = introspect.words(q)
        got = []
        ts = [
            threading.Thread(target=lambda h=h: got.append(h.pop(block=True, timer=60)))
            for h in (q, r2)
        ]
        for t in ts:
            t.start()
        try:
            until(lambda: int(words[L.H_WAITERS]) == 2, "two waiters")
            w.append("t", "both")
        finally:
            for t in ts:
                t.join(10)
        assert len(got) == 2 and int(words[L.H_WAITERS]) == 0
        assert r2.pop(block=True, timer=0.01) is None  # a timeout clears its bit
        assert int(words[L.H_WAITERS]) == 0
