#!/usr/bin/env bash
# Edit and inpaint real digits with a 4-step student (about a minute on 2 CPU cores once the student
# exists: run examples/digits.sh or the README's main job first, or set RUN to any digits run).
# Writes inputs and results to $OUT and a strip per task, upscaled 8x, for viewing.
set -euo pipefail
RUN=${RUN:-runs/pd/round-6}
OUT=${OUT:-runs/edit-inpaint}
mkdir -p "$OUT/inputs" "$OUT/masks"

# Inputs: ten held-out real digits (the digits classifier's test split), one per class, as 8x8 PNGs,
# and a mask that repaints their lower half (white = repaint).
python - "$OUT" <<'PY'
import sys
import numpy as np
from PIL import Image
from gdistill.metrics.digits import classifier_split
out = sys.argv[1]
digits, labels, _, held_out = classifier_split()
for k in range(10):
    i = held_out[(labels[held_out] == k).nonzero()[0, 0]]
    Image.fromarray(((digits[i, 0] + 1) * 127.5).round().byte().numpy()).save(f"{out}/inputs/{k}.png")
    mask = np.zeros((8, 8), np.uint8); mask[4:] = 255
    Image.fromarray(mask).save(f"{out}/masks/{k}.png")
PY

# Inpaint the lower halves, asking for each digit's own class (the label goes with the whole folder,
# so one class at a time here).
for k in 0 1 2 3 4 5 6 7 8 9; do
  gdistill inpaint --from "$RUN" --image "$OUT/inputs/$k.png" --mask "$OUT/masks/$k.png" --label "$k" \
    --out "$OUT/inpainted-$k.png" --overwrite
done
# Edit every digit into an 8 at three strengths (with 4 steps: 1, 2 and 3 calls).
for s in 0.25 0.5 0.75; do
  gdistill edit --from "$RUN" --image "$OUT/inputs" --label 8 --strength "$s" --out "$OUT/to-8-strength-$s" --overwrite
done

python - "$OUT" <<'PY'
import sys
import numpy as np
from PIL import Image
out = sys.argv[1]
def strip(paths, name):
    tiles = [np.asarray(Image.open(p)) for p in paths]
    row = np.concatenate([np.pad(t, 1, constant_values=255) for t in tiles], 1)
    Image.fromarray(row).resize((row.shape[1] * 8, row.shape[0] * 8), Image.NEAREST).save(f"{out}/{name}.png")
strip([f"{out}/inputs/{k}.png" for k in range(10)], "strip-inputs")
strip([f"{out}/inpainted-{k}.png" for k in range(10)], "strip-inpainted")
for s in ("0.25", "0.5", "0.75"):
    strip([f"{out}/to-8-strength-{s}/{k}.png" for k in range(10)], f"strip-to-8-{s}")
PY
echo "results and strips in $OUT"
