# Sourced by the gpu_train_*.sh device checks: the carried wheels (unless SKIP_WHEELS),
# unbuffered output, and $out (the folder that comes back), $py and gpu.txt.
if [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1
out="${OUT:-gpu-run}"
py="${PYTHON:-python3}"
mkdir -p "$out"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
fi
