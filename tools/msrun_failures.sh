# Sourced by tools/dist_train.sh and tools/dist_test.sh after msrun exits non-zero.
# msrun's own summary blames whichever node the scheduler timed out, not the worker that raised:
# name, from the worker logs, each rank that ended with a Python traceback, first to stop first.
#   report_failed_ranks LOG_DIR MARKER    (MARKER: a file created before msrun started; older logs
#                                           are left from earlier runs and are ignored)
report_failed_ranks() {
    local log_dir=$1 marker=$2 found=0 log rank error
    for log in $(ls -tr "$log_dir"/worker_*.log 2>/dev/null); do
        [ "$log" -nt "$marker" ] || continue
        grep -q '^Traceback (most recent call last)' "$log" || continue
        rank=${log##*/worker_}
        rank=${rank%.log}
        error=$(grep -E '^[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Interrupt|Exit)(:|$)' "$log" | tail -n 1)
        echo "rank $rank failed: ${error:-see the traceback} (worker log $log)" >&2
        found=1
    done
    if [ "$found" -eq 0 ]; then
        echo "no worker log under $log_dir holds a Python traceback: a worker was killed (signal, out of memory?)" >&2
    fi
}
