#!/usr/bin/env bash
# Train fakescope's default EfficientNet member and export it into the package.
#
#   scripts/train-default.sh DFDC_FACES_DIR [cpu|cuda]
#
# On the 2-core CPU machine the shipped model was trained with the cpu settings below
# (see docs/model-card.md); on a GPU the same command trains at full resolution for more
# epochs in minutes. Rerunning resumes from runs/<name>/checkpoint.pt.
set -euo pipefail
data=${1:?usage: scripts/train-default.sh DFDC_FACES_DIR [cpu|cuda]}
device=${2:-cpu}
if [ "$device" = cuda ]; then
  settings=(--epochs 8 --epoch-size 32000 --batch-size 64 --image-size 224 --freeze 0 --workers 8)
  name=efficientnet-lite0-gpu
else
  settings=(--epochs 2 --epoch-size 12000 --batch-size 32 --image-size 160 --freeze 3 --workers 1)
  name=efficientnet-lite0
fi
fakescope train "$data/train" --val "$data/val" --out "runs/$name" --arch efficientnet-lite0 \
  --name efficientnet-lite0 --device "$device" "${settings[@]}"
fakescope evaluate "$data/val" --crops --model "runs/$name/efficientnet-lite0.json" --out "runs/$name/eval"
