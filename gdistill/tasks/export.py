"""`gdistill export RUN --out DIR`: a distilled SD-family student as a complete diffusers pipeline
folder (the teacher's VAE, text encoder and tokenizer, the student's UNet, a scheduler that walks the
student's grid) with a model card, so `StableDiffusionPipeline.from_pretrained(DIR)` samples it.

The stock pipeline reads guidance_scale = w + 1 through the UNet's `time_cond_proj_dim` and then
makes one UNet call a step (docs/latent.md). For Stage 1 and rounds its scheduler is DDIM, with
trailing spacing and alpha = 1 at the end, which walks gdistill's N-step grid exactly when N divides
the 1000 training steps; for consistency students it is diffusers' LCMScheduler on the run's solver
grid, whose times and boundary scalings are gdistill's consistency sampler's (tests/test_latent.py).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..errors import GdistillError
from ..files import prepare_output, publish_dir
from ..models.sd_pipeline import SD_TEACHERS, pipeline_for
from ..run_folder import is_text_run, lineage, load_model


def student_scheduler(teacher_scheduler_config: dict):
    """diffusers' DDIM on gdistill's grid: t_k = round(1000 k / N) - 1 ("trailing"), the last step
    to alpha = 1 (set_alpha_to_one), no clipping (latents are unbounded)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(teacher_scheduler_config, timestep_spacing="trailing", set_alpha_to_one=True,
                                     clip_sample=False, thresholding=False)


def consistency_scheduler(teacher_scheduler_config: dict, solver_steps: int):
    """diffusers' LCMScheduler on the consistency run's solver grid: original_inference_steps = N,
    LCM's boundary scalings (timestep_scaling 10), no clipping."""
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(teacher_scheduler_config, original_inference_steps=solver_steps,
                                    timestep_scaling=10.0, clip_sample=False, thresholding=False)


def export(run_arg: str, out: Path, overwrite: bool = False) -> Path:
    from diffusers import StableDiffusionPipeline

    model, manifest, run = load_model(run_arg)
    if not is_text_run(manifest):
        raise GdistillError(f"{run} is a {model.kind} run: export writes diffusers Stable Diffusion pipelines, "
                            "for students of SD-family teachers (`gdistill match --teacher sd15 ...`)")
    if not model.w_conditioned:
        raise GdistillError(f"{run} is a guided teacher, not a student: export a run of `gdistill match` or `gdistill halve`")
    consistency = manifest["kind"] == "consistency"
    if consistency and 1000 % manifest["solver_steps"]:
        raise GdistillError(f"{run} was distilled on a {manifest['solver_steps']}-step solver grid; diffusers' "
                            "LCMScheduler steps by 1000 // N, which keeps to it only when N divides 1000")
    if model.inpainting:
        raise GdistillError(f"{run} is an inpainting student: export writes text-to-image pipelines only for now; "
                            "use it with `gdistill inpaint`")
    steps = manifest.get("steps")
    if steps and 1000 % steps:
        raise GdistillError(f"{run} samples in {steps} steps; diffusers' DDIM steps back by 1000 // N, which keeps to "
                            "the student's grid only when N divides 1000: export a round with 1, 2, 4 or 8 steps")
    out = Path(out)
    work = prepare_output(out, overwrite, resumable=False)
    teacher = pipeline_for(manifest["pipeline"])
    pipe = StableDiffusionPipeline(
        vae=teacher.vae.to("cpu", torch.float32), text_encoder=teacher.text_encoder.to("cpu", torch.float32),
        tokenizer=teacher.tokenizer, unet=model.unet.to("cpu", torch.float32),
        scheduler=(consistency_scheduler(teacher.scheduler.config, manifest["solver_steps"]) if consistency
                   else student_scheduler(teacher.scheduler.config)), safety_checker=None,
        feature_extractor=getattr(teacher, "feature_extractor", None), requires_safety_checker=False)
    pipe.save_pretrained(work, safe_serialization=True)
    (work / "README.md").write_text(model_card(manifest, run, out.name))
    return publish_dir(work, out)


def model_card(manifest: dict, run: Path, name: str) -> str:
    steps = manifest.get("steps")
    w_min, w_max = manifest["w_range"]
    source = manifest["pipeline"]["source"]
    hub_id = SD_TEACHERS.get(source) or (source if source.count("/") == 1 and not Path(source).exists() else None)
    chain = " → ".join((f"round {e['round']}" if e.get("round") else e["kind"]) +
                       (f" ({e['steps']} steps)" if e.get("steps") else "") for e in lineage(manifest))
    consistency = manifest["kind"] == "consistency"
    n = steps or (4 if consistency else 8)
    if consistency:
        steps_line = (f"- **Steps:** a consistency student: any number from 1 to {manifest['solver_steps']} "
                      "(4 is a good start); one UNet call a step, no guidance batch.")
    else:
        steps_line = (f"- **Steps:** {steps} (`num_inference_steps={steps}`); one UNet call a step, no guidance batch."
                      if steps else "- **Steps:** a Stage-1 student: any number; it costs one UNet call a step, "
                      "and step counts dividing 1000 follow gdistill's grid exactly.")
    scheduler_line = (f"- **Scheduler:** `LCMScheduler`, `original_inference_steps={manifest['solver_steps']}` "
                      "(the solver grid it was distilled on)." if consistency else
                      "- **Scheduler:** DDIM, `timestep_spacing=\"trailing\"`, `set_alpha_to_one=True`.")
    negative = manifest.get("negative_prompt")
    negative_line = (f"- **Negative prompt:** fixed at training to {negative!r}." if negative else
                     "- **Negative prompt:** none (guided against the empty prompt).")
    front = ["---", "library_name: diffusers", "pipeline_tag: text-to-image",
             "tags: [stable-diffusion, text-to-image, guidance-distillation, gdistill]"]
    if hub_id:
        front.append(f"base_model: {hub_id}")
    front.append("---")
    return "\n".join(front) + f"""

# {name}

A guidance-distilled student of `{source}` made with gdistill {__version__}: the guided teacher's
two UNet calls a step, distilled into one UNet that takes the guidance strength as an input.

- **Lineage:** {chain} (from the run `{run}`; its manifest holds every setting).
{steps_line}
- **Guidance:** trained for w ∈ [{w_min:g}, {w_max:g}], that is `guidance_scale` ∈ [{w_min + 1:g}, {w_max + 1:g}]
  (w = guidance_scale − 1). The pipeline passes it to the UNet through `time_cond_proj_dim`.
{negative_line} The pipeline's `negative_prompt` argument has no effect on this
  model: it runs no unconditional pass.
{scheduler_line}
- No safety checker is included. The teacher's license applies to these weights.

## Load it

```python
import torch
from diffusers import StableDiffusionPipeline

pipe = StableDiffusionPipeline.from_pretrained("{name}")
image = pipe("a red fox in snow", num_inference_steps={n}, guidance_scale=7.5,
             generator=torch.Generator().manual_seed(0)).images[0]
```

The same image as `gdistill sample --from {run} --steps {n} --w 6.5 --prompt "a red fox in snow" --seed 0`.
"""
