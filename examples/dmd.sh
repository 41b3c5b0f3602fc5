#!/usr/bin/env bash
# Distribution-matching distillation on the shipped toy2d teacher (2-D points, minutes on 2 CPU
# cores): a 1-step w-conditioned generator, the same with DMD2's GAN head (real images from the
# data, then from the teacher), and a 2-step one, against the guided teacher's own 256-step samples
# at every w. See docs/dmd.md.
# Re-running resumes: finished runs are kept, an interrupted one continues.
set -euo pipefail
RUNS=${RUNS:-runs/toy-dmd}

# A 1-step generator: fake-score and generator updates in turns (5 to 1), no regression, no data images.
[ -e "$RUNS/dmd" ] || gdistill dmd --teacher toy2d --out "$RUNS/dmd" --seed 0
# With the GAN head: the fake score also tells the data's points from the generator's (weight 1 is
# toy2d's best; digits' is 0.1): it removes most of the over-guiding at high w.
[ -e "$RUNS/dmd-gan" ] || gdistill dmd --teacher toy2d --gan-weight 1 --out "$RUNS/dmd-gan" --seed 0
# The head's real images from the guided teacher (1,024 DDIM samples at their own w): the GAN term
# then pulls toward the guided teacher at every w, not the unguided data (at G = 3 it stays guided).
[ -e "$RUNS/dmd-gan-teacher" ] || gdistill dmd --teacher toy2d --gan-weight 3 --gan-real teacher --out "$RUNS/dmd-gan-teacher" --seed 0
# A 2-step generator, trained at its last step from the state its own sampling reaches (backward simulation).
[ -e "$RUNS/dmd2" ] || gdistill dmd --teacher toy2d --generator-steps 2 --out "$RUNS/dmd2" --seed 0

gdistill sample --from "$RUNS/dmd" --w 2 --n 1000 --out "$RUNS/dmd-w2.png"

# Numbers: class-conditional energy distance to the data and to the teacher's 256-step samples.
gdistill eval --from "$RUNS/dmd" --from "$RUNS/dmd-gan" --from "$RUNS/dmd-gan-teacher" --from "$RUNS/dmd2" --teacher-steps 256,1 --w 0,1,2,4 --n 2000 \
  --out "$RUNS/report" --overwrite
echo "report in $RUNS/report"
