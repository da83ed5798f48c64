"""Starting and ending processes: what a process loads, and how it exits.

* Kernels are loaded on their first call, from numba's cache, without numba's
  compiler setup (:mod:`pysyncq._load`); a cold cache has the core family
  compiled by ``warm_up``, every other family at the first call of one of its
  kernels; a process that forks readies the core family first, so forked
  children load and compile nothing for what every member does.
* A process started by multiprocessing skips the final garbage collection
  (:mod:`pysyncq._exit`) and still does everything it must at exit.

Whole programs run in fresh interpreters (``run``), with this checkout first
on ``PYTHONPATH`` so that they and their spawned children import the pysyncq
under test (and then ``tests/``, for ``introspect``).
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import introspect
import numpy as np
import pytest
from conftest import shm_exists

import pysyncq
from pysyncq import PySyncQ, kernels
from pysyncq.kernels import _jit

TREE = Path(pysyncq.__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
WAIT = 120  # seconds a whole program may take (a cold cache compiles for 20-40 s)

#: What a process that opens, appends, pops and closes may load: the hot pair,
#: open, close, the creator's format and the member scan of close and reaping.
BASIC = {"ring_format", "header_check", "op_open", "op_append", "op_pop", "op_leave", "members"}


def run(tmp_path, body, *args, env=None, timeout=WAIT, stderr=""):
    """Run ``body`` as a script in a fresh interpreter; return its stdout.
    Its stderr must be ``stderr`` (a compiled regex: match it)."""
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(body))
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join((str(TREE), str(TESTS))), **(env or {}))
    r = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=environ,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    if isinstance(stderr, str):
        assert r.stderr == stderr
    else:
        assert stderr.fullmatch(r.stderr), r.stderr
    return r.stdout


def loaded_now():
    """``{kernel name: number of overloads}`` of this process."""
    return {n: len(d.overloads) for n, d in vars(kernels).items() if introspect.is_kernel(d)}


# -- The registry of kernel signatures (pysyncq.kernels._jit) -------------------


def test_importing_pysyncq_imports_neither_asyncio_nor_redis(tmp_path):
    """The asyncio twins and the Redis bridge cost nothing to a program that
    does not use them: import pysyncq, make and use a queue, and neither
    asyncio nor redis is loaded."""
    out = run(
        tmp_path,
        """
        import sys
        import pysyncq
        q = pysyncq.PySyncQ(None)
        q.open("me", filtself=False)
        q.append("t", "x")
        assert q.pop() == ("me", "t", "x")
        q.close()
        print(sorted(m for m in ("asyncio", "redis") if m in sys.modules))
        """,
    )
    assert out.strip() == "[]"


def test_the_registry_holds_the_packages_kernels_with_samples_of_the_real_types(qname):
    for name, _ in introspect.kernel_calls():
        assert getattr(kernels, name) is _jit.KERNELS[name].dispatcher
        assert introspect.is_kernel(getattr(kernels, name))
    hot = {k.name for k in _jit.KERNELS.values() if k.hot}
    assert hot == {"op_append", "op_pop", "op_append_array", "op_extend", "op_pop_many"}
    # The samples stand for the segment, the screen table and the buffers.
    q = PySyncQ(qname, size=4096)
    q.open("me")
    real = (introspect.mem(q), introspect.screen_table([b"s"], [b"t"]), introspect.copy_buffer(q))
    real += (introspect.words(q),)
    samples = (_jit.SEGMENT, _jit.SCREEN, _jit.BUFFER, _jit.WORDS)
    assert introspect.kernel_signature(real) == introspect.kernel_signature(samples)
    q.close()


EVERY_OPERATION = """
import asyncio, json, multiprocessing as mp, os, subprocess, sys
import numpy as np
import pysyncq
import introspect
from pysyncq import PySyncQ, kernels
from pysyncq.kernels import _jit
from pysyncq.layout import H_LOCK

def overloads():
    disps = {n: d for n, d in vars(kernels).items() if hasattr(d, "overloads")}
    disps.update((k.name, k.dispatcher) for k in _jit.KERNELS.values())
    return sorted([n, str(sig)] for n, d in disps.items() for sig in d.overloads)

def misses():
    return sum(sum(k.dispatcher.stats.cache_misses.values()) for k in _jit.KERNELS.values())

def dead_token():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    token = introspect.token_of(p.pid)
    p.kill()
    p.wait(60)
    return token

def join_and_die(q, sender, durable):
    q.open(sender, durable=durable)
    os._exit(0)  # no close: its slot is left for the others to reap or adopt

async def aio(q):
    await q.aappend("t", "async")
    await q.aappend_array("a", np.arange(3.0))
    return [await q.apop(timer=5), await q.apop(timer=5)]

if __name__ == "__main__":
    q = PySyncQ(sys.argv[1], size=1 << 20)
    q.open("me", filtself=False)
    q.append("s", "text")
    q.append(b"b", memoryview(b"bytes"))
    q.append("big", b"x" * (q.copy_outside + 8))
    q.append_array("a", np.arange(6.0).reshape(2, 3))
    q.append_array("ro", np.frombuffer(b"12345678", np.uint8))
    q.extend("e", ["one", b"two", 3])
    q.extend("e", [b"same"] * 3)
    with q.loan("loan", (4,), np.int32) as arr:
        arr[:] = 7
    assert q.pop()[2] == "text"
    with q.pop_view() as m:
        assert bytes(m[2]) == b"bytes"
    assert len(q.pop_many(3)) == 3
    records, nxt = introspect.read_ahead(q, 10)
    introspect.commit_to(q, nxt, len(records))
    assert q.pop(block=True, timer=0.05) is None
    assert len(asyncio.run(aio(q))) == 2
    q.stats()
    introspect.words(q)[H_LOCK] = dead_token()  # held by a process that died: stolen
    q.append("t", "after the steal", block=True, timer=5)
    for sender, durable in (("gone", False), ("relay", True)):
        p = mp.get_context("fork").Process(target=join_and_die, args=(q, sender, durable))
        p.start()
        p.join(60)
    relay = PySyncQ(sys.argv[1], create=False).open("relay", durable=True)  # adopted
    q.wait_for_readers(1, timer=5)
    assert [n for n, _ in pysyncq.list_queues() if n == sys.argv[1]]
    relay.close()
    q.close()  # reaps "gone"
    print(json.dumps({"overloads": overloads(), "misses": misses()}))
"""


def test_every_kernel_python_calls_is_in_the_registry(tmp_path, qname):
    """What a process that runs every operation loads is registered (where
    each kernel is defined: ``@kernel``), so that its family holds it and a
    miss compiles what it needs."""
    run(tmp_path, WARM_THE_CACHE)
    seen = json.loads(run(tmp_path, EVERY_OPERATION, qname))
    registered = {
        (name, str(introspect.kernel_signature(args))) for name, args in introspect.kernel_calls()
    }
    assert {tuple(o) for o in seen["overloads"]} <= registered
    assert seen["misses"] == 0
    assert not shm_exists(qname)


@pytest.mark.parametrize(("name", "args"), introspect.kernel_calls())
def test_loading_gives_the_overload_numba_dispatches_to(name, args):
    disp = getattr(kernels, name)
    sig = tuple(disp.typeof_pyval(a) for a in args)  # what numba's dispatcher sees
    assert introspect.kernel_signature(args) == sig
    entry = introspect.load_kernel(disp, args)
    assert entry is disp.overloads[sig].entry_point
    assert introspect.loaded_kernel(disp, args) is entry


def test_signature_tells_readonly_and_layout_apart():
    a = np.zeros((4, 8), np.uint8)
    ro = np.frombuffer(b"12345678", np.uint8)
    for arr in (a, a.T, a[:, 1], ro, a.view(np.int64), np.zeros(3, ">i4")):
        assert introspect.kernel_signature((arr,)) == (kernels.members.typeof_pyval(arr),)


def test_a_kernel_called_with_a_wrong_type_raises_and_the_process_lives():
    """Such a call is not in the cache: it goes on to numba's own path, which
    refuses it (a typing error, or a lowering error for some intrinsics)."""
    from numba.core.errors import TypingError

    mem = np.zeros(4096, np.uint8)
    with pytest.raises(TypingError):
        kernels.members("not an array")
    with pytest.raises(TypingError):
        kernels.op_pop(mem, 1.5, 0, None, mem, 0)
    with pytest.raises(Exception):  # noqa: B017 - whichever numba raises
        kernels.seq_load(mem, "not an index")
    assert kernels.seq_load(np.zeros(4096, np.uint8), 0) == 0


def test_the_hot_path_takes_every_kind_of_argument(qname, monkeypatch):
    """append and pop call their kernels' entry points directly (``FAST``):
    whatever a caller passes, the kernel gets bytes and ints."""
    introspect.forget_array_warning(monkeypatch)  # once per process
    q = PySyncQ(qname, size=4096)
    assert introspect.fast_entry("op_append") is not kernels.op_append
    q.open("me", filtself=False)
    bodies = ["text", b"raw", bytearray(b"ba"), memoryview(b"mv"), 12, None, 1.5, ""]
    for body in bodies:
        q.append(b"type-bytes", body)
        q.append("type-str", body)
    with pytest.warns(UserWarning, match="append_array"):
        q.append("arr", np.arange(3))
    got = list(q)
    assert len(got) == 2 * len(bodies) + 1
    assert got[2] == ("me", "type-bytes", "raw")
    assert got[6] == ("me", "type-bytes", "mv")
    assert got[8] == ("me", "type-bytes", "12")
    assert q.pop(decode=False) is None
    q.close()


# -- What a process loads -------------------------------------------------------

WARM_THE_CACHE = """
import introspect
introspect.compile_all()  # compiles into numba's cache whatever it lacks
"""

ONLY_WHAT_IT_USES = """
import json, multiprocessing as mp, sys
from pysyncq import PySyncQ, kernels

def report():
    return {
        "loaded": sorted(n for n, d in vars(kernels).items() if getattr(d, "overloads", None)),
        "numba_setup": "numba.np.arraymath" in sys.modules,
        "scipy_linalg": "scipy.linalg" in sys.modules,
        "misses": sum(sum(d.stats.cache_misses.values())
                      for d in vars(kernels).values() if hasattr(d, "stats")),
    }

def child(q, out):
    q.open("child")
    q.append("t", "from child")
    m = q.pop(block=True, timer=60)
    q.close()
    with open(out, "w") as f:
        json.dump(dict(report(), popped=m), f)

if __name__ == "__main__":
    q = PySyncQ(sys.argv[1], size=4096)
    q.open("parent")
    p = mp.get_context(sys.argv[2]).Process(target=child, args=(q, "child.json"))
    p.start()
    assert q.pop(block=True, timer=60) == ("child", "t", "from child")
    q.append("t", "from parent")
    p.join(60)
    assert p.exitcode == 0, p.exitcode
    q.close()
    print(json.dumps(report()))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_process_loads_only_the_kernels_it_uses_without_numbas_setup(tmp_path, qname, method):
    run(tmp_path, WARM_THE_CACHE)
    parent = json.loads(run(tmp_path, ONLY_WHAT_IT_USES, qname, method))
    child = json.loads((tmp_path / "child.json").read_text())
    assert child["popped"] == ["parent", "t", "from parent"]
    for who in (parent, child):
        # (a blocking pop spins, then sleeps: spin_for and futex_wait)
        waits = {"set_waiting", "seq_load", "lock_prepare_wait", "spin_for", "futex_wait"}
        assert set(who["loaded"]) <= BASIC | waits
        assert not who["numba_setup"], "numba's compiler setup ran"
        assert not who["scipy_linalg"]
        assert who["misses"] == 0
    assert not shm_exists(qname)


FORKED_CHILD = """
import multiprocessing as mp, sys
import numpy as np
from pysyncq import PySyncQ, kernels

def overloads():
    return {(n, sig) for n, d in vars(kernels).items()
            for sig in getattr(d, "overloads", {})}

def child(q):
    before = overloads()
    q.open("child", filtself=False)
    q.append("s", "text")
    q.append(b"b", b"bytes")
    assert q.pop()[2] == "text"
    assert q.pop(block=True, timer=1)[2] == "bytes"
    assert q.pop(block=True, timer=0.01) is None
    new = overloads() - before
    if new:
        raise SystemExit(f"the forked child loaded {sorted(new)} for what every member does")
    # Other families: loaded by the child itself, from the cache.
    q.append("big", b"x" * (q.copy_outside + 8))
    q.append_array("a", np.arange(6.0).reshape(2, 3))
    q.append_array("ro", np.frombuffer(b"12345678", np.uint8))
    q.extend("e", ["one", b"two", 3])
    with q.loan("loan", (4,), np.int32) as arr:
        arr[:] = 7
    with q.pop_view() as m:
        assert bytes(m[2]) == b"x" * (q.copy_outside + 8)
    assert len(q.pop_many(10)) == 6
    q.stats()
    q.close()
    if not overloads() - before:
        raise SystemExit("the forked child loaded no family of its own")

if __name__ == "__main__":
    q = PySyncQ(sys.argv[1], size=1 << 20)
    q.open("parent", reader=False)
    lazy = {n for n, _ in overloads()}
    if "op_extend" in lazy or "op_pop_many" in lazy:
        raise SystemExit(f"the parent loaded {sorted(lazy)} before forking")
    p = mp.get_context("fork").Process(target=child, args=(q,))
    p.start()
    p.join(60)
    q.close()
    raise SystemExit(p.exitcode)
"""


def test_a_forked_child_loads_nothing_for_what_every_member_does(tmp_path, qname):
    run(tmp_path, WARM_THE_CACHE)
    run(tmp_path, FORKED_CHILD, qname)
    assert not shm_exists(qname)


COLD_CACHE_BOOKKEEPING = """
import json, sys
from numba.core.dispatcher import Dispatcher
import introspect
from pysyncq import kernels
from pysyncq.kernels import _jit

asked = []
def compile(self, sig):  # stands in for numba's compiler: records, compiles nothing
    asked.append([self.py_func.__name__, str(sig)])
    return lambda *args: 0
Dispatcher.compile = compile
introspect.warm_up()
report = {"warm_up": asked[:]}
for name in sys.argv[1:]:  # then a first call of each of these, with its sample
    del asked[:]
    getattr(kernels, name)(*_jit.KERNELS[name].calls[0])
    report[name] = asked[:]
print(json.dumps(report))
"""


COMPILING = re.compile(r"pysyncq: compiling its numba kernels for first use \(about \d+ s.*\n")


def signatures(calls):
    return {(name, str(introspect.kernel_signature(args))) for name, args in calls}


def test_every_registered_signature_is_in_a_kernel_family():
    families = introspect.kernel_families()
    assert "core" in families
    every = set().union(*map(signatures, families.values()))
    assert every == signatures(introspect.kernel_calls())
    # Two families share a kernel only where one's pins are let go by the other.
    shared = set()
    for a in families:
        for b in families:
            if a < b:
                shared |= {n for n, _ in signatures(families[a]) & signatures(families[b])}
    assert shared == {"pin_set"}


def test_with_a_cold_cache_warm_up_compiles_the_core_family_and_a_miss_its_family(tmp_path):
    # ... and says so once on stderr (issue 18: 30 s of silence before).
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {"NUMBA_CACHE_DIR": str(cache), "PYSYNCQ_COMPILE_JOBS": "1"}
    calls = ["op_reserve", "op_extend", "pin_set", "op_append"]
    asked = json.loads(run(tmp_path, COLD_CACHE_BOOKKEEPING, *calls, env=env, stderr=COMPILING))
    asked = {k: set(map(tuple, v)) for k, v in asked.items()}
    families = {f: signatures(c) for f, c in introspect.kernel_families().items()}
    assert asked["warm_up"] == families["core"]
    # (the stand-in compiles nothing: numba's own path then asks for the call's
    # signature again, and the core family's op_append stays a miss)
    assert asked["op_reserve"] == families["loan"]
    assert asked["op_extend"] == families["extend"]
    # pin_set is in the loan family (ready) and the view family (compiled now)
    assert asked["pin_set"] == families["view"]
    assert asked["op_append"] == signatures([("op_append", _jit.KERNELS["op_append"].calls[0])])


def test_the_compiling_notice_can_be_silenced(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {"NUMBA_CACHE_DIR": str(cache), "PYSYNCQ_QUIET": "1", "PYSYNCQ_COMPILE_JOBS": "1"}
    run(tmp_path, COLD_CACHE_BOOKKEEPING, env=env)  # stderr must be empty


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn"])
def test_a_cold_cache_is_filled_once_and_then_only_loaded(tmp_path, qname, method):
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {"NUMBA_CACHE_DIR": str(cache)}
    parent = json.loads(
        run(tmp_path, ONLY_WHAT_IT_USES, qname, method, env=env, timeout=300, stderr=COMPILING)
    )
    child = json.loads((tmp_path / "child.json").read_text())
    assert parent["misses"] > 0  # the parent compiled (the core family, in warm_up)
    core = {n for n, _ in introspect.kernel_families()["core"]}
    assert set(parent["loaded"]) >= core
    assert child["misses"] == 0 and not child["numba_setup"]


FIRST_USE = """
import json, sys
import numpy as np
import pysyncq
import introspect
from pysyncq.kernels import _jit

def compiled():
    # the registered signatures numba compiled in this process (its misses)
    return sorted(
        [k.name, str(sig)] for k in _jit.KERNELS.values()
        for sig, n in k.dispatcher.stats.cache_misses.items() if n
    )

q = pysyncq.PySyncQ(None, size=1 << 20)
q.open("a", filtself=False)
q.append("t", "x")
assert q.pop() == ("a", "t", "x")
report = {"basic": compiled(), "ready": sorted(introspect.families_ready())}
with q.loan("l", (4,), np.int32) as arr:
    arr[:] = 7
assert (q.pop()[2] == 7).all()
q.close()
report["loan"] = compiled()
report["ready_after"] = sorted(introspect.families_ready())
print(json.dumps(report))
"""


def first_use(tmp_path, jobs, script=FIRST_USE):
    """Run ``script`` (``FIRST_USE``) on an empty cache with the core family
    compiled in ``jobs`` processes: its report, the signatures of each
    family, and a function that keeps the registered ones of a report's list."""
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {"NUMBA_CACHE_DIR": str(cache), "PYSYNCQ_COMPILE_JOBS": str(jobs)}
    out = json.loads(run(tmp_path, script, env=env, timeout=300, stderr=COMPILING))
    families = {f: signatures(c) for f, c in introspect.kernel_families().items()}
    registered = signatures(introspect.kernel_calls())
    return out, families, lambda listed: {tuple(c) for c in listed} & registered


def test_a_first_use_compiles_the_core_family_then_a_loan_the_loan_family(tmp_path):
    """With an empty cache, a process that creates, opens, appends, pops and
    closes compiles the core family only (the notice says so once); its
    first loan then compiles the loan family, silently (it is short).  In
    this process alone (``PYSYNCQ_COMPILE_JOBS=1``): see the next test."""
    out, families, compiled = first_use(tmp_path, jobs=1)
    assert compiled(out["basic"]) == families["core"]
    assert out["ready"] == ["core"]
    assert compiled(out["loan"]) == families["core"] | families["loan"]
    assert out["ready_after"] == ["core", "loan"]


def test_a_first_use_compiles_the_core_family_on_two_cpus(tmp_path):
    """By default a helper process compiles part of the core family into the
    cache meanwhile (issue 18: first use under 10 s on 2 cores): this process
    compiles only the rest, and has the whole family afterwards."""
    out, families, compiled = first_use(tmp_path, jobs=2)
    here = compiled(out["basic"])
    assert here < families["core"]  # some of it compiled elsewhere...
    assert {n for n, _ in here} >= {"op_append"} and "op_pop" not in {n for n, _ in here}
    assert out["ready"] == ["core"]  # ...and loaded from the cache here


@pytest.mark.slow
def test_a_helper_that_fails_leaves_the_compiling_to_this_process(tmp_path):
    """The helper compiles nothing (its interpreter fails at once): this
    process compiles the whole core family itself and works."""
    script = 'import sys; sys.executable = "/bin/false"\n' + FIRST_USE
    out, families, compiled = first_use(tmp_path, jobs=2, script=script)
    assert compiled(out["basic"]) == families["core"]


# -- Exit -------------------------------------------------------------------------

EXIT_DUTIES = """
import atexit, gc, os, sys

def report(tag, _open=open, _pid=os.getpid, _frozen=gc.get_freeze_count):
    # late in shutdown, module globals and builtins may be gone: bound now
    with _open(f"{tag}-{_pid()}", "w") as f:
        f.write(str(_frozen()))

atexit.register(report, "last")  # registered before pysyncq's hook: runs after it

import multiprocessing as mp, weakref
from pysyncq import PySyncQ

class Cycle:
    def __init__(self):
        self.me = self
    def __del__(self, _report=report):
        _report("del")

class Kept:
    pass

def child(q):
    q.open("child")  # never closed: its finalizer must give the slot back
    q.append("t", "hi")
    atexit.register(report, "user-atexit")
    sys.modules[__name__].kept = kept = Kept()  # alive at exit
    weakref.finalize(kept, report, "finalize")
    sys.modules[__name__].cycle = Cycle()  # alive at exit, in a cycle

if __name__ == "__main__":
    q = PySyncQ(sys.argv[1], size=4096)
    q.open("parent")
    p = mp.get_context(sys.argv[2]).Process(target=child, args=(q,))
    p.start()
    assert q.pop(block=True, timer=60) == ("child", "t", "hi")
    p.join(60)
    assert p.exitcode == 0, p.exitcode
    members = [r.name for r in q.stats().members]
    assert members == ["parent"], members
    print(p.pid, os.getpid())
    q.close()
"""


def read_marks(tmp_path, pid):
    marks = {}
    for f in tmp_path.glob(f"*-{pid}"):
        marks[f.name.rsplit("-", 1)[0]] = int(f.read_text())
    return marks


def test_a_spawned_child_skips_the_final_gc_and_still_does_its_exit_duties(tmp_path, qname):
    # (forkserver children, like forked ones, end with os._exit: no atexit at all)
    child, parent = map(int, run(tmp_path, EXIT_DUTIES, qname, "spawn").split())
    marks = read_marks(tmp_path, child)
    assert "user-atexit" in marks and "finalize" in marks
    assert marks["last"] > 0, "the child did not freeze"
    assert "del" not in marks  # the documented price: a live cycle is not finalized
    # the main process keeps its final collection unless asked
    assert read_marks(tmp_path, parent) == {"last": 0}
    assert not shm_exists(qname)


def test_fast_exit_can_be_turned_off_for_the_children(tmp_path, qname):
    env = {introspect.FAST_EXIT_ENV: "0"}
    child, _ = map(int, run(tmp_path, EXIT_DUTIES, qname, "spawn", env=env).split())
    marks = read_marks(tmp_path, child)
    assert marks["last"] == 0 and "del" in marks and "user-atexit" in marks


def test_fast_exit_can_be_turned_on_in_the_main_process(tmp_path, qname):
    env = {introspect.FAST_EXIT_ENV: "1"}
    child, parent = map(int, run(tmp_path, EXIT_DUTIES, qname, "spawn", env=env).split())
    assert read_marks(tmp_path, parent)["last"] > 0
    assert read_marks(tmp_path, child)["last"] > 0


FOLLOWERS = """
import multiprocessing as mp, sys
import pysyncq
from pysyncq import PySyncQ, QueueClosed

def follower(q, started):
    q.open("f", follow=True)
    started.set()
    try:
        q.pop(block=True, timer=None)
    except QueueClosed:
        return
    raise SystemExit("pop returned")

if __name__ == "__main__":
    assert pysyncq.fast_exit(True) is False
    q = PySyncQ(sys.argv[1])
    q.open("parent")
    started = mp.get_context("spawn").Event()
    p = mp.get_context("spawn").Process(target=follower, args=(q, started))
    p.start()
    assert started.wait(60)
    # no close, no join: at exit the creator lets go, and multiprocessing joins p
"""


def test_a_creator_exiting_quickly_still_stops_its_followers(tmp_path, qname):
    run(tmp_path, FOLLOWERS, qname)
    assert not shm_exists(qname)


def test_fast_exit_takes_a_bool():
    with pytest.raises(TypeError):
        pysyncq.fast_exit("no")
    before = pysyncq.fast_exit(False)
    try:
        assert pysyncq.fast_exit(True) is False
        assert introspect.fast_exit_now()
    finally:
        introspect.reset_fast_exit()
    assert introspect.fast_exit_now() is before is False  # pytest is no multiprocessing child
