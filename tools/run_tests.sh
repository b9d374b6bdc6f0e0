#!/usr/bin/env bash
# Set up .venv on first use, then run the whole test suite. Extra arguments go to pytest
# (e.g. `bash tools/run_tests.sh -m "not slow"` for the quick subset).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec python tools/run_tests.py "$@"
