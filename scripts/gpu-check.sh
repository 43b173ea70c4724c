#!/usr/bin/env bash
# Every GPU measurement the project keeps, in one command on a CUDA machine:
#
#   scripts/gpu-check.sh [PACK.safetensors]
#
# 1. the GPU's scores equal the CPU's within 1e-4 (tests/test_cuda.py: a video, a crop scan);
# 2. analyze against decoding the same video (benchmarks/bench_pipeline.py; goal <= 3);
# 3. scan of 2,000 face crops (benchmarks/bench_scan.py; goal >= 2,000 crops/s);
# 4. with a pack (`fakescope pack`), training throughput of both input paths
#    (benchmarks/bench_train.py; goal >= 5,000 img/s for Lite0 at 224 px).
# Each step prints its own lines; a failed step is reported and the others still run.
set -uo pipefail
pack=${1:-}
workers=$(( $(nproc) - 2 > 1 ? $(nproc) - 2 : 1 ))
failed=()
step() {
  echo "== $*"
  "$@" || failed+=("$1 $2")
}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: PyTorch sees no CUDA GPU')" || exit 2
# Everything the steps import, checked first: a missing package is one line, not a traceback.
if ! missing=$(python -c "import fakescope.pipeline, fakescope.scan, onnx2torch, av, pytest" 2>&1); then
  echo "error: ${missing##*$'\n'} (install the project's dependencies first)"
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
step python -m pytest -q -p no:cacheprovider tests/test_cuda.py
step python benchmarks/bench_pipeline.py --device cuda --repeats 3
step python benchmarks/bench_scan.py --device cuda --count 2000 --repeats 2
if [ -n "$pack" ]; then
  step python benchmarks/bench_train.py --device cuda --pack "$pack" --workers "$workers" \
    --batch-size 256 --steps 30 --model-steps 30
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}"
  exit 1
fi
