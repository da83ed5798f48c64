"""The benchmark harness: processes, timing, deadlines, statistics, peers, trees, summaries.

Layering (each layer imports only from the ones below it; nothing imports
``run.py``)::

    run.py                     the command line: scenarios, rounds, A/B, tables, summaries
    echo.py fanout.py ...      one scenario each: its options, its worker body, its cells
    contenders/                the contenders, one class each (transports, meshes, arrays, ...)
    harness.py                 this module

Every (scenario, contender, round) runs in a fresh ``python <scenario>.py
--worker ...`` interpreter (a *worker*) whose ``PYTHONPATH`` starts with the
pysyncq that contender measures: the *tree* under test (this checkout, or
tree A or tree B of an A/B run), or ``benchmarks/.peers/pysyncq001`` for
pysyncq 0.0.1, then ``benchmarks/.peers/optional`` (faster-fifo, pyzmq: put
there by ``run.py --install-optional``, never dependencies of pysyncq).  The
worker forks its own children, and writes its *cells* (samples by variant and
size) to a JSON file that ``run.py`` pools over the rounds.

Every wait here has a deadline: children are joined with a timeout and then
terminated, a worker that overruns gets SIGTERM and then SIGKILL for its
whole process group, and leftover ``/dev/shm/pqbench_*`` entries are removed
and reported.
"""

import argparse
import faulthandler
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
PEERS = HERE / ".peers"
PQ001 = PEERS / "pysyncq001"
OPTIONAL = PEERS / "optional"
SHM = Path("/dev/shm")
#: Every shared-memory name a worker creates starts with this (plus its tag).
SHM_PREFIX = "pqbench_"
#: For APIs that want a finite timeout; nothing waits that long.
FOREVER = 3600.0
#: Seconds a tree's warm-up may take: a cold numba cache compiles every kernel
#: (30 s quiet, over a minute on a busy machine).
WARM_TIMEOUT = 900

# Message types of the protocol the star scenarios (echo, fanout) share.
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


class Skip(Exception):  # noqa: N818 - not an error: the contender cannot run here
    """Raised in a worker: this contender cannot run in this tree or on this
    machine (a missing method, module or program); reported, not a failure."""


# -- Statistics -------------------------------------------------------------------


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


def stats(xs):
    """What a summary keeps of a cell's samples: n, median, min, max, and the
    quartiles, p90 and p99 where there are enough samples for them to mean something."""
    s = {"n": len(xs), "median": median(xs), "min": min(xs), "max": max(xs)}
    if len(xs) >= 10:
        s.update(p25=quantile(xs, 0.25), p75=quantile(xs, 0.75))
    if len(xs) >= 50:
        s.update(p90=quantile(xs, 0.9), p99=quantile(xs, 0.99))
    return s


def _ranks(values):
    """Mid-ranks (1-based) of ``values``, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def rank_test(a, b):
    """Two-sided p-value of the Mann-Whitney U test that ``a`` and ``b`` come
    from one distribution: exact (counting every split of the ranks) when both
    are small and untied, else the normal approximation with tie correction."""
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        return float("nan")
    ranks = _ranks(list(a) + list(b))
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    tied = len(set(ranks)) < n1 + n2
    if n1 + n2 <= 40 and not tied:
        # ways[k][s]: subsets of size k of the ranks seen so far with U-sum s
        ways = [[0] * (n1 * n2 + 1) for _ in range(n1 + 1)]
        ways[0][0] = 1
        for i in range(n1 + n2):
            for k in range(min(i + 1, n1), 0, -1):
                shift = i - (k - 1)  # U contributed by putting element i at position k
                row, prev = ways[k], ways[k - 1]
                for s in range(n1 * n2, shift - 1, -1):
                    row[s] += prev[s - shift]
        total = math.comb(n1 + n2, n1)
        lo = min(u, n1 * n2 - u)
        tail = sum(ways[n1][: int(lo) + 1]) / total
        return min(1.0, 2 * tail)
    mu = n1 * n2 / 2
    counts = {}
    for r in ranks:
        counts[r] = counts.get(r, 0) + 1
    n = n1 + n2
    ties = sum(t**3 - t for t in counts.values())
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (abs(u - mu) - 0.5) / math.sqrt(var)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


# -- Trees and the environment of a worker --------------------------------------------


def is_tree(path):
    return (Path(path) / "pysyncq" / "__init__.py").is_file()


def worker_env(kind, tree, extra=None):
    """The environment of a worker for a contender whose ``pysyncq`` is
    ``kind`` ("tree", "0.0.1" or None) when the tree under test is ``tree``:
    that pysyncq first on ``PYTHONPATH`` (before whatever ``pip install -e``
    points at), then the optional peers, then the caller's ``PYTHONPATH``."""
    env = dict(os.environ)
    paths = [str(PQ001) if kind == "0.0.1" else str(tree)]
    if OPTIONAL.is_dir():
        paths.append(str(OPTIONAL))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONHASHSEED"] = "0"
    env.update(extra or {})
    return env


def probe(env, modules=()):
    """What an interpreter with ``env`` imports: ``{"pysyncq_file": ..., "modules":
    {module: None or the import error}}``."""
    code = (
        "import json, sys\n"
        "out = {'modules': {}}\n"
        "try:\n"
        "    import pysyncq; out['pysyncq_file'] = pysyncq.__file__\n"
        "except Exception as e:\n"
        "    out['pysyncq_file'] = None; out['error'] = repr(e)\n"
        f"for m in {list(modules)!r}:\n"
        "    try:\n"
        "        __import__(m); out['modules'][m] = None\n"
        "    except Exception as e:\n"
        "        out['modules'][m] = f'{type(e).__name__}: {e}'\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=str(HERE),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode:
        raise RuntimeError(f"probe failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def imports_from(info, root):
    f = info.get("pysyncq_file")
    return bool(f) and Path(f).resolve().is_relative_to(Path(root).resolve())


_WARM = """
import os, sys, time
t0 = time.perf_counter()
import numpy as np
import pysyncq
from pysyncq import PySyncQ
try:  # every kernel pysyncq calls, where the tree says which (pysyncq 0.1)
    try:
        from pysyncq import _load as _loader
        _loader.load_all()
    except AttributeError:  # trees before the kernels registry
        from pysyncq import _lifecycle as _loader
        _loader.load_all()
except (ImportError, AttributeError):
    pass
# Then every call the scenarios make, through the public API only, so that
# whatever a tree compiles lazily is compiled (and cached) now.
q = PySyncQ(None, size=1 << 20)
q.open("w", filtself=False)
q.append("t", "x"); q.pop()
q.append(b"t", b"x"); q.pop(True, 1.0, False)
a = np.arange(16.0)
if hasattr(q, "append_array"):
    q.append_array("a", a); q.pop(); q.append_array("a", a, True, 1.0); q.pop(decode=False)
if hasattr(q, "pop_view"):
    q.append_array("a", a)
    with q.pop_view(block=True, timer=1.0) as m:
        pass
if hasattr(q, "loan"):
    with q.loan("a", a.shape, a.dtype, block=True, timer=1.0) as buf:
        buf[...] = a
    q.pop()
if hasattr(q, "extend"):
    q.extend("d", [b"x"] * 10, True, 1.0); q.pop_many(4096, True, 1.0, False)
    q.extend("d", ["x"] * 10); q.pop_many(10)
pid = os.fork()  # what a process loads before its first fork
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
q.close()
print(f"{pysyncq.__file__} ready in {time.perf_counter() - t0:.1f} s")
"""


def warm(tree, timeout=WARM_TIMEOUT):
    """Make numba's cache of ``tree`` warm before anything is timed: compile
    (or load) every kernel of every call the scenarios make, in an interpreter
    of the tree's own environment.  Returns what it printed."""
    r = subprocess.run(
        [sys.executable, "-c", _WARM],
        env=worker_env("tree", tree),
        cwd=str(HERE),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode:
        raise RuntimeError(f"warm-up of {tree} failed:\n{r.stderr[-3000:]}")
    return r.stdout.strip()


# -- Installing the peers (never dependencies of pysyncq) ---------------------------------


def _pip_target(target, *pkgs, deps=True):
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    cmd += [] if deps else ["--no-deps"]
    cmd += ["--target", str(target), *pkgs]
    print("installing:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def ensure_pysyncq001():
    """pysyncq 0.0.1 under ``benchmarks/.peers/pysyncq001`` unless present."""
    if not (PQ001 / "pysyncq" / "pysyncq.py").is_file():
        _pip_target(PQ001, "pysyncq==0.0.1", deps=False)
    if not (PQ001 / "pysyncq" / "pysyncq.py").is_file():
        raise RuntimeError(f"pip did not install pysyncq 0.0.1 into {PQ001}")
    return PQ001


def install_optional(packages):
    """``packages`` (what the contenders' ``pip`` name) under
    ``benchmarks/.peers/optional``, and pysyncq 0.0.1 under ``.peers/pysyncq001``."""
    if packages:
        _pip_target(OPTIONAL, *sorted(packages))
    ensure_pysyncq001()


# -- The runner side: one worker interpreter per (scenario, contender, round) ----------


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
    """SIGTERM the worker (its handler unwinds its ``finally`` blocks), then
    SIGKILL its whole process group."""
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


def run_worker(script, contender, args, timeout, env, echo=True):
    """Run ``script --worker --contender C args`` in a child interpreter.

    Returns ``(result, error)``: the dict the worker wrote (plus ``leftovers``,
    the /dev/shm entries removed after it, and ``wall_s``), or a message if it
    failed, timed out or wrote nothing.  A worker that raised ``Skip`` writes
    ``{"skipped": why}``.
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
        env=env,
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
    new = sorted(n for n in shm_entries() - before if n.startswith(SHM_PREFIX))
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


# -- The worker side: children, barriers -----------------------------------------------


class Barrier:
    """Parent side of the ping/gc barrier of the star scenarios.

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


def ints(s):
    return [int(x) for x in str(s).split(",") if x]


def worker_main(scenario):
    """The ``main`` of a scenario file.

    As a worker (``--worker``, how ``run.py`` starts it): look up the
    contender's class, run ``scenario.work(cls, tag, args) -> {"cells": [...]}``
    with a SIGTERM handler that unwinds through its ``finally`` blocks and a
    traceback dump shortly before the runner's deadline, and write the JSON.
    By hand (``python benchmarks/echo.py ...``): hand over to ``run.py --only
    <scenario>`` in this process (``exec``; nothing imports the runner).
    """
    if "--worker" not in sys.argv[1:]:
        rest = getattr(scenario, "by_hand", lambda argv: ["--only", scenario.NAME, *argv])
        argv = rest(sys.argv[1:])
        os.execv(sys.executable, [sys.executable, str(HERE / "run.py"), *argv])
    p = argparse.ArgumentParser(description=(scenario.__doc__ or "").split("\n\n")[0])
    p.add_argument("--worker", action="store_true")
    p.add_argument("--contender", required=True)
    p.add_argument("--tag", default=str(os.getpid()))
    p.add_argument("--out")
    p.add_argument("--timeout", type=float, default=600)
    scenario.worker_options(p)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    faulthandler.dump_traceback_later(max(5.0, args.timeout - 15), exit=False)
    mp.set_start_method("fork", force=True)
    import contenders

    cls = contenders.get(scenario.ROLE, args.contender)
    result = {"contender": args.contender, "env": describe()}
    try:
        result.update(scenario.work(cls, args.tag, args))
        result["ok"] = True
    except Skip as e:
        result.update(skipped=str(e), ok=True)
    finally:
        faulthandler.cancel_dump_traceback_later()
        if args.out and result.get("ok"):
            with open(args.out, "w") as f:
                json.dump(result, f)
    return 0


def describe():
    """The worker's interpreter and the pysyncq it imports (if any)."""
    d = {"python": sys.version.split()[0], "implementation": platform.python_implementation()}
    try:
        import pysyncq

        d.update(
            pysyncq_file=pysyncq.__file__, pysyncq_version=getattr(pysyncq, "__version__", None)
        )
    except ImportError:
        d.update(pysyncq_file=None, pysyncq_version=None)
    for mod in ("numba", "numpy"):
        try:
            d[mod] = __import__(mod).__version__
        except ImportError:
            d[mod] = None
    return d


# -- Tables and summaries ------------------------------------------------------------


def fmt_size(n):
    if n is None:
        return ""
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


def fmt_val(x):
    if x != x:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}" if abs(x) >= 1 else f"{x:.3g}"


def git_state(tree):
    """The commit of ``tree`` and its modified files (None outside git)."""

    def git(*a):
        r = subprocess.run(["git", "-C", str(tree), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    return {
        "tree": str(tree),
        "commit": git("rev-parse", "HEAD"),
        "dirty": [ln for ln in (git("status", "--porcelain") or "").splitlines() if ln],
    }


def machine():
    """The machine a run was on, for a summary's header."""
    v = {"python": sys.version.split()[0]}
    for mod in ("numba", "numpy"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            v[mod] = None
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "versions": v,
    }


def result_path(folder, prefix, when=None):
    """``folder/<prefix-><date>-<time>-<host>.json``."""
    when = when or datetime.now()
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname().split(".")[0] or "host")[:24]
    return Path(folder) / f"{prefix + '-' if prefix else ''}{when:%Y%m%d-%H%M%S}-{host}.json"


def write_summary(doc, path, text=None):
    """Write the summary ``doc`` as JSON (one cell a line, so that a diff of
    two summaries reads), and the printed tables ``text`` beside it (.txt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = doc.get("cells")
    head = {k: v for k, v in doc.items() if k != "cells"}
    body = json.dumps(head, indent=1, ensure_ascii=False)
    if cells is not None:
        rows = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cells)
        body = body[:-2] + ',\n "cells": [\n' + rows + "\n ]\n}"
    path.write_text(body + "\n")
    if text is not None:
        path.with_suffix(".txt").write_text(text)
    return path
