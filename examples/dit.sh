#!/usr/bin/env bash
# DiT-XL/2 (ImageNet 256, 1000 classes) distilled into a 4-step, w-conditioned student, as the
# paper's class-conditional latent results. Needs a GPU and the DiT weights: TEACHER=dit reads the
# Hugging Face cache (download once with `hf download facebook/DiT-XL-2-256 --local-dir dit/` and
# set TEACHER=dit/ where there is no internet). DATA: a class folder DIR/<class>/*.jpg, the folders
# named by ImageNet class id (0..999) or by DiT's label words.
#
#   DATA=imagenet-subset/ examples/dit.sh
set -euo pipefail
TEACHER=${TEACHER:-dit}
DATA=${DATA:?set DATA to a class folder of images}
RUNS=${RUNS:-runs/dit}
EXTRA=${EXTRA:-}

# Stage 1: one student for every w in [0, 4]; the images are encoded once by the VAE when loaded.
gdistill match --teacher "$TEACHER" --data "$DATA" --resolution 256 --mixed-precision bf16 $EXTRA --out "$RUNS/stage1"
# Stage 2: 256 -> ... -> 4 steps, every round kept (re-running resumes).
gdistill halve --from "$RUNS/stage1" --rounds 6 --mixed-precision bf16 $EXTRA --out "$RUNS/pd"

# class 207 (golden retriever) at w = 3 (DiT's guidance_scale 4): the student in 4 calls, the teacher in 2 x 64
gdistill sample --from "$RUNS/pd/round-6" --label 207 --w 3 --n 16 --out "$RUNS/retriever-4step.png"
gdistill sample --from "$TEACHER" --steps 64 --label 207 --w 3 --n 16 --out "$RUNS/retriever-teacher.png"
echo "samples in $RUNS"
