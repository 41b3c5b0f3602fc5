"""Stable-Diffusion-family teachers and their w-conditioned students, through diffusers.

Groundwork for the latent-space stages (issue 4): resolving `--teacher` to a diffusers pipeline
without surprises offline, and the student UNet. The student is the teacher's
`UNet2DConditionModel` rebuilt with `time_cond_proj_dim` (diffusers' own hook: a linear map of the
guidance embedding added to the timestep features) and that projection zero-initialised, so a fresh
student equals the teacher's conditional UNet. w is embedded with the very function the stock
StableDiffusionPipeline applies when its UNet has `time_cond_proj_dim` (with w = guidance_scale - 1,
and no classifier-free guidance pass), so an exported student samples in plain diffusers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import GdistillError

# The maintained copies of the SD 1.5 weights on the Hugging Face hub.
SD_TEACHERS = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
               "sd15-inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting"}
GUIDANCE_EMBEDDING_DIM = 256  # as diffusers' LCM-distilled SD 1.5 UNets
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def guidance_scale_embedding(w: torch.Tensor, dim: int = GUIDANCE_EMBEDDING_DIM) -> torch.Tensor:
    """Sinusoidal features of 1000 w (paper's w = guidance_scale - 1), shape (len(w), dim): diffusers'
    StableDiffusionPipeline.get_guidance_scale_embedding, called here so training and the stock
    pipeline can never disagree on it."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.get_guidance_scale_embedding(None, w.float().flatten().cpu(), embedding_dim=dim)


def load_sd_pipeline(teacher: str, revision: str | None = None, variant: str | None = None,
                     torch_dtype: torch.dtype | None = None):
    """A diffusers pipeline for --teacher: `sd15` / `sd15-inpaint` (the hub), a diffusers folder,
    or a single-file checkpoint (.safetensors / .ckpt)."""
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    path = Path(teacher)
    kwargs = {k: v for k, v in (("revision", revision), ("variant", variant), ("torch_dtype", torch_dtype)) if v is not None}
    if teacher in SD_TEACHERS and not path.exists():
        repo = SD_TEACHERS[teacher]
        try:
            return DiffusionPipeline.from_pretrained(repo, safety_checker=None, **kwargs)
        except (OSError, ValueError) as e:
            raise GdistillError(
                f"cannot load --teacher {teacher} ({repo}) from the Hugging Face hub ({_first_line(e)}): offline "
                f"or uncached, download it where there is internet (`hf download {repo} --local-dir DIR`) "
                "and pass --teacher DIR, or pass a single .safetensors checkpoint") from None
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise GdistillError(f"--teacher {path} is not a diffusers pipeline folder (model_index.json is missing): "
                                f"pass such a folder, a single checkpoint file, or one of {', '.join(SD_TEACHERS)}")
        try:
            return DiffusionPipeline.from_pretrained(str(path), safety_checker=None, **kwargs)
        except (OSError, ValueError) as e:
            raise GdistillError(f"cannot load the pipeline folder {path}: {_first_line(e)}") from None
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        try:
            return StableDiffusionPipeline.from_single_file(str(path), **kwargs)
        except (OSError, ValueError) as e:
            raise GdistillError(f"cannot load the checkpoint {path} ({_first_line(e)}): offline, single-file loading "
                                "needs the model's config cached; use a diffusers folder instead") from None
    raise GdistillError(f"--teacher {teacher} does not exist: pass {', '.join(SD_TEACHERS)}, a diffusers pipeline "
                        f"folder or a single checkpoint file ({', '.join(SINGLE_FILE_SUFFIXES)})")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


def make_sd_student(teacher_unet, embedding_dim: int = GUIDANCE_EMBEDDING_DIM):
    """The teacher's UNet plus `time_cond_proj_dim`, its projection zeroed: equal to the teacher's
    conditional UNet until trained."""
    from diffusers import UNet2DConditionModel

    student = UNet2DConditionModel.from_config({**teacher_unet.config, "time_cond_proj_dim": embedding_dim})
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("time_embedding.cond_proj.") for k in missing):
        raise GdistillError(f"the teacher's UNet does not fit its student (missing {missing}, unexpected {unexpected})")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.to(dtype=next(teacher_unet.parameters()).dtype)
