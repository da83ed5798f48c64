"""The traps of issue 7: what a new user fell into, each checked with the
processes and start methods it was seen with.

Workers here are top-level functions (every start method can run them) that
report failure through their exit code.
"""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import introspect
import pytest
import workers

import pysyncq
from pysyncq import PySyncQ, QueueClosed, QueueExists, QueueFull
from pysyncq.__main__ import main as cli_main

WAIT = 60
HERE = os.path.dirname(os.path.abspath(__file__))


def fail(why):
    raise SystemExit(why)


# -- 1. A handle received by a child does not carry the parent's self-screen --


def inherited_child(q, name):
    if set(q.scrnsend) != {"explicit"}:
        fail(f"{name}: received scrnsend {set(q.scrnsend)!r}, expected only the explicit entry")
    q.open(name)
    if q.scrnsend != {"explicit", name}:
        fail(f"{name}: scrnsend after open is {set(q.scrnsend)!r}")
    m = q.pop(block=True, timer=WAIT)
    if m != ("parent", "task", "1"):
        fail(f"{name}: expected the parent's task, got {m!r}")
    q.close()


def test_child_of_an_opened_parent_reads_the_parent(qname, procs, method):
    q = PySyncQ(qname)
    q.scrnsend.add("explicit")  # the user's own screen is inherited
    q.open("parent")  # before the children start: the trap
    child = procs.start(inherited_child, q, "child", method=method)
    assert q.scrnsend == {"explicit", "parent"}  # the parent's own set is unchanged
    q.wait_for_readers(1, timer=WAIT, processes=[child])
    q.append("task", "1")
    procs.join([child])
    q.close()


# -- 2. QueueFull says who holds the queue; the README's tour cannot deadlock --


def test_queue_full_names_the_caller_when_it_is_the_slowest_reader(qname):
    with PySyncQ(qname, size=256) as q:
        q.open("me", filtself=False)  # reads its own messages, but never pops
        with pytest.raises(QueueFull) as e:
            for _ in range(100):
                q.append("t", "x" * 40)
        msg = str(e.value)
        assert f"'me' (pid {os.getpid()})" in msg
        assert "this handle" in msg and "pop" in msg


def append_until_blocked(q, name):
    q.open(name)
    q.inbox_limit = 0  # else its blocked appends move what it pins to its inbox
    if q.pop(block=True, timer=WAIT) != ("parent", "go", ""):
        fail("no go")
    while True:  # never reads again: it pins the parent's next message
        q.append("fill", "y" * 40, block=True, timer=WAIT)


def test_queue_full_names_a_slowest_reader_that_waits_for_space(qname, procs):
    q = PySyncQ(qname, size=512)
    child = procs.start(append_until_blocked, q, "filler", method="spawn")
    q.open("parent", reader=False)
    q.wait_for_readers(1, timer=WAIT, processes=[child])
    q.append("go")
    q.append("unread")
    deadline = time.monotonic() + WAIT
    while not [m for m in q.stats().members if m.name == "filler" and "space" in m.waiting]:
        assert time.monotonic() < deadline, "the filler never waited for space"
        time.sleep(0.01)
    with pytest.raises(QueueFull) as e:
        q.append("more", "z" * 40)
    msg = str(e.value)
    assert f"'filler' (pid {child.pid})" in msg
    assert "waiting for space" in msg and "cycle" in msg
    child.kill()
    child.join(WAIT)
    q.close()


def send(q, inbox, mtype, body="", reading=None):
    """The README tour's send(): append, reading into ``inbox`` while the queue is full."""
    while True:
        try:
            return q.append(mtype, body, block=True, timer=0.05)
        except QueueFull:
            inbox.extend(q if reading is None else reading)


def tour_worker(q, name):
    """The README tour's worker."""
    with q.open(name, follow=True):
        q.scrntype.add("result")
        inbox = []
        while True:
            sender, mtype, body = inbox.pop(0) if inbox else q.pop(block=True, timer=None)
            if mtype == "stop":
                break
            send(q, inbox, "result", f"{name} squared {body}: {int(body) ** 2}")


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_the_readme_tour_pattern_runs_in_a_tiny_queue(qname, procs, method):
    q = PySyncQ(qname, size=64)  # one message at a time
    workers_ = [procs.start(tour_worker, q, f"w{i}", method=method) for i in range(3)]
    q.open("parent")
    q.wait_for_readers(3, timer=WAIT, processes=workers_)
    results = []
    for n in range(5):
        send(q, results, "task", n)
    send(q, results, "stop")
    while len(results) < 15:
        m = q.pop(block=True, timer=WAIT)
        assert m is not None, f"only {len(results)} results"
        results.append(m)
    assert sorted(body for _, _, body in results) == sorted(
        f"w{i} squared {n}: {n * n}" for i in range(3) for n in range(5)
    )
    procs.join(workers_)
    q.close()


def two_queue_worker(tasks, results, name):
    """The README's two-queue worker."""
    with tasks.open(name, follow=True), results.open(name, reader=False, follow=True):
        while (m := tasks.pop(block=True, timer=None))[1] != "stop":
            results.append(
                "result", f"{name} squared {m[2]}: {int(m[2]) ** 2}", block=True, timer=None
            )


def test_the_readme_two_queue_recipe_runs_in_tiny_queues(qname, procs):
    tasks, results = PySyncQ(qname, size=64), PySyncQ(qname + "-r", size=64)
    try:
        workers_ = [
            procs.start(two_queue_worker, tasks, results, f"w{i}", method="fork") for i in range(3)
        ]
        tasks.open("parent", reader=False)
        results.open("parent")
        tasks.wait_for_readers(3, timer=WAIT, processes=workers_)
        got = []
        for n in range(20):
            send(tasks, got, "task", n, reading=results)
        send(tasks, got, "stop", reading=results)
        while len(got) < 60:
            m = results.pop(block=True, timer=WAIT)
            assert m is not None, f"only {len(got)} results"
            got.append(m)
        assert len({body for _, _, body in got}) == 60
        procs.join(workers_)
    finally:
        tasks.close()
        results.close()


# -- 3. A dead worker no longer counts -------------------------------------------


def test_dead_reader_is_not_counted_and_stats_reaps_it(qname, procs, method):
    q = PySyncQ(qname)
    q.open("parent")
    started = [mp.get_context(method).Event() for _ in range(2)]
    kids = [
        procs.start(workers.open_and_idle, q, f"w{i}", started[i], method=method) for i in range(2)
    ]
    for e in started:
        assert e.wait(WAIT)
    assert q.wait_for_readers(2, timer=WAIT) == 2
    os.kill(kids[0].pid, signal.SIGKILL)
    kids[0].join(WAIT)
    with pytest.raises(TimeoutError):
        q.wait_for_readers(2, timer=0)  # not full, no reaping by a writer: still not counted
    s = q.stats()
    assert kids[0].pid not in [m.pid for m in s.members if m.alive]
    assert s.reaped == 1 and kids[0].pid not in [m.pid for m in s.members]
    assert q.wait_for_readers(1, timer=0) == 1
    kids[1].kill()
    kids[1].join(WAIT)
    q.close()


# -- 4. Children that die at start are reported at once ------------------------


def die_at_start(q):
    raise SystemExit(3)


def test_wait_for_readers_fails_at_once_when_a_child_died(qname, procs):
    q = PySyncQ(qname)
    q.open("parent")
    started = mp.get_context("spawn").Event()
    ok = procs.start(workers.open_and_idle, q, "ok", started, method="spawn")
    bad = procs.start(die_at_start, q, method="spawn")
    bad.join(WAIT)
    with pytest.raises(pysyncq.ChildExited) as e:
        q.wait_for_readers(2, timer=WAIT, processes=[ok, bad])
    assert isinstance(e.value, ChildProcessError)
    assert f"pid {bad.pid}" in str(e.value) and "exit code 3" in str(e.value)
    with pytest.raises(TimeoutError, match="may have died before opening"):
        q.wait_for_readers(5, timer=0)
    ok.kill()
    ok.join(WAIT)
    q.close()  # reaps the killed reader, then removes the queue


# -- 5. Followers learn that the creator left -----------------------------------


def follower(q, name, started):
    q.open(name, follow=True)
    q.append("ready")
    started.set()
    try:
        m = q.pop(block=True, timer=None)
    except QueueClosed as e:
        if "created" not in str(e):
            fail(f"unexpected message: {e}")
        return
    fail(f"pop returned {m!r}")


def test_follower_blocked_in_pop_stops_when_the_creator_closes(qname, procs, method):
    q = PySyncQ(qname)
    started = mp.get_context(method).Event()
    child = procs.start(follower, q, "f", started, method=method)
    q.open("parent")
    assert started.wait(WAIT)
    assert q.pop(block=True, timer=WAIT) == ("f", "ready", "")
    q.close()
    procs.join([child], timeout=WAIT)


def create_and_sleep(name, started):
    q = PySyncQ(name)
    q.open("creator")
    started.set()
    time.sleep(3600)


def attach_and_follow(name, started):
    q = PySyncQ(name, create=False)
    follower(q, "f", started)


def test_follower_stops_when_the_creator_is_killed(qname, procs):
    ctx = mp.get_context("spawn")
    created, followed = ctx.Event(), ctx.Event()
    creator = procs.start(create_and_sleep, qname, created, method="spawn")
    assert created.wait(WAIT)
    kid = procs.start(attach_and_follow, qname, followed, method="spawn")
    assert followed.wait(WAIT)
    os.kill(creator.pid, signal.SIGKILL)
    creator.join(WAIT)
    procs.join([kid], timeout=WAIT)
    assert not os.path.exists(f"/dev/shm/{qname}")  # the follower's close removed it


def test_parent_exiting_without_close_stops_its_followers(qname, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(f"""
        import multiprocessing as mp
        import sys
        sys.path[:0] = [{HERE!r}, {os.path.dirname(HERE)!r}]
        from test_traps import follower
        from pysyncq import PySyncQ

        if __name__ == "__main__":
            q = PySyncQ({qname!r})
            q.open("parent")
            started = mp.get_context("spawn").Event()
            p = mp.get_context("spawn").Process(target=follower, args=(q, "f", started))
            p.start()
            assert started.wait(60)
            # no close, no join: multiprocessing joins p at exit
        """)
    )
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=2 * WAIT
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


# -- 6. Re-running a cell; a removed queue -----------------------------------


def test_queue_exists_says_the_holder_is_this_process(qname):
    old = PySyncQ(qname)
    old.open("a")
    with pytest.raises(QueueExists) as e:
        PySyncQ(qname)
    msg = str(e.value)
    assert "in use by a live process" in msg and "this process" in msg
    assert "close()" in msg and "create=False" in msg
    old.close()


def test_old_handle_notices_that_its_queue_was_removed(qname):
    old = PySyncQ(qname)
    old.open("a")
    other = PySyncQ(qname, create=False).open("b")
    assert pysyncq.remove(qname, force=True)
    with pytest.raises(QueueClosed, match="removed"):
        old.append("x", "y")
    with pytest.raises(QueueClosed, match="removed"):
        other.pop()
    with pytest.raises(QueueClosed, match="removed"):
        other.stats()
    new = PySyncQ(qname)  # the name is free again
    new.open("a")
    old.close()
    other.close()
    assert new.stats().members[0].name == "a"
    new.close()


# -- 7. What the README says of decode=True (documentation; pinned here) -------


def test_bytes_come_back_as_str_when_they_are_valid_utf8(qname):
    with PySyncQ(qname) as q:
        q.open("a", filtself=False)
        q.append("t", bytes(4))
        q.append("t", b"\xff\xfe")
        assert q.pop() == ("a", "t", "\0\0\0\0")  # a str
        assert q.pop() == ("a", "t", b"\xff\xfe")
        q.append("t", bytes(4))
        assert q.pop(decode=False) == (b"a", b"t", bytes(4))


# -- 8. A closed handle says what to do; list says "no queues" -----------------


def test_closed_handle_error_says_what_to_do(qname):
    q = PySyncQ(qname)
    q.open("a")
    q.close()
    for call in (q.pop, lambda: q.append("t"), q.open):
        with pytest.raises(QueueClosed, match=r"PySyncQ\(.*create=False\)\.open"):
            call()


def test_list_says_no_queues(monkeypatch, capsys, tmp_path):
    introspect.SHM_DIR.patch(monkeypatch, str(tmp_path))  # an empty /dev/shm
    assert cli_main(["list"]) == 0
    assert capsys.readouterr().out == "no queues\n"
