#!/usr/bin/env bash
# The main job: set up .venv on first use, train the small CPU config on the bundled synthetic
# identities, then evaluate 10-fold verification on held-out identities and print the table.
# Extra arguments go to tools/train.py (e.g. --cfg-options train_cfg.max_epochs=1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec python tools/train.py configs/arcface/vit_synthetic_cpu.py "$@"
