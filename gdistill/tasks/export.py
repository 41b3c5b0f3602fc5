"""`gdistill export RUN --out DIR`: a distilled SD-family student as a complete diffusers pipeline
folder (the teacher's VAE, text encoder(s) and tokenizer(s), the student's UNet, a scheduler that
walks the student's grid) with a model card, so `StableDiffusionPipeline.from_pretrained(DIR)` (or
`StableDiffusionXLPipeline` for SDXL students) samples it.

The stock pipeline reads guidance_scale = w + 1 through the UNet's `time_cond_proj_dim` and then
makes one UNet call a step (docs/latent.md). For Stage 1 and rounds its scheduler is DDIM, with
trailing spacing and alpha = 1 at the end, which walks gdistill's N-step grid exactly when N divides
the 1000 training steps; for consistency students it is diffusers' LCMScheduler on the run's solver
grid, whose times and boundary scalings are gdistill's consistency sampler's (tests/test_latent.py);
for DMD generators it is LCMScheduler on the generator's own k-step grid with the boundary scalings
switched off, which is gdistill's renoise sampler (x, then fresh noise between steps).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .. import __version__
from ..errors import GdistillError
from ..files import prepare_output, publish_dir
from ..models.latent import is_sdxl_unet
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


def generator_scheduler(teacher_scheduler_config: dict, generator_steps: int):
    """diffusers' LCMScheduler as a DMD generator's renoise sampler: its k timesteps are the
    generator's grid (original_inference_steps = k), and between steps it re-noises the prediction
    with fresh noise from the pipeline's generator, z_s = a_s x + s_s n, as gdistill does. The LCM
    boundary scalings c_skip = 0.25 / ((t s)^2 + 0.25), c_out = t s / sqrt((t s)^2 + 0.25) become
    0 and 1 in floating point at timestep_scaling s = 1e6 (t >= 1000 / k - 1 >= 124): the generator's x
    is used as it is."""
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(teacher_scheduler_config, original_inference_steps=generator_steps,
                                    timestep_scaling=1e6, clip_sample=False, thresholding=False)


def student_scheduler_for(manifest: dict, teacher_scheduler_config: dict):
    """The scheduler that walks a student run's sampler in the stock pipeline."""
    if manifest["kind"] == "consistency":
        return consistency_scheduler(teacher_scheduler_config, manifest["solver_steps"])
    if manifest["kind"] == "dmd":
        return generator_scheduler(teacher_scheduler_config, manifest["steps"])
    return student_scheduler(teacher_scheduler_config)


def export(run_arg: str, out: Path, overwrite: bool = False) -> Path:
    model, manifest, run = load_model(run_arg)
    if not is_text_run(manifest):
        raise GdistillError(f"{run} is a {model.kind} run: export writes diffusers Stable Diffusion pipelines, "
                            "for students of SD-family teachers (`gdistill match --teacher sd15 ...`)")
    if not model.w_conditioned:
        raise GdistillError(f"{run} is a guided teacher, not a student: export a run of `gdistill match` or `gdistill halve`")
    consistency = manifest["kind"] == "consistency"
    flow = model.kind == "sd3-transformer"  # its pipeline takes the student's grid as `sigmas`: any N
    if flow and consistency:
        raise GdistillError(f"{run} is a consistency student of an SD3-family teacher: its export (LCM's boundary "
                            "scalings on the flow) is not built yet; sample it with `gdistill sample`")
    if consistency and 1000 % manifest["solver_steps"]:
        raise GdistillError(f"{run} was distilled on a {manifest['solver_steps']}-step solver grid; diffusers' "
                            "LCMScheduler steps by 1000 // N, which keeps to it only when N divides 1000")
    if model.inpainting:
        raise GdistillError(f"{run} is an inpainting student: export writes text-to-image pipelines only for now; "
                            "use it with `gdistill inpaint`")
    steps = manifest.get("steps")
    if steps and 1000 % steps and not flow:
        raise GdistillError(f"{run} samples in {steps} steps; diffusers' schedulers step back by 1000 // N, which keeps "
                            "to the student's grid only when N divides 1000: export a run with 1, 2, 4 or 8 steps")
    out = Path(out)
    work = prepare_output(out, overwrite, resumable=False)
    teacher = pipeline_for(manifest["pipeline"])
    network = model.network.to("cpu", torch.float32)
    network.register_to_config(sample_size=model.data_shape[-1])  # the pipeline's default size: the one distilled at
    scheduler = (flow_scheduler_for if flow else student_scheduler_for)(manifest, teacher.scheduler.config)
    pipe = student_pipeline(teacher, network, scheduler)
    pipe.save_pretrained(work, safe_serialization=True)
    if flow:
        ship_guidance_transformer(work)
    size = model.data_shape[-1] * teacher.vae_scale_factor
    (work / "README.md").write_text(model_card(manifest, run, out.name, type(pipe).__name__, size,
                                               no_t5=flow and teacher.text_encoder_3 is None))
    return publish_dir(work, out)


def flow_scheduler_for(manifest: dict, teacher_scheduler_config: dict):
    """An SD3-family student's scheduler, given gdistill's grid as `sigmas` at call time (the shift
    is the teacher's): FlowMatchEulerDiscreteScheduler (Euler on the flow is DDIM) for Stage 1 and
    rounds; for DMD generators FlowMatchLCMScheduler, which predicts x = z - s v and re-noises it
    with fresh noise between steps, as the renoise sampler does."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchLCMScheduler

    cls = FlowMatchLCMScheduler if manifest["kind"] == "dmd" else FlowMatchEulerDiscreteScheduler
    return cls.from_config(teacher_scheduler_config)


def ship_guidance_transformer(folder: Path) -> None:
    """Make the folder load in plain diffusers: the student's transformer class
    (models/sd3_guidance.py, torch and diffusers only) goes into transformer/ and model_index.json
    names it there, which diffusers loads as a custom component (trust_remote_code=True); components
    the teacher went without (T5) are recorded as null, as from_pretrained expects them."""
    from ..models import sd3_guidance

    shutil.copyfile(sd3_guidance.__file__, folder / "transformer" / "sd3_guidance.py")
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["transformer"] = ["sd3_guidance", "SD3TransformerWithGuidance"]
    for name in ("text_encoder_3", "tokenizer_3"):
        index.setdefault(name, [None, None])
    index_path.write_text(json.dumps(index, indent=2))


def student_pipeline(teacher, network, scheduler):
    """The teacher's pipeline class with its VAE, text encoder(s) and tokenizer(s), the student's
    network and scheduler, no safety checker: StableDiffusionPipeline, StableDiffusionXLPipeline
    (keeping the teacher's force_zeros_for_empty_prompt; no watermarker, which would change the
    image) or StableDiffusion3Pipeline."""
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    def cpu(module):
        return None if module is None else module.to("cpu", torch.float32)

    vae, text_encoder = cpu(teacher.vae), cpu(teacher.text_encoder)
    if isinstance(teacher, StableDiffusion3Pipeline):
        return StableDiffusion3Pipeline(
            transformer=network, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=teacher.tokenizer,
            text_encoder_2=cpu(teacher.text_encoder_2), tokenizer_2=teacher.tokenizer_2,
            text_encoder_3=cpu(teacher.text_encoder_3), tokenizer_3=teacher.tokenizer_3)
    if is_sdxl_unet(network.config):
        return StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=cpu(teacher.text_encoder_2),
            tokenizer=teacher.tokenizer, tokenizer_2=teacher.tokenizer_2, unet=network, scheduler=scheduler,
            force_zeros_for_empty_prompt=teacher.config.get("force_zeros_for_empty_prompt", True), add_watermarker=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=teacher.tokenizer, unet=network,
                                   scheduler=scheduler, safety_checker=None,
                                   feature_extractor=getattr(teacher, "feature_extractor", None),
                                   requires_safety_checker=False)


def model_card(manifest: dict, run: Path, name: str, pipeline_class: str, size: int, no_t5: bool = False) -> str:
    steps = manifest.get("steps")
    w_min, w_max = manifest["w_range"]
    source = manifest["pipeline"]["source"]
    hub_id = SD_TEACHERS.get(source) or (source if source.count("/") == 1 and not Path(source).exists() else None)
    chain = " → ".join((f"round {e['round']}" if e.get("round") else e["kind"]) +
                       (f" ({e['steps']} steps)" if e.get("steps") else "") for e in lineage(manifest))
    consistency, dmd = manifest["kind"] == "consistency", manifest["kind"] == "dmd"
    sdxl, flow = pipeline_class == "StableDiffusionXLPipeline", pipeline_class == "StableDiffusion3Pipeline"
    network = "transformer" if flow else "UNet"
    n = steps or (4 if consistency else 8)
    if dmd:
        steps_line = (f"- **Steps:** {steps} (`num_inference_steps={steps}`): a {steps}-step DMD generator, re-noised "
                      f"between steps; one {network} call a step, no guidance batch.")
    elif consistency:
        steps_line = (f"- **Steps:** a consistency student: any number from 1 to {manifest['solver_steps']} "
                      f"(4 is a good start); one {network} call a step, no guidance batch.")
    elif steps:
        steps_line = f"- **Steps:** {steps} (`num_inference_steps={steps}`); one {network} call a step, no guidance batch."
    else:
        steps_line = (f"- **Steps:** a Stage-1 student: any number; it costs one {network} call a step" +
                      (", on the grid given as `sigmas`." if flow else
                       ", and step counts dividing 1000 follow gdistill's grid exactly."))
    sigmas = [round(1 - k / n, 6) for k in range(n)]
    if flow:
        scheduler_line = (f"- **Scheduler:** `{'FlowMatchLCMScheduler' if dmd else 'FlowMatchEulerDiscreteScheduler'}` "
                          f"(the teacher's shift) given gdistill's uniform grid as `sigmas=[1, (N-1)/N, ..., 1/N]`"
                          f"{' (x = z - s v, re-noised between steps)' if dmd else ''}.")
        guidance_how = ("The transformer reads w through its guidance input: `SD3TransformerWithGuidance` "
                        "(transformer/sd3_guidance.py: the stock SD3 transformer plus a w-projection added to its "
                        "time embedding), passed as `joint_attention_kwargs={\"guidance\": w}` with "
                        "`guidance_scale=1.0` (no unconditional pass).")
    else:
        guidance_how = "The pipeline passes it to the UNet through `time_cond_proj_dim`."
        if dmd:
            scheduler_line = (f"- **Scheduler:** `LCMScheduler`, `original_inference_steps={steps}` (the generator's "
                              "grid), `timestep_scaling=1e6` (no boundary scalings: the generator's prediction as it is).")
        elif consistency:
            scheduler_line = (f"- **Scheduler:** `LCMScheduler`, `original_inference_steps={manifest['solver_steps']}` "
                              "(the solver grid it was distilled on).")
        else:
            scheduler_line = "- **Scheduler:** DDIM, `timestep_spacing=\"trailing\"`, `set_alpha_to_one=True`."
    negative = manifest.get("negative_prompt")
    negative_line = (f"- **Negative prompt:** fixed at training to {negative!r}." if negative else
                     "- **Negative prompt:** none (guided against the empty prompt).")
    # SDXL pipelines add an invisible watermark when the package is installed, unless told not to;
    # an SD3 student's transformer class ships in the folder (trust_remote_code)
    watermark = " or watermarker" if sdxl else ""
    load_extra = (", add_watermarker=False" if sdxl else
                  ", trust_remote_code=True" + (", text_encoder_3=None, tokenizer_3=None" if no_t5 else "") if flow else "")
    call_extra = (f"sigmas={sigmas}, guidance_scale=1.0,\n             joint_attention_kwargs={{\"guidance\": 6.5}}"
                  if flow else "guidance_scale=7.5")
    # the SD3 pipeline hands no generator to the scheduler's step: a DMD generator's re-noising comes
    # from torch's global generator, so seeding that one reproduces gdistill's draws in order
    global_seed = flow and dmd
    seeding = "torch.manual_seed(0)  # the scheduler re-noises from torch's global generator\n" if global_seed else ""
    generator_arg = "" if global_seed else ",\n             generator=torch.Generator().manual_seed(0)"
    tags = "stable-diffusion" + (", stable-diffusion-xl" if sdxl else "") + (", stable-diffusion-3" if flow else "")
    front = ["---", "library_name: diffusers", "pipeline_tag: text-to-image",
             f"tags: [{tags}, text-to-image, guidance-distillation, gdistill]"]
    if hub_id:
        front.append(f"base_model: {hub_id}")
    front.append("---")
    return "\n".join(front) + f"""

# {name}

A guidance-distilled student of `{source}` made with gdistill {__version__}: the guided teacher's
two {network} calls a step, distilled into one {network} that takes the guidance strength as an input.

- **Lineage:** {chain} (from the run `{run}`; its manifest holds every setting).
{steps_line}
- **Guidance:** trained for w ∈ [{w_min:g}, {w_max:g}], that is `guidance_scale` ∈ [{w_min + 1:g}, {w_max + 1:g}]
  (w = guidance_scale − 1). {guidance_how}
{negative_line} The pipeline's `negative_prompt` argument has no effect on this
  model: it runs no unconditional pass.
{scheduler_line}
- **Size:** distilled at {size}x{size} pixels, the pipeline's default.
- No safety checker{watermark} is included. The teacher's license applies to these weights.

## Load it

```python
import torch
from diffusers import {pipeline_class}

pipe = {pipeline_class}.from_pretrained("{name}"{load_extra})
{seeding}image = pipe("a red fox in snow", num_inference_steps={n}, {call_extra}{generator_arg}).images[0]
```

The same image as `gdistill sample --from {run} --steps {n} --w 6.5 --prompt "a red fox in snow" --seed 0`.
"""
