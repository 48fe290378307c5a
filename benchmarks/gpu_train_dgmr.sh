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
#   # real radar, as one zarr store per event (RMI 2021-07-04 too: it becomes the held-out set)
#   PYTHONPATH=$PWD .venv/bin/python - <<'EOF'
#   from xnowcast.training.pairs import load_rain_rate
#   for name, glob in {"mch-20150515": "radar/mch/20150515/*", "mch-20160711": "radar/mch/20160711/*",
#                      "rmi-20210704": "radar/rmi/radqpe/20210704/*"}.items():
#       da = load_rain_rate(f"../shared/data/{glob}")
#       da.to_dataset(name="precipitation").chunk({"time": 1}).to_zarr(
#           f".gpudata/{name}.zarr", mode="w", consolidated=False)
#   EOF
#
# and calls the device tool's run with carry [".whl", ".gpudata"], timeout_s 480 and
#
#   bash benchmarks/gpu_train_dgmr.sh
#
# (about 1 minute of set-up, 5 minutes of training, 1 of scoring: fits 8 minutes of device time).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
out="${OUT:-gpu-run}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
data=".gpudata/mch-20150515.zarr,.gpudata/mch-20160711.zarr,.gpudata/rmi-20210704.zarr"
# the paper's crop, batch and lead times on the `small` config, bf16 autocast, 5 minutes
python3 -m xnowcast.cli train dgmr --data "$data" --config small --devices 1 \
  --accelerator gpu --precision bf16-mixed --batch-size 16 --crop 256 \
  --max-time 00:05:00 --checkpoint-every 200 --out /tmp/dgmr-run --quiet 2>&1 | tee "$out/log.txt"
cp /tmp/dgmr-run/dgmr-small.safetensors /tmp/dgmr-run/run.json "$out/"
cp /tmp/dgmr-run/logs/csv/version_0/metrics.csv "$out/"
python3 - "$out" <<'EOF'
import json, sys
from xnowcast.weights import read_metadata
t = read_metadata(f"{sys.argv[1]}/dgmr-small.safetensors")["training"]
print(json.dumps({k: t[k] for k in ("steps", "world_size", "precision", "wall_time_s")}))
print(json.dumps(t["heldout_scores"], indent=1))
EOF
