#!/usr/bin/env bash
# SDXL or SD3 / SD3.5 distilled into a 4-step, w-conditioned student (halving) and a 1-step generator
# (DMD, from the same Stage 1), both exported as diffusers pipeline folders: StableDiffusionXLPipeline,
# or StableDiffusion3Pipeline with the student's transformer class inside.
# Needs a GPU and the weights: TEACHER=sdxl (stabilityai/stable-diffusion-xl-base-1.0) or TEACHER=sd3
# (stabilityai/stable-diffusion-3.5-medium) read the Hugging Face cache; where there is no internet,
# download once (`hf download REPO --local-dir DIR`) and set TEACHER=DIR. DATA: a folder of
# NAME.jpg + NAME.txt, a .jsonl/.csv table, or webdataset shards 'shards/{00000..00099}.tar'.
#
#   DATA=pairs/ examples/sdxl_sd3.sh
#   DATA=pairs/ TEACHER=sd3 W=3.5 examples/sdxl_sd3.sh
#   DATA=pairs/ EXTRA="--lora-rank 64" examples/sdxl_sd3.sh    # adapters only: DMD's two networks fit one 80 GB GPU
set -euo pipefail
TEACHER=${TEACHER:-sdxl}
DATA=${DATA:?set DATA to your image-caption pairs}
RUNS=${RUNS:-runs/$(basename "$TEACHER")}
EXTRA=${EXTRA:-}
RESOLUTION=${RESOLUTION:-1024}
W=${W:-6}  # guidance_scale 7
MEMORY="--gradient-checkpointing --mixed-precision bf16"

# Stage 1: one student for every w of the preset range ([0, 14] for SDXL, [0, 9] for SD3); the cache
# encodes each pair once (text states, the pooled embedding, the VAE latent) for every later command.
gdistill match --teacher "$TEACHER" --data "$DATA" --resolution "$RESOLUTION" --cache "$RUNS/cache" $MEMORY $EXTRA --out "$RUNS/stage1"
# Stage 2: 256 -> ... -> 4 steps, every round kept (re-running resumes).
gdistill halve --from "$RUNS/stage1" --rounds 6 --cache "$RUNS/cache" $MEMORY $EXTRA --out "$RUNS/pd"
# A 1-step generator by distribution matching, starting from the Stage-1 student (one call for the real score).
gdistill dmd --teacher "$RUNS/stage1" --cache "$RUNS/cache" $MEMORY $EXTRA --out "$RUNS/dmd"

gdistill sample --from "$RUNS/pd/round-6" --w "$W" --prompt "a red fox in snow" --out "$RUNS/fox-4step.png"
gdistill sample --from "$RUNS/dmd" --w "$W" --prompt "a red fox in snow" --out "$RUNS/fox-1step.png"
gdistill sample --from "$TEACHER" --steps 50 --w "$W" --prompt "a red fox in snow" --out "$RUNS/fox-teacher.png"

# Each folder's README.md says how to load it and get the same image in plain diffusers.
gdistill export "$RUNS/pd/round-6" --out "$RUNS/pipeline-4step" --overwrite
gdistill export "$RUNS/dmd" --out "$RUNS/pipeline-1step" --overwrite
echo "samples and the exported pipelines in $RUNS"
