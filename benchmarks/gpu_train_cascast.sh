#!/usr/bin/env bash
# CasCast's `medium` denoiser (2.4 M parameters, 12x `small`) on one H200: a prepared device check.
#
# Not run by CI.  Why: on these CPUs the `small` denoiser learns where the rain goes but its
# members stay too smooth (issue 15; RESULTS 15f: member power at 4-16 km 0.2-0.3 of the radar's
# after 4 CPU-hours), which is what a larger denoiser trained on many more crops should fix.
# It starts from the shipped autoencoder (inside cascast-small.safetensors) and trains a new
# `medium` denoiser, RMI held out, with the recipe of the shipped weights (v-prediction,
# dihedral augmentation, moving average 0.999) at batch 16 of 128 px crops.
#
# A session lent an H200 prepares, on this machine, from the repo root (wheels: as in
# gpu_train_dgmr.sh, the packages `import xnowcast` needs that the image lacks):
#
#   echo /.gpudata/ >> .git/info/exclude
#   for e in mch/20150515 mch/20160711 fmi/pgm/20160928 KNMI/2010/08 rmi/radqpe/20210704; do
#     mkdir -p .gpudata/radar/$e && cp -r ../shared/data/radar/$e/. .gpudata/radar/$e/
#   done                                                      # about 26 MB
#
# tries the whole script here first, on the CPU with the `small` denoiser (a minute):
#
#   SKIP_WHEELS=1 PYTHON=.venv/bin/python PYTHONPATH=$PWD DEVICE=cpu CONFIG=small BATCH=2 \
#     CROP=64 TRAIN_SECONDS=20 OUT=/tmp/gpu-try RUN_DIR=/tmp/gpu-try-run \
#     bash benchmarks/gpu_train_cascast.sh
#
# and then calls the device tool's run with carry [".whl", ".gpudata"], timeout_s 540 and
#
#   bash benchmarks/gpu_train_cascast.sh
#
# (set-up under a minute, TRAIN_SECONDS of training (default 360), a minute of scoring).
# Back in $OUT: cascast-medium.safetensors (recipe, steps, wall time, curve and scores in its
# metadata), log.txt, summary.json, gpu.txt.  Score it here with
#   python benchmarks/cascast_skill_card.py --data-root ../shared/data --weights FILE ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_setup.sh"
export TQDM_MININTERVAL=15
run="${RUN_DIR:-/tmp/cascast-run}"
"$py" -m xnowcast.training.cascast --data-root .gpudata --out "$run" \
  --config "${CONFIG:-medium}" --autoencoder xnowcast/weights/cascast-small.safetensors \
  --device "${DEVICE:-cuda}" --time-budget "${TRAIN_SECONDS:-360}" \
  --batch-size "${BATCH:-16}" --crop "${CROP:-128}" --lr 3e-4 --ema-decay 0.999 \
  --val-every 200 2>&1 | tee "$out/log.txt"
cp "$run/cascast.safetensors" "$out/cascast-${CONFIG:-medium}.safetensors"
"$py" - "$out" "${CONFIG:-medium}" <<'EOF'
import json
import sys

from xnowcast.weights import read_metadata

out, config = sys.argv[1], sys.argv[2]
meta = read_metadata(f"{out}/cascast-{config}.safetensors")
t = meta["training"]
summary = {k: t.get(k) for k in ("steps", "wall_time_s", "cpu_time_s", "device", "batch_size",
                                 "crop", "parameters_trained", "cpu_time_lineage_s")}
summary["curve"] = t["curve"]
summary["scores"] = meta["scores"]
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print(json.dumps({k: v for k, v in summary.items() if k != "curve"}, indent=1))
print("held-out loss:", [(c["step"], c["val_loss"]) for c in t["curve"]][-6:])
EOF
