#!/usr/bin/env bash
# SDXL distilled into a 4-step, w-conditioned student (halving) and a 1-step generator (DMD, from
# the same Stage 1), both exported as StableDiffusionXLPipeline folders.
# Needs a GPU and the SDXL weights: TEACHER=sdxl reads the Hugging Face cache (download once with
# `hf download stabilityai/stable-diffusion-xl-base-1.0 --local-dir sdxl/` and set TEACHER=sdxl/
# where there is no internet). DATA: a folder of NAME.jpg + NAME.txt, a .jsonl/.csv table, or
# webdataset shards 'shards/{00000..00099}.tar'.
#
#   DATA=pairs/ examples/sdxl.sh
#   DATA=pairs/ EXTRA="--lora-rank 64" examples/sdxl.sh     # adapters only: DMD's two UNets fit one 80 GB GPU
set -euo pipefail
TEACHER=${TEACHER:-sdxl}
DATA=${DATA:?set DATA to your image-caption pairs}
RUNS=${RUNS:-runs/sdxl}
EXTRA=${EXTRA:-}
RESOLUTION=${RESOLUTION:-1024}
MEMORY="--gradient-checkpointing --mixed-precision bf16"

# Stage 1: one student for every w in [0, 14]; the cache encodes each pair once (two text encoders,
# the pooled embedding, the VAE latent) and every later command reuses it.
gdistill match --teacher "$TEACHER" --data "$DATA" --resolution "$RESOLUTION" --cache "$RUNS/cache" $MEMORY $EXTRA --out "$RUNS/stage1"
# Stage 2: 256 -> ... -> 4 steps, every round kept (re-running resumes).
gdistill halve --from "$RUNS/stage1" --rounds 6 --cache "$RUNS/cache" $MEMORY $EXTRA --out "$RUNS/pd"
# A 1-step generator by distribution matching, starting from the Stage-1 student (one call for the real score).
gdistill dmd --teacher "$RUNS/stage1" --cache "$RUNS/cache" $MEMORY $EXTRA --out "$RUNS/dmd"

gdistill sample --from "$RUNS/pd/round-6" --w 6.5 --prompt "a red fox in snow" --out "$RUNS/fox-4step.png"
gdistill sample --from "$RUNS/dmd" --w 6.5 --prompt "a red fox in snow" --out "$RUNS/fox-1step.png"
gdistill sample --from "$TEACHER" --steps 50 --w 6.5 --prompt "a red fox in snow" --out "$RUNS/fox-teacher.png"

# StableDiffusionXLPipeline.from_pretrained(DIR, add_watermarker=False) gives the same images.
gdistill export "$RUNS/pd/round-6" --out "$RUNS/xl-4step" --overwrite
gdistill export "$RUNS/dmd" --out "$RUNS/xl-1step" --overwrite
echo "samples and the exported pipelines in $RUNS"
