#!/usr/bin/env bash
# The 2-D toy pipeline end to end with default settings: 2 to 3 minutes on 2 CPU cores.
# toy2d is a class-conditional Gaussian mixture (4 classes, each two opposite blobs on the unit circle).
set -euo pipefail
RUNS=${RUNS:-runs/toy2d}

# Optional: retrain the shipped teacher (about a minute) with `gdistill teach --dataset toy2d --out $RUNS/teacher`
# and pass --teacher $RUNS/teacher below. The shipped one was made by exactly that command.
[ -e "$RUNS/stage1" ] || gdistill match --teacher toy2d --out "$RUNS/stage1"
gdistill halve --from "$RUNS/stage1" --rounds 6 --out "$RUNS/pd"

# Scatter plots: the 4-step student, the teacher's 4-step guided DDIM, and the 256-step reference.
gdistill sample --from "$RUNS/pd/round-6" --w 2 --n 2000 --out "$RUNS/student-4steps.png"
gdistill sample --from toy2d --steps 4 --w 2 --n 2000 --out "$RUNS/teacher-4steps.png"
gdistill sample --from toy2d --steps 256 --w 2 --n 2000 --out "$RUNS/teacher-256steps.png"

# Energy distance to exact samples of the known mixture, per class: student against guided teacher.
gdistill eval --from "$RUNS/pd/round-6" --teacher-steps 4,256 --ed --w 0,1,2,4 --n 2000 \
  --out "$RUNS/report" --overwrite
echo "scatter plots and report in $RUNS"
