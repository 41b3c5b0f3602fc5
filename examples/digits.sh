#!/usr/bin/env bash
# The built-in digits pipeline as shell steps: the shipped guided teacher -> Stage 1 -> 6 halving
# rounds (256 -> 4 steps) -> samples from student and teacher side by side -> scored with numbers.
# About 45 minutes on 2 CPU cores. Re-running resumes: finished runs are kept, an interrupted one continues.
set -euo pipefail
RUNS=${RUNS:-runs/digits}
W=${W:-1.0}

# Stage 1: one w-conditioned student for every w in [0, 4] (one network call where the teacher needs two).
[ -e "$RUNS/stage1" ] || gdistill match --teacher digits --out "$RUNS/stage1" --seed 0

# Stage 2: six rounds, each halving the steps; every round is a usable sampler.
gdistill halve --from "$RUNS/stage1" --rounds 6 --out "$RUNS/pd" --seed 0

gdistill info "$RUNS/pd/round-6"
# How much guidance Stage 1 really applies at each w, against the teacher (the teacher gives exactly w).
gdistill info "$RUNS/stage1" --w-eff --w 0,1,2,4

# The 4-step student (4 calls per image) against the guided teacher at 4 and 256 steps (8 and 512 calls).
gdistill sample --from "$RUNS/pd/round-6" --steps 4 --w "$W" --n 100 --out "$RUNS/student-4steps.png"
gdistill sample --from digits --steps 4 --w "$W" --n 100 --out "$RUNS/teacher-4steps.png"
gdistill sample --from digits --steps 256 --w "$W" --n 100 --out "$RUNS/teacher-256steps.png"

# One student, many guidance strengths: no retraining.
for w in 0 2 4; do
  gdistill sample --from "$RUNS/pd/round-6" --w "$w" --n 100 --out "$RUNS/student-4steps-w$w.png"
done

# Arrays for your own analysis: samples (n, 1, 8, 8) in [-1, 1] and labels (n,).
gdistill sample --from "$RUNS/pd/round-6" --w "$W" --n 1000 --out "$RUNS/student-4steps.npz"

# Numbers, offline: every round and the teacher at 64 and 4 guided steps, against the real digits
# and against the teacher's own 256-step samples (digits-FD and digits-FD to teacher, digits-IS,
# class accuracy, calls and time per image), with plots and grids.
gdistill eval --from "$RUNS/pd" --teacher-steps 64,4 --fid --isc --w 0,1,2,4 --n 500 \
  --out "$RUNS/report" --overwrite
echo "images in $RUNS, report in $RUNS/report"
