#!/usr/bin/env bash
# The one-GPU check (about 5 minutes): CUDA tests, 20 AMP training iterations of the full model,
# the GPU benchmark against torchvision, then one summary table. Arguments go to
# dev/gpu_check.py (--output DIR, --stages, --train-iters, --repeats, --timeout).
# Without CUDA it reports every stage as skipped and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python dev/gpu_check.py "$@"
