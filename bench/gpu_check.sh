#!/usr/bin/env bash
# Everything GPU in one call (see bench/gpu_check.py and bench/README.md): build engine._C for
# this GPU, run the `cuda` tests and the GPU benchmark rows within one time budget (480 s by
# default); the rest of the suite does not fit that budget and runs on a second call.
#   bash bench/gpu_check.sh --out /tmp/gpu-check            # on a GPU machine
#   bash bench/gpu_check.sh --only pytest_rest --out /tmp/gpu-check-rest   # second call (build: already built)
#   bash bench/gpu_check.sh --dry-run --out /tmp/plan        # anywhere: the plan and skip reasons
# Exit status: 0 ok, 1 a step failed, 2 usage or no GPU, 3 the GPU part did not run (gpu_check.py).
# $PYTHON: the interpreter that holds PyTorch (default: python3, else python).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-$(command -v python3 || command -v python || echo python3)}"
exec "$py" bench/gpu_check.py "$@"
