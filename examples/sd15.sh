#!/usr/bin/env bash
# Stable Diffusion 1.5 distilled into a 4-step, w-conditioned student, exported for plain diffusers.
# Needs a GPU and the SD 1.5 weights: TEACHER=sd15 reads the Hugging Face cache (download once with
# `hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir sd15/` and set TEACHER=sd15/
# where there is no internet). DATA: a folder of NAME.jpg + NAME.txt, a .jsonl/.csv table, or
# webdataset shards 'shards/{00000..00099}.tar'.
#
#   DATA=laion-subset/ examples/sd15.sh
#   DATA=laion-subset/ EXTRA="--lora-rank 64 --gradient-checkpointing --mixed-precision bf16" examples/sd15.sh   # 24 GB cards
set -euo pipefail
TEACHER=${TEACHER:-sd15}
DATA=${DATA:?set DATA to your image-caption pairs}
RUNS=${RUNS:-runs/sd15}
EXTRA=${EXTRA:-}
RESOLUTION=${RESOLUTION:-512}

# Stage 1: one student for every w in [0, 14] (guidance_scale 1 to 15); the cache encodes each
# pair once with the frozen VAE and text encoder, and the rounds below reuse it.
gdistill match --teacher "$TEACHER" --data "$DATA" --resolution "$RESOLUTION" --cache "$RUNS/cache" $EXTRA --out "$RUNS/stage1"
# Stage 2: 256 -> 128 -> ... -> 4 steps, every round kept (re-running resumes).
gdistill halve --from "$RUNS/stage1" --rounds 6 --cache "$RUNS/cache" $EXTRA --out "$RUNS/pd"

# The student (4 calls) against the guided teacher (50 steps, 100 calls), same seed.
gdistill sample --from "$RUNS/pd/round-6" --steps 4 --w 6.5 --prompt "a red fox in snow" --out "$RUNS/fox-student.png"
gdistill sample --from "$TEACHER" --steps 50 --w 6.5 --prompt "a red fox in snow" --out "$RUNS/fox-teacher.png"

# A diffusers pipeline folder: StableDiffusionPipeline.from_pretrained("$RUNS/fox-4step") gives the same image.
gdistill export "$RUNS/pd/round-6" --out "$RUNS/fox-4step" --overwrite

# Optional, with reference images and prompts of your own (FID needs `pip install "gdistill[fid]"`):
#   gdistill eval --from "$RUNS/pd" --teacher-steps 50 --w 2,6.5 --prompts prompts.txt --ref images/ --fid --clip --out "$RUNS/report"
echo "samples and the exported pipeline in $RUNS"
