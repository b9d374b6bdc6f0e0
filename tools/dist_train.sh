#!/usr/bin/env bash
# Data-parallel training on N local workers through MindSpore's launcher msrun:
#   bash tools/dist_train.sh CONFIG N [tools/train.py arguments...]
# Environment: MASTER_PORT (default random free-ish port 20000-39999), MASTER_ADDR (default
# 127.0.0.1), NNODES (default 1) and NODE_RANK (default 0) for multi-node runs where every node
# starts N workers (docs/distributed.md), MSRUN_LOG_DIR (default work_dirs/msrun_logs),
# CLUSTER_TIME_OUT (seconds to wait for all workers, default 600), MS_NODE_TIMEOUT (seconds without a
# heartbeat before MindSpore's scheduler gives a dead worker up, default here 10 instead of
# MindSpore's 30: msrun waits that long for the scheduler after a worker died).
# When a worker fails, the ranks whose logs end in a traceback are named on stderr ("rank 1 failed: ...").
# msrun is used on CPU, GPU and Ascend; mpirun fails on CPU ("Failed to initialize communication
# library on device side") and is documented for GPU clusters only.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash tools/dist_train.sh CONFIG NUM_WORKERS [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "dist_train.sh: NUM_WORKERS must be a positive integer, got '$NPROC'" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=${PYTHON:-python}
MSRUN=${MSRUN:-msrun}
if ! command -v "$MSRUN" >/dev/null 2>&1; then
    # msrun ships with the mindspore wheel, next to the interpreter.
    MSRUN="$(dirname "$(command -v "$PYTHON")")/msrun"
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-$((20000 + RANDOM % 20000))}
LOG_DIR=${MSRUN_LOG_DIR:-work_dirs/msrun_logs}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# msrun starts workers with the first `python` on PATH: make it the one running facekit.
export PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
export MS_NODE_TIMEOUT=${MS_NODE_TIMEOUT:-10}
mkdir -p "$LOG_DIR"
MARKER=$(mktemp "$LOG_DIR/.started.XXXXXX")
trap 'rm -f "$MARKER"' EXIT
status=0
"$MSRUN" --worker_num=$((NPROC * NNODES)) --local_worker_num="$NPROC" \
    --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" --node_rank="$NODE_RANK" \
    --log_dir="$LOG_DIR" --join=True --cluster_time_out="${CLUSTER_TIME_OUT:-600}" \
    "$ROOT/tools/train.py" "$CONFIG" "$@" || status=$?
if [ "$status" -ne 0 ]; then
    . "$ROOT/tools/msrun_failures.sh"
    report_failed_ranks "$LOG_DIR" "$MARKER"
    echo "dist_train.sh: msrun exited with status $status; worker logs: $LOG_DIR/worker_*.log" >&2
fi
exit "$status"
