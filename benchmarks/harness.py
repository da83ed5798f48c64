"""The benchmark harness: processes, timing and statistics.  Nothing else.

Layering (no module imports one above it; nothing imports ``run.py``)::

    run.py                    the command line: which scenarios, rounds, tables, JSON
    echo.py fanout.py         one scenario each: a worker body, its arguments,
    alltoall.py               its table rows
    contenders.py             the transports, as plain classes
    harness.py                this module: workers, children, barriers, stats

Every (scenario, contender) pair runs in a fresh ``python <scenario>.py
--worker ...`` interpreter (a *worker*) that forks its own children and
writes its raw samples to a JSON file.  The ``pysyncq`` worker gets this
checkout first on ``PYTHONPATH`` (whatever ``pip install -e`` points at);
the ``pysyncq-0.0.1`` worker gets ``benchmarks/.peers/pysyncq001`` instead.
The optional peers (faster-fifo, pyzmq) come from ``benchmarks/.peers/optional``
(``run.py --install-optional``), never from the project's dependencies.

Every wait here has a deadline: children are joined with a timeout and
terminated, a worker that overruns gets SIGTERM and then SIGKILL for its
whole process group, and leftover ``/dev/shm/pqbench_*`` entries are removed
and reported.
"""

import argparse
import faulthandler
import gc
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / ".peers"
PQ001 = PEERS / "pysyncq001"
OPTIONAL = PEERS / "optional"
SHM = Path("/dev/shm")
#: Every shared-memory name a worker creates starts with this (plus a tag).
SHM_PREFIX = "pqbench_"
BASELINE = "pysyncq"
PQ001_NAME = "pysyncq-0.0.1"
#: Module each optional contender needs.
OPTIONAL_MODULES = {"faster-fifo": "faster_fifo", "pyzmq": "zmq"}
#: For APIs that want a finite timeout; nothing waits that long.
FOREVER = 3600.0

# Message types of the protocol the scenarios share.
DATA, ECHO, PING, GC, READY, START, DONE, KILL = (
    b"data",
    b"echo",
    b"ping",
    b"gc",
    b"ready",
    b"start",
    b"done",
    b"kill",
)
#: Types only the parent reads; children screen them where the queue can.
TO_PARENT = (ECHO, READY, DONE)


# -- Statistics ---------------------------------------------------------------


def quantile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(xs):
    return quantile(xs, 0.5)


# -- The runner side: one worker interpreter per (scenario, contender) ---------


def _pip_target(target, *pkgs, deps=True):
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    cmd += [] if deps else ["--no-deps"]
    cmd += ["--target", str(target), *pkgs]
    print("installing:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def ensure_pysyncq001():
    """Install pysyncq 0.0.1 under ``benchmarks/.peers/pysyncq001`` unless present."""
    if not (PQ001 / "pysyncq" / "pysyncq.py").is_file():
        _pip_target(PQ001, "pysyncq==0.0.1", deps=False)
    if not (PQ001 / "pysyncq" / "pysyncq.py").is_file():
        raise RuntimeError(f"pip did not install pysyncq 0.0.1 into {PQ001}")
    return PQ001


def install_optional():
    """faster-fifo and pyzmq under ``benchmarks/.peers/optional`` (never as dependencies)."""
    _pip_target(OPTIONAL, "faster-fifo", "pyzmq")
    ensure_pysyncq001()


def contender_env(contender):
    """The environment a worker for ``contender`` runs in."""
    env = dict(os.environ)
    paths = [str(PQ001) if contender == PQ001_NAME else str(REPO)]
    if OPTIONAL.is_dir():
        paths.append(str(OPTIONAL))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONHASHSEED"] = "0"
    return env


def probe(contender):
    """What the worker environment of ``contender`` imports: the pysyncq file
    and which optional modules import (the dict ``harness.py --probe`` prints)."""
    out = subprocess.run(
        [sys.executable, str(HERE / "harness.py"), "--probe"],
        env=contender_env(contender),
        cwd=str(HERE),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode:
        raise RuntimeError(f"probe for {contender} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _probe_here():
    import pysyncq

    optional = {}
    for mod in OPTIONAL_MODULES.values():
        try:
            __import__(mod)
            optional[mod] = None
        except Exception as e:  # noqa: BLE001
            optional[mod] = f"{type(e).__name__}: {e}"
    return {"pysyncq_file": pysyncq.__file__, "optional": optional}


def available(names):
    """``(runnable, skipped)``: the contenders of ``names`` that can run here,
    in the given order; ``skipped`` maps the others to the reason."""
    skipped, ok = {}, []
    ours = probe(BASELINE)
    for c in names:
        if c == BASELINE and not ours["pysyncq_file"].startswith(str(REPO)):
            skipped[c] = f"import pysyncq resolved to {ours['pysyncq_file']}, not {REPO}"
            continue
        if c == PQ001_NAME:
            try:
                ensure_pysyncq001()
                info = probe(c)
            except Exception as e:  # noqa: BLE001 - report it, keep the others
                skipped[c] = f"cannot install/import pysyncq 0.0.1: {e}"
                continue
            if not info["pysyncq_file"].startswith(str(PQ001)):
                skipped[c] = f"import pysyncq resolved to {info['pysyncq_file']}"
                continue
        elif c in OPTIONAL_MODULES:
            err = ours["optional"].get(OPTIONAL_MODULES[c])
            if err:
                skipped[c] = f"not importable ({err}); try run.py --install-optional"
                continue
        ok.append(c)
    return ok, skipped


def shm_entries():
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


def remove_shm(tag):
    """Unlink leftover ``/dev/shm`` entries of worker ``tag``; return their names."""
    gone = []
    for name in sorted(shm_entries()):
        if name.startswith(f"{SHM_PREFIX}{tag}"):
            try:
                os.unlink(SHM / name)
                gone.append(name)
            except OSError:
                pass
    return gone


def _kill_group(proc, grace=5.0):
    """SIGTERM the worker (its handler cleans up), then SIGKILL its whole group."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _relay(stream, lines, echo):
    for line in stream:
        lines.append(line)
        if echo:
            sys.stderr.write(line)
            sys.stderr.flush()
    stream.close()


def run_worker(script, contender, args, timeout, echo=True):
    """Run ``script --worker --contender C args`` in a child interpreter.

    Returns ``(result, error)``: the dict the worker wrote (plus ``leftovers``,
    the /dev/shm entries removed after it, and ``wall_s``), or a message if it
    failed, timed out or wrote nothing.
    """
    tag = f"{os.getpid()}_{int(time.monotonic() * 1000) % 10**8}"
    fd, out_path = tempfile.mkstemp(prefix="pqbench-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(script), "--worker", "--contender", contender, "--tag", tag]
    cmd += ["--out", out_path, "--timeout", str(timeout), *map(str, args)]
    before = shm_entries()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=contender_env(contender),
        cwd=str(HERE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines = []
    reader = threading.Thread(target=_relay, args=(proc.stderr, lines, echo), daemon=True)
    reader.start()
    error = None
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        error = f"timed out after {timeout} s and was killed"
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        reader.join(10)
    wall = time.perf_counter() - t0
    stderr = "".join(lines)
    if error is None and proc.returncode:
        error = f"exited with status {proc.returncode}"
    leftovers = remove_shm(tag)
    new = sorted(shm_entries() - before)
    try:
        text = Path(out_path).read_text()
        result = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        result = None
    finally:
        try:
            os.unlink(out_path)
        except OSError:
            pass
    if error is None and result is None:
        error = "wrote no result"
    if error is not None:
        tail = "\n".join((stderr or "").strip().splitlines()[-40:])
        return result, f"{contender}: worker {error}\n  cmd: {' '.join(cmd)}\n{tail}"
    result.update(leftovers=leftovers, new_shm_entries=new, wall_s=wall)
    if stderr.strip():
        result["stderr"] = stderr[-4000:]
    return result, None


# -- The worker side: children, barriers ----------------------------------------


class Barrier:
    """Parent side of the ping/gc barrier.

    The parent sends ``PING`` or ``GC`` with a sequence number; every child
    answers ``READY`` with ``b"seq child count"`` where ``count`` is how many
    ``DATA`` messages it received since the previous barrier (then resets it).
    Answers to older barriers are ignored.
    """

    def __init__(self, transport, nchildren):
        self.t = transport
        self.k = nchildren
        self.seq = 0

    def __call__(self, kind=GC, repeat=False):
        self.seq += 1
        tag = b"%d" % self.seq
        t = self.t
        counts = {}
        t.send(kind, tag)
        if kind == GC:
            gc.collect()
        while len(counts) < self.k:
            if repeat:  # pyzmq's slow joiners: resend until all have answered
                while not t.poll(50):
                    t.send(kind, tag)
            typ, body = t.recv()
            if typ != READY:
                continue
            seq, child, count = bytes(body).split()
            if seq == tag:
                counts[int(child)] = int(count)
        return [counts[i] for i in range(self.k)]


def answer_barrier(transport, typ, body, i, count):
    if typ == GC:
        gc.collect()
    transport.send(READY, b"%s %d %d" % (bytes(body), i, count))


def child_setup(transport, i):
    """First thing in a forked child: default SIGTERM, gc off, open the transport."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.disable()
    transport.child_open(i)


def start_children(target, args_of, n):
    """Fork ``n`` children running ``target(*args_of(i))``."""
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=target, args=args_of(i), name=f"child-{i}", daemon=True)
        for i in range(n)
    ]
    for p in procs:
        p.start()
    return procs


def join_children(procs, timeout):
    """Join each child within ``timeout`` s in all; terminate, then kill the stuck.

    Returns the names of children that had to be terminated or killed.
    """
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    stuck = []
    for p in procs:
        if p.is_alive():
            stuck.append(p.name)
            p.terminate()
            p.join(3)
        if p.is_alive():
            p.kill()
            p.join(3)
    return stuck


def stop_children(transport, procs, clean):
    """Ask the children to leave (``transport.send_kill()``), then join them."""
    if clean:
        try:
            transport.send_kill()
        except Exception as e:  # noqa: BLE001 - the joins below still run
            print(f"could not send kill: {e!r}", file=sys.stderr)
    return join_children(procs, 10 if clean else 0.5)


class Terminated(BaseException):
    pass


def _on_sigterm(signum, frame):
    raise Terminated()


def worker_parser(doc):
    """An argument parser with the options every worker takes."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--contender", help=argparse.SUPPRESS)
    p.add_argument("--tag", default=str(os.getpid()), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=600, help=argparse.SUPPRESS)
    return p


def worker_main(parser, name, body, argv=None):
    """The ``main`` of a scenario script.

    As a worker (``--worker``, how ``run.py`` starts it): run
    ``body(contender, tag, args) -> dict`` with a SIGTERM handler that unwinds
    through its ``finally`` blocks and a traceback dump shortly before the
    runner's timeout, and write the JSON.  By hand: hand over to ``run.py``
    in a new process (nothing imports the runner).
    """
    args, _ = parser.parse_known_args(argv)
    if not args.worker:
        rest = list(sys.argv[1:] if argv is None else argv)
        os.execv(sys.executable, [sys.executable, str(HERE / "run.py"), "--only", name, *rest])
    signal.signal(signal.SIGTERM, _on_sigterm)
    faulthandler.dump_traceback_later(max(5.0, args.timeout - 15), exit=False)
    mp.set_start_method("fork", force=True)
    result = {"contender": args.contender, "env": describe()}
    try:
        result.update(body(args.contender, args.tag, args))
        result["ok"] = True
    finally:
        faulthandler.cancel_dump_traceback_later()
        if args.out and result.get("ok"):
            with open(args.out, "w") as f:
                json.dump(result, f)
    return 0


def describe():
    import pysyncq

    d = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "pysyncq_file": pysyncq.__file__,
        "pysyncq_version": getattr(pysyncq, "__version__", None),
    }
    for mod in ("numba", "numpy"):
        try:
            d[mod] = __import__(mod).__version__
        except ImportError:
            d[mod] = None
    return d


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(_probe_here()))
    else:
        sys.exit("usage: harness.py --probe")
