#!/usr/bin/env bash
# DGMR on one H200 through `xnowcast train` (Lightning, bf16-mixed): a prepared device check.
#
# Not run by CI.  A session lent an H200 prepares, on this machine, from the repo root:
#
#   echo /.whl/ >> .git/info/exclude; echo /.gpudata/ >> .git/info/exclude
#   # the packages of ci/constraints.txt the device image lacks (KINDS.md lists what it has):
#   # (what `import xnowcast` and the training path load, less the image's packages)
#   for p in dask distributed pint pint-xarray flexcache flexparser xbatcher xskillscore \
#            xhistogram properscoring cf_xarray cftime netCDF4 pyproj pooch platformdirs \
#            h5netcdf zarr numcodecs donfig google-crc32c partd locket zict tblib tornado \
#            lazy-importer; do
#     v=$(grep -i "^$p==" ci/constraints.txt | cut -d= -f3)
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl "$p==$v" || python3 -m pip download \
#       --no-deps -d .whl "$p==$v"
#   done
#   # real radar: the five 5-minute events as they are (about 26 MB; RMI 2021-07-04 becomes
#   # the held-out set), the same folder as gpu_train_cascast.sh
#   for e in mch/20150515 mch/20160711 fmi/pgm/20160928 KNMI/2010/08 rmi/radqpe/20210704; do
#     mkdir -p .gpudata/radar/$e && cp -r ../shared/data/radar/$e/. .gpudata/radar/$e/
#   done
#
# tries the whole script here first, on the CPU with the tiny config (a minute):
#
#   SKIP_WHEELS=1 PYTHON=.venv/bin/python PYTHONPATH=$PWD ACCELERATOR=cpu PRECISION=32 \
#     CONFIG=tiny BATCH=1 CROP=128 MAX_TIME=00:00:30 OUT=/tmp/gpu-try RUN_DIR=/tmp/gpu-try-run \
#     bash benchmarks/gpu_train_dgmr.sh
#
# and calls the device tool's run with carry [".whl", ".gpudata"], timeout_s 480 and
#
#   bash benchmarks/gpu_train_dgmr.sh
#
# (about 1 minute of set-up, 5 minutes of training, 1 of scoring: fits 8 minutes of device time).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_setup.sh"
run="${RUN_DIR:-/tmp/dgmr-run}"
config="${CONFIG:-small}"
r=.gpudata/radar
data="$r/mch/20150515,$r/mch/20160711,$r/fmi/pgm/20160928,$r/KNMI/2010/08,$r/rmi/radqpe/20210704"
# the paper's crop, batch and lead times on the `small` config, bf16 autocast, 5 minutes
"$py" -m xnowcast.cli train dgmr --data "$data" --config "$config" --devices 1 \
  --accelerator "${ACCELERATOR:-gpu}" --precision "${PRECISION:-bf16-mixed}" \
  --batch-size "${BATCH:-16}" --crop "${CROP:-256}" --max-time "${MAX_TIME:-00:05:00}" \
  --checkpoint-every 200 --out "$run" --quiet 2>&1 | tee "$out/log.txt"
cp "$run/dgmr-$config.safetensors" "$run/run.json" "$out/"
cp "$run/logs/csv/version_0/metrics.csv" "$out/"
"$py" - "$out" "$config" <<'EOF'
import json, sys
from xnowcast.weights import read_metadata
t = read_metadata(f"{sys.argv[1]}/dgmr-{sys.argv[2]}.safetensors")["training"]
print(json.dumps({k: t[k] for k in ("steps", "world_size", "precision", "wall_time_s")}))
print(json.dumps(t["heldout_scores"], indent=1))
EOF
