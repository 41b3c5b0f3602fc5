"""Stable-Diffusion-family teachers and their w-conditioned students, through diffusers.

Groundwork for the latent-space stages (issue 4): resolving `--teacher` to a diffusers pipeline
without surprises offline, and the Denoiser adapter. The student is the teacher's
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
from .base import Denoiser

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


class LatentUNetDenoiser(Denoiser):
    """An SD-family UNet (`UNet2DConditionModel`) behind the Denoiser interface, in latent space on
    SD's discrete schedule. The condition is a batch of text embeddings (B, tokens, dim); the
    unconditional input is the empty prompt's embedding, kept as a buffer so it travels with the
    weights. A w-conditioned model gets w through `timestep_cond` (diffusers' hook), embedded as the
    stock pipeline does. The run's config holds the UNet's diffusers config, so build_denoiser
    rebuilds it."""

    kind = "sd-unet"
    w_parameters = ("unet.time_embedding.cond_proj.",)

    def __init__(self, config: dict):
        from diffusers import UNet2DConditionModel

        super().__init__({"kind": self.kind, "num_classes": 0, "parameterization": "eps", **config})
        unet_config = dict(config["unet"])
        if self.w_conditioned:
            unet_config["time_cond_proj_dim"] = unet_config.get("time_cond_proj_dim") or GUIDANCE_EMBEDDING_DIM
        self.unet = UNet2DConditionModel.from_config(unet_config)
        if self.w_conditioned:  # zero start: a fresh student equals the teacher's conditional UNet
            torch.nn.init.zeros_(self.unet.time_embedding.cond_proj.weight)
        self.register_buffer("null_embedding", torch.zeros(config["null_embedding_shape"]))

    @classmethod
    def from_pipeline(cls, pipe) -> LatentUNetDenoiser:
        """The teacher of a diffusers SD pipeline, with the pipeline's schedule and empty-prompt
        embedding (its student: models.make_student)."""
        scheduler = pipe.scheduler.config
        if scheduler.get("prediction_type", "epsilon") != "epsilon":
            raise GdistillError(f"the teacher predicts {scheduler['prediction_type']}; gdistill reads SD teachers as eps models for now")
        with torch.no_grad():
            null = pipe.encode_prompt("", "cpu", 1, False)[0][0]
        unet_config = {k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")}
        config = {"unet": unet_config, "null_embedding_shape": list(null.shape),
                  "schedule": {"name": "sd-discrete", "num_train_timesteps": scheduler["num_train_timesteps"],
                               "beta_start": scheduler["beta_start"], "beta_end": scheduler["beta_end"],
                               "beta_schedule": scheduler["beta_schedule"]}}
        model = cls(config)
        model.unet.load_state_dict(pipe.unet.state_dict())
        model.null_embedding.copy_(null)
        return model

    @property
    def data_shape(self):
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, size, size)

    def null_condition(self, condition):
        return self.null_embedding.to(condition.dtype).expand(len(condition), *self.null_embedding.shape)

    def network_output(self, z, model_t, condition, w):
        timestep_cond = None if w is None else guidance_scale_embedding(w, self.unet.config.time_cond_proj_dim).to(z)
        return self.unet(z, model_t, encoder_hidden_states=condition, timestep_cond=timestep_cond).sample
