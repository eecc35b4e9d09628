#!/usr/bin/env bash
# Everything GPU in one call (see bench/gpu_check.py): build engine._C for this GPU, run the
# `cuda` tests, the GPU benchmark rows and the rest of the suite, within one time budget.
#   bash bench/gpu_check.sh --out /tmp/gpu-check            # on a GPU machine
#   bash bench/gpu_check.sh --dry-run --out /tmp/plan        # anywhere: the plan and skip reasons
# $PYTHON: the interpreter that holds PyTorch (default: python3, else python).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-$(command -v python3 || command -v python || echo python3)}"
exec "$py" bench/gpu_check.py "$@"
