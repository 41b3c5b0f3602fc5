"""Resolving --teacher to a Stable-Diffusion-family diffusers pipeline without surprises offline
(`sd15` / `sd15-inpaint` / `sdxl` / `sd3` / `dit` from the hub, a pipeline folder, a single checkpoint file), the record runs
keep of it (the manifest's `pipeline`), and the teacher `load_model` answers for it.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch

from ..errors import GdistillError
from ..run_folder import MANIFEST, WEIGHTS
from .latent import LatentUNetDenoiser, is_sdxl_unet

# The maintained copies of the SD 1.5, SDXL, SD 3.5 medium and DiT-XL/2 (ImageNet 256) weights on the Hugging Face hub.
SD_TEACHERS = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
               "sd15-inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
               "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
               "sd3": "stabilityai/stable-diffusion-3.5-medium",
               "dit": "facebook/DiT-XL-2-256"}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def is_pipeline_teacher(arg) -> bool:
    """Whether --teacher / --from names a diffusers pipeline (not a gdistill run)."""
    path = Path(str(arg))
    if str(arg) in SD_TEACHERS and not path.exists():
        return True
    if path.is_dir():
        return (path / "model_index.json").is_file() and not (path / MANIFEST).is_file()
    return path.suffix in SINGLE_FILE_SUFFIXES


def pipeline_record(teacher: str, revision: str | None = None, variant: str | None = None) -> dict:
    """How runs name their diffusers teacher (the manifest's `pipeline`): enough to load it again
    for its VAE, text encoder and tokenizer (halve, sample, export)."""
    path = Path(teacher)
    source = teacher if teacher in SD_TEACHERS and not path.exists() else str(path.resolve())
    return {"source": source, "revision": revision, "variant": variant}


def load_sd_pipeline(teacher: str, revision: str | None = None, variant: str | None = None,
                     torch_dtype: torch.dtype | None = None):
    """A diffusers pipeline for --teacher: `sd15` / `sd15-inpaint` (the hub), a diffusers folder,
    or a single-file checkpoint (.safetensors / .ckpt)."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    # gdistill shows its own progress: no "Loading pipeline components" bar (diffusers has no
    # environment switch for it; set here, not at start-up, so that `--help` need not import diffusers)
    diffusers_logging.disable_progress_bar()
    path = Path(teacher)
    kwargs = {k: v for k, v in (("revision", revision), ("variant", variant), ("torch_dtype", torch_dtype)) if v is not None}
    if teacher in SD_TEACHERS and not path.exists():
        repo = SD_TEACHERS[teacher]
        try:
            return DiffusionPipeline.from_pretrained(repo, **_no_safety_checker(teacher.startswith("sd15")), **kwargs)
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
            index = json.loads((path / "model_index.json").read_text())
            # a component recorded as [null, null] is absent by choice (an SD3 folder without T5)
            absent = {k: None for k, v in index.items() if isinstance(v, list) and v[0] is None}
            return DiffusionPipeline.from_pretrained(str(path), **{**absent, **_no_safety_checker("safety_checker" in index)},
                                                     **kwargs)
        except (OSError, ValueError) as e:
            raise GdistillError(f"cannot load the pipeline folder {path}: {_first_line(e)}") from None
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        try:
            return single_file_pipeline_class(path).from_single_file(str(path), **kwargs)
        except (OSError, ValueError) as e:
            raise GdistillError(f"cannot load the checkpoint {path} ({_first_line(e)}): offline, single-file loading "
                                "needs the model's config cached; use a diffusers folder instead") from None
    raise GdistillError(f"--teacher {teacher} does not exist: pass {', '.join(SD_TEACHERS)}, a diffusers pipeline "
                        f"folder or a single checkpoint file ({', '.join(SINGLE_FILE_SUFFIXES)})")


def _no_safety_checker(has_one: bool) -> dict:
    """SD 1.5 pipelines load without their safety checker (gdistill scores and distills images; the
    user decides what to filter); SDXL pipelines have none to leave out."""
    return {"safety_checker": None} if has_one else {}


def single_file_pipeline_class(path: Path):
    """The pipeline class of a single-file checkpoint, told from the .safetensors header's keys alone:
    StableDiffusion3Pipeline for SD3 (its MMDiT's `joint_blocks`), StableDiffusionXLPipeline for SDXL
    (a second text encoder under `conditioner.embedders.1.`), else StableDiffusionPipeline."""
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
        if any(key.startswith("model.diffusion_model.joint_blocks.") for key in keys):
            return StableDiffusion3Pipeline
        if any(key.startswith("conditioner.embedders.1.") for key in keys):
            return StableDiffusionXLPipeline
    return StableDiffusionPipeline


@functools.lru_cache(maxsize=1)
def _cached_pipeline(source: str, revision: str | None, variant: str | None):
    # One pipeline per process: the teacher's UNet and the encoders come from the same load.
    return load_sd_pipeline(source, revision, variant)


def vae_scale_factor(pipe) -> int:
    """Pixels per latent along a side: the pipeline's own figure, or from its VAE (DiTPipeline has none)."""
    return getattr(pipe, "vae_scale_factor", None) or 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def pipeline_for(record: dict):
    """The diffusers pipeline a run's `pipeline` record names (loaded once per process)."""
    return _cached_pipeline(record["source"], record.get("revision"), record.get("variant"))


def load_pipeline_teacher(teacher: str, revision: str | None = None, variant: str | None = None):
    """(teacher Denoiser, manifest, source) for a diffusers teacher, shaped like load_model's answer
    for a run: the manifest names the pipeline instead of holding weights."""
    record = pipeline_record(teacher, revision, variant)
    pipe = pipeline_for(record)
    model = pipeline_denoiser(pipe, teacher).eval().requires_grad_(False)
    # Runs name their parent by the weights' sha256; a pipeline is named by its record instead
    # (hashing gigabytes of weights on every start would cost more than it tells).
    identity = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    manifest = {"kind": "teacher", "steps": None, "w_range": None, "dataset": None, "pipeline": record,
                "model": model.config, "parameterization": model.parameterization,
                "files": {WEIGHTS: identity}, "lineage": []}
    return model, manifest, record["source"]


def pipeline_denoiser(pipe, teacher: str):
    """The teacher Denoiser of a pipeline: its UNet (SD 1.5, SDXL) or its SD3 transformer."""
    from .dit import LatentDiTDenoiser, is_dit_transformer
    from .sd3 import LatentTransformerDenoiser, is_sd3_transformer

    if getattr(pipe, "unet", None) is None:
        network = getattr(pipe, "transformer", None)
        if network is not None and is_sd3_transformer(network):
            return LatentTransformerDenoiser.from_pipeline(pipe)
        if network is not None and is_dit_transformer(network):
            return LatentDiTDenoiser.from_pipeline(pipe)
        raise GdistillError(f"--teacher {teacher} is a {type(pipe).__name__} with a {type(network).__name__}: "
                            "gdistill distills SD 1.5- and SDXL-family UNets, SD3-family transformers and DiT")
    latent = pipe.vae.config.latent_channels
    if pipe.unet.config.in_channels not in (latent, 2 * latent + 1):
        raise GdistillError(f"--teacher {teacher}'s UNet takes {pipe.unet.config.in_channels} input channels, its "
                            f"VAE makes {latent}: gdistill distills text-to-image ({latent}) and inpainting "
                            f"({2 * latent + 1}: latents, mask, masked-image latents) UNets")
    if is_sdxl_unet(pipe.unet.config) and pipe.unet.config.in_channels != latent:
        raise GdistillError(f"--teacher {teacher} is an SDXL inpainting UNet: gdistill distills SDXL text-to-image "
                            "UNets; inpainting is for SD 1.5-family teachers (sd15-inpaint) for now")
    return LatentUNetDenoiser.from_pipeline(pipe)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__
