#!/usr/bin/env bash
# Any benchmark on the lent machine, e.g. a third call while it is still held (carry [".device/whl"]):
#   bash benchmarks/device/bench.sh python3 benchmarks/sampling_speed.py --device cuda --compile reduce-overhead
# Runs the command and returns the files it wrote under benchmarks/results/ as $OUT/results.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/device/env.sh
touch "$keep/started"
"$@"
rc=$?
find benchmarks/results -type f -newer "$keep/started" -print0 | tar czf "$out/results.tar.gz" --null -T -
tar tzf "$out/results.tar.gz"
exit $rc
