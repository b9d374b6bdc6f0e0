#!/usr/bin/env bash
# Evaluate a checkpoint with N processes on this machine (MindSpore's msrun launcher).
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT N [tools/test.py options ...]
#
# Each rank embeds every N-th batch of images; the embeddings are summed across ranks
# (each row comes from exactly one rank), so rank 0 computes exactly the single-process
# numbers and writes the table, JSON and plots. Environment: PORT (scheduler port, default
# random in 20000-39999), LOG_DIR (worker logs, default work_dirs/dist_test_logs), PYTHON.
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT N [tools/test.py options ...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "N must be a positive integer, got '$NPROC'" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# msrun starts each worker as `python SCRIPT`: put the interpreter that has facekit first on PATH.
if [ -n "${PYTHON:-}" ]; then
    PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PATH="$ROOT/.venv/bin:$PATH"
fi
export PATH
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX2}"
PORT="${PORT:-$((20000 + RANDOM % 20000))}"
LOG_DIR="${LOG_DIR:-work_dirs/dist_test_logs}"

if [ "$NPROC" -eq 1 ]; then
    exec python "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" "$@"
fi

# a dead worker is given up after MS_NODE_TIMEOUT s without a heartbeat (MindSpore's default 30)
export MS_NODE_TIMEOUT="${MS_NODE_TIMEOUT:-10}"
mkdir -p "$LOG_DIR"
MARKER=$(mktemp "$LOG_DIR/.started.XXXXXX")
trap 'rm -f "$MARKER"' EXIT
status=0
msrun --worker_num="$NPROC" --local_worker_num="$NPROC" --master_port="$PORT" --join=True \
    --log_dir="$LOG_DIR" "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" "$@" >/dev/null 2>&1 || status=$?
# rank 0 holds the report; MindSpore's own WARNING/INFO lines are left in the log file
grep -v -E '^\[(WARNING|INFO|DEBUG)\]' "$LOG_DIR/worker_0.log" || true
if [ "$status" -ne 0 ]; then
    . "$ROOT/tools/msrun_failures.sh"
    report_failed_ranks "$LOG_DIR" "$MARKER"
    echo "msrun exited with status $status; worker logs: $LOG_DIR/worker_*.log" >&2
fi
exit "$status"
