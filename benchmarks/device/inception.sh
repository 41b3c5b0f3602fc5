#!/usr/bin/env bash
# Device call 1 of 2 (see prepare.sh): unpack the carried fp16 TF-Inception into an fp32 TorchScript
# file that `--inception-weights` takes, outside the checkout so that call 2 finds it while the
# machine is still held. Takes seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
keep=${GDISTILL_DEVICE_DIR:-$HOME/gdistill-device}  # as env.sh (which would also install wheels this call does not carry)
mkdir -p "$keep"
python3 - .device/inception/inception_fp16.pt.xz "$keep/inception.pt" <<'PY'
import io, lzma, sys, torch
with lzma.open(sys.argv[1]) as packed:  # python's lzma: the image need not have xz
    net = torch.jit.load(io.BytesIO(packed.read()), map_location="cpu").float()
torch.jit.save(net, sys.argv[2])
device = "cuda" if torch.cuda.is_available() else "cpu"
with torch.inference_mode():
    features = torch.jit.load(sys.argv[2]).to(device)(torch.zeros(2, 3, 299, 299, device=device))
print(f"inception.pt: {sum(p.numel() for p in net.parameters())} weights, features {tuple(features.shape)} on {device}")
PY
ls -la "$keep"
