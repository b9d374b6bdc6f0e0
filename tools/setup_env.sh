#!/usr/bin/env bash
# Create .venv (first use only) and install facekit with its test extras into it.
# Sourced by tools/demo.sh and tools/run_tests.sh; safe to run again (it re-installs only
# when setup.cfg changed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "[facekit] creating $ROOT/.venv with $($PY --version)"
    "$PY" -m venv "$ROOT/.venv"
fi
STAMP="$ROOT/.venv/.facekit-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/setup.cfg" -nt "$STAMP" ]; then
    echo "[facekit] installing facekit and its dependencies into .venv (first run takes ~1-2 min)"
    "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip
    "$ROOT/.venv/bin/python" -m pip install -q -e "$ROOT[dev,onnx,tensorboard]"
    touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
