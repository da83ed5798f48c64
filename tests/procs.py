"""Starting and reaping test processes so that no test can hang.

Workers are top-level functions (so every start method can run them) that
report failure through their exit code: ``raise SystemExit("why")`` exits with
1 and prints why, since an ``assert`` in a child never fails the parent's test.
"""

import multiprocessing as mp
import os
import signal
import time


class ProcPool:
    def __init__(self):
        self.procs = []

    def start(self, target, *args, method="fork", daemon=True):
        p = mp.get_context(method).Process(target=target, args=args, daemon=daemon)
        p.start()
        self.procs.append(p)
        return p

    def join(self, procs=None, timeout=60):
        """Join ``procs`` (default all) within ``timeout`` s in all; fail unless
        every one exited 0."""
        procs = self.procs if procs is None else procs
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        stuck = [p for p in procs if p.exitcode is None]
        bad = [(p.name, p.exitcode) for p in procs if p.exitcode not in (0, None)]
        assert not stuck, f"processes still running after {timeout} s: {[p.name for p in stuck]}"
        assert not bad, f"processes failed (name, exit code): {bad}"

    def reap(self):
        """terminate -> join(deadline) -> kill -> close, for whatever is left."""
        for p in self.procs:
            if p.exitcode is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.exitcode is None:
                p.kill()
                p.join(5)
        for p in self.procs:
            if p.exitcode is not None:
                p.close()
        self.procs = []


def kill(p):
    """SIGKILL process ``p``: it dies at whatever instruction it is at."""
    os.kill(p.pid, signal.SIGKILL)


def wait_dead(p, timeout=30):
    """Wait for a killed process to end *without* reaping it: it stays a zombie,
    which pysyncq must recognise as dead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{p.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.005)
    raise AssertionError(f"process {p.pid} did not die")
