#!/usr/bin/env bash
# Device call 2 of 2 (see prepare.sh), timeout_s 600: issue 13's Fashion-MNIST pipeline on the lent
# GPU in one command. Installs the carried wheels, runs benchmarks/fashion_pipeline.py --preset
# gpu-lease with its training steps fitted to FIT_MINUTES (4) by a probe, evaluates (with
# Inception FID when call 1 left the weights there), and puts everything that comes back into
# $OUT/fashion_lease.tar.gz: the results page, the eval folder, every run's log.jsonl and manifest.
# The pipeline stops at PIPELINE_SECONDS (540) so that what it made still comes back.
# A dry run on a CPU: DEVICE=cpu PRESET=smoke FIT_MINUTES=0.5 OUT=/tmp/lease bash benchmarks/device/fashion_lease.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/device/env.sh
preset=${PRESET:-gpu-lease}
work=$keep/bench-fashion-$preset
inception=()
if [ -f "$keep/inception.pt" ]; then
  inception=(--inception-weights "$keep/inception.pt" --fid)
else
  echo "fashion_lease.sh: no $keep/inception.pt (call 1, inception.sh, did not run on this machine): fashion-FD only"
fi

timeout "${PIPELINE_SECONDS:-540}" python3 benchmarks/fashion_pipeline.py --preset "$preset" --device "${DEVICE:-cuda}" \
  --data "fashion-mnist:$PWD/.device/fashion-mnist" --work "$work" --out "$keep/results" \
  --fit-minutes "${FIT_MINUTES:-4}" "${inception[@]}" > "$out/pipeline.log" 2>&1
rc=$?
echo "fashion_pipeline.py exit $rc after $SECONDS s"
tail -n 40 "$out/pipeline.log"
(cd "$keep" && tar czf "$out/fashion_lease.tar.gz" results $(find "${work#$keep/}" \( -name log.jsonl -o -name manifest.yaml -o -name recipe.json \) 2>/dev/null))
ls -la "$out"
exit $rc
