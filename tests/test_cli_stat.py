"""``python -m pysyncq stat`` and ``list`` against live, stale and corrupt
queues in other processes.  Every subprocess has a timeout; no timing asserts."""

import io
import json
import multiprocessing as mp
import os
import select
import signal
import subprocess
import sys
import time

import introspect
from conftest import shm_exists

from pysyncq import PySyncQ
from pysyncq.layout import H_WRITE_POS, HEADER_BYTES, SLOT_BYTES

DEADLINE = 60


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pysyncq", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
    )


def _idle_member(name, sender, started):
    q = PySyncQ(name, create=False).open(sender)  # noqa: F841 - held until killed
    started.set()
    time.sleep(3600)


def _create_and_idle(name, started):
    q = PySyncQ(name, size=4096)  # noqa: F841
    q.open("creator")
    started.set()
    time.sleep(3600)


def _busy_writer(name, started):
    q = PySyncQ(name, create=False).open("busy", reader=False)
    started.set()
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        q.extend("t", ["x" * 20] * 20, block=True, timer=1)
        time.sleep(0.001)


def _draining_reader(name, started):
    q = PySyncQ(name, create=False).open("drain")
    started.set()
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        q.pop_many(1000, block=True, timer=0.5)


def _start(procs, target, *args):
    started = mp.Event()
    p = procs.start(target, *args, started)
    assert started.wait(DEADLINE)
    return p


def _kill(p):
    os.kill(p.pid, signal.SIGKILL)
    p.join(DEADLINE)
    assert p.exitcode is not None


def _table(q):
    return bytes(introspect.mem(q)[: HEADER_BYTES + SLOT_BYTES * introspect.nslots(q)])


def test_stat_live_queue_with_a_dead_member(qname, procs):
    q = PySyncQ(qname, size=4096).open("parent")
    idler = _start(procs, _idle_member, qname, "idler")
    victim = _start(procs, _idle_member, qname, "victim-with-a-rather-long-name")
    for i in range(3):
        q.append("t", f"message {i}")
    _kill(victim)
    before = _table(q)

    r = cli("stat", qname)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"queue {qname}"  # the one line as long as the name
    assert all(len(line) <= 80 for line in lines[1:]), lines
    assert lines[1].startswith("state      in use, 3 members (3 readers, 1 dead)")
    rows = {line.split()[0]: line.split() for line in lines if line[:1].islower()}
    assert rows["idler"][2:5] == ["alive", "reader", "3"]  # 3 messages behind
    assert rows["victim-with~"][2] == "DEAD"
    assert "appended   3 " in r.stdout

    r = cli("stat", qname, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["appended"], d["held"], d["state"], d["corrupt"]) == (3, 3, "in use", None)
    by_name = {m["name"]: m for m in d["members"]}
    assert by_name["victim-with-a-rather-long-name"]["alive"] is False
    assert by_name["idler"]["lag_messages"] == 3 and by_name["idler"]["alive"] is True
    assert by_name["parent"]["sent"] == 3 and by_name["parent"]["pid"] == os.getpid()

    # Looking changed nothing: no slot taken, no lock, no word written.
    assert _table(q) == before
    r = cli("list")
    assert f"{qname}\tin use\t4.0 KiB\t3 members\t" in r.stdout
    _kill(idler)
    q.close()  # reaps the dead, and as the last member removes the queue


def test_stat_and_list_a_stale_queue(qname, procs, no_watcher):
    child = _start(procs, _create_and_idle, qname)
    _kill(child)
    r = cli("stat", qname)
    assert r.returncode == 0, r.stderr
    assert "state      stale, 1 members (1 readers, 1 dead)" in r.stdout
    assert f"{qname}\tstale\t4.0 KiB\t1 member\t0 B used" in cli("list").stdout
    assert f"{qname}: removed" in cli("clean", qname).stdout
    assert not shm_exists(qname)
    r = cli("stat", qname)
    assert r.returncode == 1 and "no queue named" in r.stderr and r.stdout == ""


def test_stat_a_corrupt_queue_says_so_and_shows_what_it_can(qname):
    q = PySyncQ(qname, size=4096).open("parent")
    q.append("t", "m")
    good = int(introspect.words(q)[H_WRITE_POS])
    introspect.words(q)[H_WRITE_POS] = good + 3  # not a multiple of 8
    try:
        r = cli("stat", qname)
        assert r.returncode == 1
        assert "CORRUPT: write position (word 16)" in r.stdout
        assert "parent" in r.stdout and "Traceback" not in r.stderr
        d = json.loads(cli("stat", qname, "--json").stdout)
        assert d["corrupt"].startswith("write position") and d["members"][0]["name"] == "parent"
        r = cli("list")
        assert r.returncode == 0 and f"{qname}\tcorrupt\t" in r.stdout, r.stderr
        r = cli("clean")  # a corrupt queue is not judged stale: left alone, no traceback
        assert "Traceback" not in r.stderr and shm_exists(qname)
    finally:
        introspect.words(q)[H_WRITE_POS] = good
    q.close()


def test_stat_on_something_that_is_not_a_queue(qname):
    with open(introspect.shm_path(qname), "wb") as f:
        f.write(b"not a queue" * 100)
    try:
        r = cli("stat", qname)
        assert r.returncode == 1 and "is not a pysyncq queue" in r.stderr
    finally:
        introspect.remove_shm(qname)


def test_list_says_no_queues(monkeypatch, tmp_path):
    introspect.SHM_DIR.patch(monkeypatch, str(tmp_path))
    out = io.StringIO()
    assert introspect.cli_list(out) == 0
    assert out.getvalue() == "no queues\n"


def _read_until(p, marker, times, deadline):
    """Read p's stdout until ``marker`` was seen ``times`` times."""
    buf = b""
    fd = p.stdout.fileno()
    while buf.count(marker) < times:
        left = deadline - time.monotonic()
        assert left > 0, f"stat --watch printed only {buf[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"stat --watch ended early: {buf[-500:]!r}"
            buf += chunk
    return buf


def _watch(qname, *extra, marker, frames):
    p = subprocess.Popen(
        [sys.executable, "-m", "pysyncq", "stat", qname, "--watch", "0.2", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out = _read_until(p, marker, frames, time.monotonic() + DEADLINE)
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=DEADLINE)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
    return p.returncode, (out + rest).decode(), err.decode()


def test_watch_refreshes_with_a_rate_until_ctrl_c(qname, procs):
    q = PySyncQ(qname, size=1 << 16)
    _start(procs, _draining_reader, qname)
    _start(procs, _busy_writer, qname)

    code, out, err = _watch(qname, marker=b"msg/s", frames=3)
    assert code in (0, 130), err
    assert "Traceback" not in err
    assert out.startswith(introspect.CLEAR_SCREEN) and out.count(introspect.CLEAR_SCREEN) >= 3
    frame = out.split(introspect.CLEAR_SCREEN)[2]
    assert "Ctrl-C to quit" in frame and "busy" in frame and "drain" in frame
    assert all(len(line) <= 80 for line in frame.splitlines() if not line.startswith("queue"))

    code, out, err = _watch(qname, "--json", marker=b"\n", frames=3)
    assert code in (0, 130) and "Traceback" not in err
    docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert docs[0]["rate"] is None and docs[1]["rate"] is not None
    assert docs[1]["appended"] >= docs[0]["appended"]
    procs.reap()
    q.close()
