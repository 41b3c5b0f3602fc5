# Sourced by the device scripts: where things are kept on the lent machine between calls, what
# comes back, and the carried wheels installed (once per machine) for the packages its image lacks.
keep=${GDISTILL_DEVICE_DIR:-$HOME/gdistill-device}
out=${OUT:-$keep/out}
mkdir -p "$keep" "$out"
export PYTHONUNBUFFERED=1
if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
