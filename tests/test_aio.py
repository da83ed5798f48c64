"""asyncio: apop, aappend, aappend_array, aiter (pysyncq.aio).

Every wait is bounded (timers, join deadlines, ``asyncio.wait_for``); no test
asserts a duration.
"""

import asyncio
import multiprocessing as mp
import os
import random
import subprocess
import sys
import textwrap
import threading
import time

import introspect
import numpy as np
import pytest

import pysyncq
from pysyncq import PySyncQ
from pysyncq.layout import H_LOCK, HEADER_WORDS, S_WAIT, SLOT_WORDS, W_ASYNC, W_DATA

DEADLINE = 60


def run(coro):
    """Run ``coro`` to completion within DEADLINE seconds."""

    async def bounded():
        return await asyncio.wait_for(coro, DEADLINE)

    return asyncio.run(bounded())


# -- Workers (top-level; failures through the exit code) ----------------------


def _writer(name, count, gap, started, tag="w"):
    q = PySyncQ(name, create=False).open(tag, reader=False)
    if started is not None and not started.wait(DEADLINE):
        raise SystemExit("never told to start")
    rnd = random.Random(count)
    for i in range(count):
        if gap:
            time.sleep(rnd.uniform(0, gap))
        q.append("n", str(i), block=True, timer=DEADLINE)
    q.close()


def _blocking_reader(name, count, opened):
    q = PySyncQ(name, create=False).open(f"blocking-{os.getpid()}")
    opened.release()
    got = [q.pop(block=True, timer=DEADLINE) for _ in range(count)]
    q.close()
    if [m and m[2] for m in got] != [str(i) for i in range(count)]:
        raise SystemExit(f"blocking reader got {got[:5]}...")


def _slow_reader(name, opened, go):
    q = PySyncQ(name, create=False).open("slow")
    opened.set()
    if not go.wait(DEADLINE):
        raise SystemExit("never told to read")
    for _ in q(block=True, timer=2):
        time.sleep(0.002)  # slow: the writer finds the queue full
    q.close()


# -- Same results as the blocking twins ----------------------------------------


def test_apop_matches_pop(qname):
    q = PySyncQ(qname, size=4096).open("r")
    w = PySyncQ(qname, create=False).open("w")
    w.append("t", "text")
    w.append(b"t", b"\xff raw")
    w.append("t", 42)
    w.append_array("a", np.arange(6, dtype=">i4").reshape(2, 3))

    async def main():
        assert await q.apop() == ("w", "t", "text")
        assert await q.apop(decode=False) == (b"w", b"t", b"\xff raw")
        assert await q.apop(timer=None) == ("w", "t", "42")
        s, t, arr = await q.apop(timer=1)
        assert (s, t) == ("w", "a") and arr.dtype == np.dtype(">i4")
        np.testing.assert_array_equal(arr, np.arange(6).reshape(2, 3))
        assert await q.apop(timer=0) is None
        assert await q.apop(timer=0.05) is None  # the timer expires: None, as pop

    run(main())
    w.close()
    q.close()


def test_screening_applies(qname):
    q = PySyncQ(qname, size=4096).open("r")
    q.scrntype.add("noise")
    w = PySyncQ(qname, create=False).open("w")

    async def main():
        await w.aappend("noise", "x")
        await w.aappend("data", "y")
        await q.aappend("data", "mine")  # its own: screened by filtself
        assert await q.apop(timer=0.1) == ("w", "data", "y")
        assert await q.apop(timer=0.05) is None
        got = [m async for m in q.aiter(timer=0.05)]
        assert got == []

    run(main())
    w.close()
    q.close()


def test_errors_match_the_blocking_twins(qname):
    q = PySyncQ(qname, size=256)

    async def main():
        with pytest.raises(pysyncq.NotOpened):
            await q.apop()
        with pytest.raises(pysyncq.NotOpened):
            await q.aappend("t", "m")
        with pytest.raises(pysyncq.NotOpened):
            q.aiter()
        q.open("me")
        with pytest.raises(TypeError):
            await q.apop(timer="soon")
        with pytest.raises(ValueError):
            await q.aappend("t", "m", timer=-1)
        with pytest.raises(pysyncq.MessageTooLarge):
            await q.aappend("t", "x" * 1000)
        with pytest.raises(TypeError):
            await q.aappend_array("t", [1, 2])
        w = PySyncQ(qname, create=False).open("writer", reader=False)
        with pytest.raises(pysyncq.NotOpened):
            await w.apop()
        w.close()
        q.close()
        with pytest.raises(pysyncq.QueueClosed):
            await q.apop()
        with pytest.raises(pysyncq.QueueClosed):
            await q.aappend("t", "m")

    run(main())


def test_aappend_raises_queue_full_after_the_timer(qname):
    q = PySyncQ(qname, size=256).open("w")
    lagging = PySyncQ(qname, create=False).open("lagging")  # never reads

    async def main():
        with pytest.raises(pysyncq.QueueFull, match=r"waited 0.1 s") as e:
            for i in range(100):
                await q.aappend("t", f"{i:040d}", timer=0.1)
        assert isinstance(e.value, MemoryError)
        # The slot's wait bits are gone once the call has given up.
        assert introspect.words(q)[HEADER_WORDS + introspect.slot(q) * SLOT_WORDS + S_WAIT] == 0

    run(main())
    lagging.close()
    q.close()


def test_aappend_waits_for_space_made_by_another_handle(qname):
    """A reader in the same loop frees space: the writer's socket is signalled."""
    q = PySyncQ(qname, size=256).open("w")
    r = PySyncQ(qname, create=False).open("r")

    async def main():
        sent = []

        async def writer():
            for i in range(40):
                await q.aappend("t", f"{i:040d}", timer=DEADLINE)
                sent.append(i)

        async def reader():
            got = []
            while len(got) < 40:
                m = await r.apop(timer=DEADLINE)
                got.append(int(m[2]))
                await asyncio.sleep(0.001)
            return got

        _, got = await asyncio.gather(writer(), reader())
        assert got == sent == list(range(40))

    run(main())
    r.close()
    q.close()


def test_aappend_array_round_trip(qname):
    q = PySyncQ(qname, size=1 << 16).open("r")
    w = PySyncQ(qname, create=False).open("w")
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4))

    async def main():
        await w.aappend_array("arr", a)
        s, t, b = await q.apop()
        assert (s, t) == ("w", "arr") and b.flags.f_contiguous
        np.testing.assert_array_equal(a, b)

    run(main())
    w.close()
    q.close()


# -- Waking up -------------------------------------------------------------------


def test_waiter_advertises_async_and_the_loop_keeps_running(qname, procs):
    q = PySyncQ(qname, size=4096).open("r")
    started = mp.Event()
    procs.start(_writer, qname, 1, 0, started)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.create_task(ticker())
        pop = asyncio.create_task(q.apop(timer=DEADLINE))
        # Wait until the pop advertises itself, then let the writer go.
        word = HEADER_WORDS + introspect.slot(q) * SLOT_WORDS + S_WAIT
        while introspect.words(q)[word] != W_DATA | W_ASYNC:
            await asyncio.sleep(0.001)
        assert [m.waiting for m in q.stats().members if m.name == "r"] == ["data+async"]
        before = ticks
        # The ticker's 5 ms timers fall due before this 50 ms one: if apop
        # blocked the loop, they could not have run.
        await asyncio.sleep(0.05)
        assert ticks > before  # the loop ran while apop waited
        started.set()
        assert await pop == ("w", "n", "0")
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        assert introspect.words(q)[word] == 0

    try:
        run(main())
        procs.join()
    finally:
        q.close()


@pytest.mark.parametrize("fallback", [False, True], ids=["socket", "polling"])
def test_concurrent_apops_get_distinct_messages_with_blocking_readers(
    qname, procs, monkeypatch, fallback
):
    """Eight coroutines share one handle: together they get every message once;
    two blocking readers in other processes each get every message too."""
    if fallback:
        introspect.force_async_polling(monkeypatch)
    count = 300
    q = PySyncQ(qname, size=2048).open("r")
    opened = mp.Semaphore(0)
    readers = [procs.start(_blocking_reader, qname, count, opened) for _ in range(2)]
    for _ in readers:
        assert opened.acquire(timeout=DEADLINE)
    started = mp.Event()
    writer = procs.start(_writer, qname, count, 0.002, started)

    async def main():
        got = []

        async def consumer():
            while True:
                m = await q.apop(timer=0.3)
                if m is not None:
                    got.append(int(m[2]))

        tasks = [asyncio.create_task(consumer()) for _ in range(8)]
        started.set()
        while len(got) < count and writer.exitcode is None:
            await asyncio.sleep(0.01)
        while len(got) < count:  # the writer is done: what is left is in the queue
            await asyncio.sleep(0.01)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return got

    got = run(main())
    assert sorted(got) == list(range(count))
    assert q.pop() is None
    procs.join()
    q.close()


def test_cancellation_loses_and_doubles_nothing(qname, procs):
    """apops cancelled at random moments: each message is either returned by
    exactly one apop or still in the queue afterwards."""
    count = 400
    q = PySyncQ(qname, size=4096).open("r")
    started = mp.Event()
    writer = procs.start(_writer, qname, count, 0.001, started)
    rnd = random.Random(7)

    async def main():
        got = []
        cancelled = 0

        async def consumer():
            while True:
                m = await q.apop(timer=rnd.choice([0, 0.001, 0.05, 0.5]))
                if m is not None:
                    got.append(int(m[2]))  # no await between the return and this

        tasks = [asyncio.create_task(consumer()) for _ in range(4)]
        started.set()
        while writer.exitcode is None:
            await asyncio.sleep(rnd.uniform(0, 0.004))
            i = rnd.randrange(len(tasks))
            tasks[i].cancel()
            try:
                await tasks[i]
            except asyncio.CancelledError:
                cancelled += 1
            tasks[i] = asyncio.create_task(consumer())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return got, cancelled

    got, cancelled = run(main())
    procs.join()
    left = [int(m[2]) for m in q]
    assert cancelled > 0
    assert sorted(got + left) == list(range(count))
    assert introspect.words(q)[HEADER_WORDS + introspect.slot(q) * SLOT_WORDS + S_WAIT] == 0
    q.close()


def test_cancelled_aappend_either_appended_or_not(qname, procs):
    """aappends on a full queue cancelled at random: what was appended is
    exactly what the calls that returned said."""
    q = PySyncQ(qname, size=512).open("w")
    opened, go = mp.Event(), mp.Event()
    reader = procs.start(_slow_reader, qname, opened, go)
    assert opened.wait(DEADLINE)
    r = PySyncQ(qname, create=False).open("r")
    rnd = random.Random(3)
    got = []

    async def main():
        done = []

        async def one(i):
            await q.aappend("t", f"{i:030d}", timer=DEADLINE)
            done.append(i)

        go.set()
        i = 0
        for _ in range(150):
            t = asyncio.create_task(one(i))
            i += 1
            await asyncio.sleep(rnd.uniform(0, 0.002))
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
            for m in r.pop_many(100):  # our own reader drains as it goes
                got.append(int(m[2]))
        return done

    done = run(main())
    got += [int(m[2]) for m in r]
    assert got == done and done  # nothing lost, nothing doubled, in order
    procs.join([reader])
    r.close()
    q.close()


# -- Locks ------------------------------------------------------------------------


def test_live_lock_holder_does_not_block_the_loop(qname, monkeypatch):
    introspect.LOCK_PATIENCE.patch(monkeypatch, 0.3)
    q = PySyncQ(qname).open("w")
    introspect.words(q)[H_LOCK] = introspect.token_of(os.getppid())  # alive, and not us

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        assert await q.apop(timer=0.1) is None  # pops take no lock
        with pytest.raises(pysyncq.QueueLocked, match="is locked by process"):
            await q.aappend("t", "m", timer=0.1)
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        assert ticks > 0

    run(main())
    assert q.stats().appended == 0
    introspect.words(q)[H_LOCK] = 0
    q.close()


def test_dead_lock_holder_is_replaced(qname):
    q = PySyncQ(qname).open("r")
    w = PySyncQ(qname, create=False).open("w")
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    token = introspect.token_of(p.pid)
    p.kill()
    p.wait(DEADLINE)
    introspect.words(q)[H_LOCK] = token  # held by a process that died

    async def main():
        await w.aappend("t", "after recovery", timer=DEADLINE)
        return await q.apop(timer=DEADLINE)

    assert run(main()) == ("w", "t", "after recovery")
    assert q.stats().recoveries == 1
    w.close()
    q.close()


# -- A loop that is already running (Jupyter) -------------------------------------


def test_loop_already_running_in_another_thread(qname):
    """As in a Jupyter kernel: the loop runs for ever, cells are scheduled on it."""
    q = PySyncQ(qname, size=4096).open("r")
    w = PySyncQ(qname, create=False).open("w")
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        fut = asyncio.run_coroutine_threadsafe(q.apop(timer=DEADLINE), loop)
        w.append("t", "hello")
        assert fut.result(DEADLINE) == ("w", "t", "hello")
        fut = asyncio.run_coroutine_threadsafe(w.aappend("t", "again"), loop)
        fut.result(DEADLINE)

        async def collect():
            return [m async for m in q.aiter(timer=0.05)]

        assert asyncio.run_coroutine_threadsafe(collect(), loop).result(DEADLINE) == [
            ("w", "t", "again")
        ]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(DEADLINE)
        loop.close()
    w.close()
    q.close()


def test_asyncio_run_in_a_fresh_interpreter(qname):
    """``asyncio.run`` in a new process, with warnings as errors: the async
    cell of a notebook, in effect."""
    code = textwrap.dedent(
        f"""
        import asyncio, multiprocessing as mp, time, warnings
        warnings.simplefilter("error")
        from pysyncq import PySyncQ

        def writer():
            w = PySyncQ({qname!r}, create=False).open("w", reader=False)
            time.sleep(0.2)
            for i in range(5):
                w.append("t", i)
            w.close()

        async def cell(q):
            p = mp.get_context("fork").Process(target=writer)
            p.start()
            got = []
            async for m in q.aiter(timer={DEADLINE}):
                got.append(m[2])
                if len(got) == 5:
                    break
            p.join({DEADLINE})
            return got

        if __name__ == "__main__":
            with PySyncQ({qname!r}, size=4096) as q:
                q.open("r")
                print(asyncio.run(cell(q)))
        """
    )
    r = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['0', '1', '2', '3', '4']"
    assert r.stderr == ""


def test_apop_waits_at_an_unpublished_loan_without_losing_its_membership(qname):
    """A reservation (a loan being filled) stops readers: apop reports nothing
    yet, keeps its membership, and gets the array once it is published."""
    import numpy as np

    with PySyncQ(qname, size=4096) as w, PySyncQ(qname, create=False) as r:
        w.open("w")
        r.open("r")

        async def main():
            with w.loan("x", 3, np.int16) as arr:
                arr[:] = [1, 2, 3]
                assert await r.apop(timer=0.05) is None
            got = await r.apop(timer=5)
            assert got[:2] == ("w", "x") and got[2].tolist() == [1, 2, 3]

        run(main())
