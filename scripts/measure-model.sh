#!/usr/bin/env bash
# The measures that decide whether a model ships (docs/model-card.md, the ledger), in one call:
#
#   scripts/measure-model.sh MODEL OUT [SHARED_DATA] [VIDEO_SET]
#
# MODEL is `default` or a model config; OUT gets every table. SHARED_DATA defaults to
# ../shared/data, VIDEO_SET to runs/select/ffpp-dev.safetensors (scripts/select_epoch.py
# --build makes it once).
set -euo pipefail
model=${1:?usage: scripts/measure-model.sh MODEL OUT [SHARED_DATA] [VIDEO_SET]}
out=${2:?usage: scripts/measure-model.sh MODEL OUT [SHARED_DATA] [VIDEO_SET]}
data=${3:-../shared/data}
set_file=${4:-runs/select/ffpp-dev.safetensors}
mkdir -p "$out"
# Full-frame videos as recorded, detection included; the decision cross-fitted by scene.
fakescope evaluate "$data/ffpp-dev" --model "$model" --out "$out/ffpp" | tee "$out/ffpp.txt"
python scripts/crossfit_decision.py "$out/ffpp/videos.csv" | tee "$out/ffpp-crossfit.txt"
# The same videos re-encoded (CRF 35 and 41, first 10 s), every face judged; per half of the
# scenes and all.
python scripts/select_epoch.py --set "$set_file" "$model" --out "$out/video-set" \
  | tee "$out/video-set.txt"
# Per-face AUC by H.264 QP and verdicts under each --max-qp: what the QP limit should be.
python benchmarks/bench_compression.py --set "$set_file" --model "$model" \
  | tee "$out/compression.txt"
# DFDC val crops, and the perturbation table on them.
fakescope evaluate "$data/dfdc-faces/val" --crops --model "$model" --out "$out/dfdc-val" \
  | tee "$out/dfdc-val.txt"
python benchmarks/bench_robustness.py --model "$model" --crops "$data/dfdc-faces/val" \
  --no-videos --out "$out/robustness.json" | tee "$out/robustness.txt"
