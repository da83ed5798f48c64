"""``python -m pysyncq``: the demo, and listing and cleaning queues."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import introspect
import pytest
from conftest import shm_exists

from pysyncq import PySyncQ


def pysyncq_cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "pysyncq", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_demo_runs_and_exits_cleanly(start):
    r = pysyncq_cli("demo", "--workers", "3", "--duration", "1.5", "--start", start)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    for i in range(3):
        assert f"Child-{i} received the stop signal" in r.stdout
        assert f"Child-{i} opened the queue and screens out" in r.stdout
    assert "closed and removed" in r.stdout


def test_demo_stops_on_ctrl_c_and_leaves_nothing():
    before = set(introspect.queues_in_shm())
    p = subprocess.Popen(
        [sys.executable, "-m", "pysyncq", "demo", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for line in p.stdout:
            if "sending the start signal" in line:
                break
        time.sleep(0.5)
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate(timeout=10)
    assert p.returncode == 130
    assert "Traceback" not in err
    assert "closed and removed" in out
    # Only the demo's own queue (named after its pid) counts: other programs
    # on this machine may be making queues meanwhile.
    assert not [
        n for n in set(introspect.queues_in_shm()) - before if n.startswith(f"psq_{p.pid}_")
    ]


def test_demo_rejects_bad_options():
    r = pysyncq_cli("demo", "--workers", "0")
    assert r.returncode == 2 and "--workers must be >= 1" in r.stderr


def _create_and_wait(name, started):
    q = PySyncQ(name, size=512)  # noqa: F841 - held until the process is killed
    started.set()
    time.sleep(3600)


def test_list_and_clean(qname, procs, no_watcher):
    started = mp.Event()
    child = procs.start(_create_and_wait, qname, started)
    assert started.wait(60)
    assert f"{qname}\tin use" in pysyncq_cli("list").stdout
    r = pysyncq_cli("clean", qname)
    assert r.returncode == 1 and "in use" in r.stderr
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert f"{qname}\tstale" in pysyncq_cli("list").stdout
    r = pysyncq_cli("clean")
    assert f"{qname}: removed" in r.stdout
    assert not shm_exists(qname)
    assert f"{qname}: no such queue" in pysyncq_cli("clean", qname).stdout
