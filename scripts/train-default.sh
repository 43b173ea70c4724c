#!/usr/bin/env bash
# Train fakescope's default EfficientNet member and export it into the package.
#
#   scripts/train-default.sh DFDC_FACES_DIR [cpu|cuda]
#
# The shipped model was trained with the cpu settings below (see docs/model-card.md); on
# a GPU the same command trains at full resolution for more epochs in minutes. Rerunning
# resumes each stage from its runs/<stage>/checkpoint.pt.
set -euo pipefail
data=${1:?usage: scripts/train-default.sh DFDC_FACES_DIR [cpu|cuda]}
device=${2:-cpu}
train=(fakescope train "$data/train" --val "$data/val" --arch efficientnet-lite0 --name efficientnet-lite0 --device "$device")
if [ "$device" = cuda ]; then
  "${train[@]}" --out runs/gpu --epochs 8 --epoch-size 32000 --batch-size 64 --image-size 224 --freeze 0 --workers 0
  final=runs/gpu
else
  # Two stages that fit a 2-core CPU: 2 short epochs at 160 px from ImageNet, then a
  # fine-tune at 192 px with a fresh schedule (about 20 img/s, 75 minutes on an idle machine).
  # The shipped model was trained with the per-image loader (--input stream).
  train+=(--input stream)
  "${train[@]}" --out runs/lite0 --epochs 2 --epoch-size 12000 --batch-size 32 --image-size 160 --freeze 3 --workers 1
  "${train[@]}" --out runs/lite0-ft192 --init runs/lite0/efficientnet-lite0.json --lr 3e-4 \
    --epochs 7 --epoch-size 12000 --batch-size 32 --image-size 192 --freeze 3 --workers 1
  final=runs/lite0-ft192
fi
fakescope evaluate "$data/val" --crops --model "$final/efficientnet-lite0.json" --out "$final/eval"
