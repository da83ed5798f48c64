"""Make the contenders available and run each benchmark in a child interpreter.

Every contender is measured the same way: a fresh ``python <script> --worker
...`` process (a *worker*) that forks its own children and writes its raw
samples to a JSON file.  The only difference between the ``pysyncq`` and the
``pysyncq-0.0.1`` workers is the environment: the latter gets
``PYTHONPATH=benchmarks/.peers/pysyncq001`` so that ``import pysyncq`` there
resolves to the pure-Python 0.0.1 release instead of this checkout.

The optional contenders (faster-fifo, pyzmq) are used only if the worker can
import them.  To try them without touching your environment::

    pip install --target benchmarks/.peers/optional faster-fifo pyzmq

(``run.py --install-optional`` does the same); that folder is put on every
worker's ``PYTHONPATH`` when it exists.
"""

import json
import os
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

#: Contender names, in table order.  The first is the baseline of the ratios.
BASELINE = "pysyncq"
PQ001_NAME = "pysyncq-0.0.1"
CONTENDERS = [BASELINE, PQ001_NAME, "mp.Queue", "faster-fifo", "pyzmq"]
#: Module each optional contender needs.
OPTIONAL_MODULES = {"faster-fifo": "faster_fifo", "pyzmq": "zmq"}


def ensure_pysyncq001(quiet=False):
    """Install pysyncq 0.0.1 under ``benchmarks/.peers/pysyncq001`` unless present."""
    if (PQ001 / "pysyncq" / "pysyncq.py").is_file():
        return PQ001
    PQ001.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--disable-pip-version-check",
        "--target",
        str(PQ001),
        "pysyncq==0.0.1",
    ]
    if not quiet:
        print("installing pysyncq 0.0.1:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if quiet else None)
    if not (PQ001 / "pysyncq" / "pysyncq.py").is_file():
        raise RuntimeError(f"pip did not install pysyncq 0.0.1 into {PQ001}")
    return PQ001


def install_optional():
    """Install faster-fifo and pyzmq under ``benchmarks/.peers/optional``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--target",
        str(OPTIONAL),
        "faster-fifo",
        "pyzmq",
    ]
    print("installing optional contenders:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def contender_env(contender):
    """The environment a worker for ``contender`` runs in."""
    env = dict(os.environ)
    paths = []
    if contender == PQ001_NAME:
        paths.append(str(PQ001))
    if OPTIONAL.is_dir():
        paths.append(str(OPTIONAL))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    env["PYTHONHASHSEED"] = "0"
    return env


def probe(contender):
    """What the worker environment of ``contender`` can import.

    Returns the dict printed by ``contenders.py --probe``: the pysyncq file
    and version seen there, and which optional modules import.
    """
    out = subprocess.run(
        [sys.executable, str(HERE / "contenders.py"), "--probe"],
        env=contender_env(contender),
        cwd=str(HERE),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode:
        raise RuntimeError(f"probe for {contender} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def available_contenders(wanted=None):
    """``(names, skipped)``: the contenders that can run here, in table order.

    ``skipped`` maps a contender that cannot run to the reason.
    """
    wanted = list(CONTENDERS) if wanted is None else list(wanted)
    skipped = {}
    names = []
    ours = probe(BASELINE)
    for c in wanted:
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
                skipped[c] = f"not importable ({err})"
                continue
        names.append(c)
    return names, skipped


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
    """Keep the worker's stderr (and show it as it comes when ``echo``)."""
    for line in stream:
        lines.append(line)
        if echo:
            sys.stderr.write(line)
            sys.stderr.flush()
    stream.close()


def run_worker(script, contender, args, timeout, tag=None, echo=True):
    """Run ``script --worker --contender C args`` in a child interpreter.

    Returns ``(result, error)``: the dict the worker wrote (with ``leftovers``,
    the /dev/shm entries that had to be removed after it, and ``wall_s``), or
    None and a message if it failed, timed out or wrote nothing.
    """
    tag = tag or f"{os.getpid()}_{int(time.monotonic() * 1000) % 10**8}"
    fd, out_path = tempfile.mkstemp(prefix="pqbench-", suffix=".json")
    os.close(fd)
    cmd = [
        sys.executable,
        str(script),
        "--worker",
        "--contender",
        contender,
        "--tag",
        tag,
        "--out",
        out_path,
        "--timeout",
        str(timeout),
        *map(str, args),
    ]
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
    result["leftovers"] = leftovers
    result["new_shm_entries"] = new
    result["wall_s"] = wall
    if stderr.strip():
        result["stderr"] = stderr[-4000:]
    return result, None
