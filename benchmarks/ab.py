"""A/B: the same benchmark against two checkouts of pysyncq, interleaved.

    python benchmarks/ab.py --a /path/to/main --b . --rounds 3 arrays \\
        --only "pysyncq,pysyncq loan,pyzmq,mp.Queue,memcpy" --sizes 1048576,8388608
    python benchmarks/ab.py --a /path/to/main --b . --rounds 3 fanout --readers 1,2

Both sides run *this* checkout's benchmark scripts; only ``import pysyncq``
differs (``PYTHONPATH``: the checkout first, then ``benchmarks/.peers/optional``).
Every round runs A then B, or B then A on odd rounds, so that a burst of load
lands on both.  ``arrays``: ``arrays.py --repeats 1 --no-batches`` per side and
round (peers, memcpy included, are run on both sides and pooled).  ``fanout``:
one ``fanout.py --worker`` per (side, R) for pysyncq and for ``copy-ring`` at
1 MiB.  Prints medians with min - max per row and the B/A ratio of medians.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPTIONAL = HERE / ".peers" / "optional"


def env_for(tree):
    env = dict(os.environ)
    paths = [str(Path(tree).resolve())]
    if OPTIONAL.is_dir():
        paths.append(str(OPTIONAL))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONHASHSEED"] = "0"
    return env


def run_arrays(tree, rest):
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, str(HERE / "arrays.py"), "--repeats", "1", "--no-batches"]
        cmd += ["--out", d, *rest]
        env = dict(env_for(tree), PYSYNCQ_CHECKOUT=str(Path(tree).resolve()))
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        (path,) = Path(d).glob("*.json")
        doc = json.loads(path.read_text())
    return {k: r["mb_per_s"] for k, r in doc["arrays"].items() if "error" not in r}


def run_fanout(tree, readers, size, scale):
    """As ``run.py --only fanout`` runs a worker (messages and warm-up)."""
    sys.path.insert(0, str(HERE))
    import fanout

    out = {}
    for contender in ("pysyncq", "copy-ring"):
        m = fanout.messages_for(max(2, int(fanout.MESSAGES[contender] * scale)), size)
        for k in readers:
            fd, path = tempfile.mkstemp(suffix=".json")
            os.close(fd)
            cmd = [sys.executable, str(HERE / "fanout.py"), "--worker", "--contender", contender]
            cmd += ["--out", path, "--readers", str(k), "--sizes", str(size), "--m", str(m)]
            cmd += ["--samples", "3", "--warmup", str(min(fanout.WARMUP, m))]
            try:
                subprocess.run(cmd, env=env_for(tree), cwd=HERE, check=True, timeout=300)
                res = json.loads(Path(path).read_text())["results"][str(size)]
            finally:
                os.unlink(path)
            out[f"{contender}|{size}|R={k}"] = res["msgs_per_s"]
    return out


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="checkout A (e.g. main)")
    p.add_argument("--b", required=True, help="checkout B (e.g. this branch)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--readers", default="1,2", help="fanout: reader counts")
    p.add_argument("--scale", type=float, default=1.0, help="fanout: as run.py's --scale")
    p.add_argument("what", choices=["arrays", "fanout"])
    o, rest = p.parse_known_args()
    sides = {"A": o.a, "B": o.b}
    pooled = {"A": {}, "B": {}}
    for r in range(o.rounds):
        for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
            tree = sides[side]
            if o.what == "arrays":
                got = run_arrays(tree, rest)
            else:
                got = run_fanout(tree, [int(x) for x in o.readers.split(",")], 1 << 20, o.scale)
            for key, xs in got.items():
                pooled[side].setdefault(key, []).extend(xs)
            print(f"round {r + 1} {side} done", file=sys.stderr)
    print(f"A = {o.a}, B = {o.b}, {o.rounds} rounds, load {os.getloadavg()[0]:.2f}")
    unit = "MB/s per reader" if o.what == "arrays" else "msg/s per reader"
    print(f"| row | A median ({unit}) | A min - max | B median | B min - max | B/A |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in pooled["A"]:
        a, b = pooled["A"][key], pooled["B"].get(key, [])
        if not b:
            continue
        print(
            f"| {key} | {median(a):,.0f} | {min(a):,.0f} - {max(a):,.0f} | {median(b):,.0f} "
            f"| {min(b):,.0f} - {max(b):,.0f} | {median(b) / median(a):.2f}x |"
        )
    print(json.dumps(pooled))


if __name__ == "__main__":
    main()
