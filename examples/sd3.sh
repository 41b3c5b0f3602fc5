#!/usr/bin/env bash
# SD3 distilled into a 4-step, w-conditioned student (halving) and a 1-step generator (DMD, from
# the same Stage 1), both exported as StableDiffusion3Pipeline folders (the student transformer class ships inside).
# Needs a GPU and the SD3 weights: TEACHER=sd3 reads the Hugging Face cache (download once with
# `hf download stabilityai/stable-diffusion-3.5-medium --local-dir sd3/` and set TEACHER=sd3/
# where there is no internet). DATA: a folder of NAME.jpg + NAME.txt, a .jsonl/.csv table, or
# webdataset shards 'shards/{00000..00099}.tar'.
#
#   DATA=pairs/ examples/sd3.sh
#   DATA=pairs/ EXTRA="--lora-rank 64" examples/sd3.sh     # adapters only: DMD's two transformers fit one 80 GB GPU
set -euo pipefail
TEACHER=${TEACHER:-sd3}
DATA=${DATA:?set DATA to your image-caption pairs}
RUNS=${RUNS:-runs/sd3}
EXTRA=${EXTRA:-}
RESOLUTION=${RESOLUTION:-1024}
MEMORY="--gradient-checkpointing --mixed-precision bf16"

# Stage 1: one student for every w in [0, 9]; the cache encodes each pair once (CLIP and T5 states,
# the pooled embedding, the VAE latent) and every later command reuses it.
gdistill match --teacher "$TEACHER" --data "$DATA" --resolution "$RESOLUTION" --cache "$RUNS/cache" $MEMORY $EXTRA --out "$RUNS/stage1"
# Stage 2: 256 -> ... -> 4 steps, every round kept (re-running resumes).
gdistill halve --from "$RUNS/stage1" --rounds 6 --cache "$RUNS/cache" $MEMORY $EXTRA --out "$RUNS/pd"
# A 1-step generator by distribution matching, starting from the Stage-1 student (one call for the real score).
gdistill dmd --teacher "$RUNS/stage1" --cache "$RUNS/cache" $MEMORY $EXTRA --out "$RUNS/dmd"

gdistill sample --from "$RUNS/pd/round-6" --w 6 --prompt "a red fox in snow" --out "$RUNS/fox-4step.png"
gdistill sample --from "$RUNS/dmd" --w 6 --prompt "a red fox in snow" --out "$RUNS/fox-1step.png"
gdistill sample --from "$TEACHER" --steps 50 --w 6 --prompt "a red fox in snow" --out "$RUNS/fox-teacher.png"

# StableDiffusion3Pipeline.from_pretrained(DIR, trust_remote_code=True) gives the same images
# (pass sigmas, guidance_scale=1.0 and joint_attention_kwargs={"guidance": w}: see each README.md).
gdistill export "$RUNS/pd/round-6" --out "$RUNS/sd3-4step" --overwrite
gdistill export "$RUNS/dmd" --out "$RUNS/sd3-1step" --overwrite
echo "samples and the exported pipelines in $RUNS"
