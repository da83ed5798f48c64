#!/bin/bash
# Issue 9's many-core figures in one run: fanout 64 B with 1, 4 and 15 readers,
# echo with 8 processes (the seed's benchmark setting), then the standard
# scenarios, each against the peers of its target, side by side.
#
#   bash benchmarks/scaling.sh [OUTDIR] [SCALE] [STEP...]
#
# OUTDIR receives the JSON files (default benchmarks/results); SCALE
# multiplies messages per sample (default 1; 0.1 for a smoke run).  STEPs
# (default: scaling): `scaling` (fanout 64 B to 1, 4 and 15 readers; echo
# with 8 processes), `standard` (run.py's default scenarios, 2 rounds),
# `alltoall` (3 peers, pysyncq one call per message and with batch calls),
# `arrays` (arrays.py at 8 MiB and its batches), `cold` (coldstart.py).  Each step
# is bounded by `timeout`, so a stuck step costs its bound, not the run.
set -u
OUT=${1:-benchmarks/results}
SCALE=${2:-1}
shift 2 2>/dev/null
STEPS=" ${*:-scaling} "
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
run() { timeout "$1" "$PY" benchmarks/run.py --scale "$SCALE" --out "$OUT" "${@:2}"; }

echo "== machine"
nproc
uname -r
"$PY" -c "import os, sys, numba, numpy; print(sys.version.split()[0], 'numba', numba.__version__, 'numpy', numpy.__version__, 'cpus', len(os.sched_getaffinity(0)))"
cat /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>&1
grep -E ' /dev/shm ' /proc/mounts
uptime

echo "== compile every kernel once (numba's cache is cold on a fresh machine)"
time "$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); import harness; print(harness.warm(harness.REPO))"

if [[ $STEPS == *" scaling "* ]]; then
    echo "== fanout 64 B, 1, 4 and 15 readers"
    run 240 --only fanout,pysyncq,pyzmq,Pipe --readers 1,4,15 --fanout-sizes 64
    echo "== echo, 8 processes (parent + 7 children)"
    run 150 --only echo,pysyncq,Pipe --children 7 --sizes 16,1024
fi
if [[ $STEPS == *" standard "* ]]; then
    echo "== the standard scenarios against their target peers"
    run 240 --only echo,fanout,alltoall,pysyncq,Pipe,pyzmq,copy-ring --rounds 2
fi
if [[ $STEPS == *" alltoall "* ]]; then
    echo "== all-to-all, 3 peers"
    run 120 --only alltoall,pysyncq,pysyncq-batch,pyzmq,Pipe
fi
if [[ $STEPS == *" arrays "* ]]; then
    echo "== arrays at 8 MiB (loan + pop_view against memcpy), and batches"
    timeout 150 "$PY" benchmarks/arrays.py --sizes 8388608 --readers 1,3 --scale "$SCALE" \
        --only "pysyncq,pysyncq loan,pyzmq,memcpy,memcpy shm,batches" --out "$OUT"
fi
if [[ $STEPS == *" cold "* ]]; then
    echo "== start and exit of a process that uses pysyncq"
    timeout 180 "$PY" benchmarks/run.py --only coldstart --rounds 5 --out "$OUT"
fi
uptime
