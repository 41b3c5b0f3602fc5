#!/usr/bin/env bash
# Consistency distillation beside halving, on the shipped toy2d teacher (2-D points, minutes on 2 CPU
# cores): one consistency run that samples in any 1..8 steps, against Stage 1 + 6 halving rounds,
# scored against the teacher's own 256-step guided samples at every w. See docs/consistency.md.
# Re-running resumes: finished runs are kept, an interrupted one continues.
set -euo pipefail
RUNS=${RUNS:-runs/toy-cd}

# One run: the guided teacher's DDIM steps on a 50-step solver grid, the EMA as target network.
[ -e "$RUNS/cd" ] || gdistill consistency --teacher toy2d --out "$RUNS/cd" --seed 0  # 8,000 steps, pseudo-Huber

# The paper's route for comparison: Stage 1, then 6 halving rounds (256 -> 4 steps).
[ -e "$RUNS/stage1" ] || gdistill match --teacher toy2d --out "$RUNS/stage1" --seed 0
gdistill halve --from "$RUNS/stage1" --rounds 6 --out "$RUNS/pd" --seed 0

# The same consistency model at 1, 2 and 4 steps (its own sampler: fresh noise between steps).
for k in 1 2 4; do
  gdistill sample --from "$RUNS/cd" --steps "$k" --w 2 --n 1000 --out "$RUNS/cd-${k}steps.png"
done

# Numbers: the consistency run at 1/2/4/8 steps, every round at its own steps, the teacher at 256
# and 4 guided steps; class-conditional energy distance to the data and to the teacher's samples.
gdistill eval --from "$RUNS/cd" --from "$RUNS/pd" --teacher-steps 256,4 --w 0,1,2,4 --n 2000 \
  --out "$RUNS/report" --overwrite
echo "report in $RUNS/report"
