"""Stable-Diffusion-family teachers and their w-conditioned students, through diffusers.

Resolving `--teacher` to a diffusers pipeline without surprises offline, the Denoiser adapter, the
frozen VAE and text encoder (`SDEncoders`), and LoRA for the student. The student is the teacher's
`UNet2DConditionModel` rebuilt with `time_cond_proj_dim` (diffusers' own hook: a linear map of the
guidance embedding added to the timestep features) and that projection zero-initialised, so a fresh
student equals the teacher's conditional UNet. w is embedded with the very function the stock
StableDiffusionPipeline applies when its UNet has `time_cond_proj_dim` (with w = guidance_scale - 1,
and no classifier-free guidance pass), so an exported student samples in plain diffusers.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from pathlib import Path

import torch

from ..errors import GdistillError
from .base import Denoiser

# The maintained copies of the SD 1.5 weights on the Hugging Face hub.
SD_TEACHERS = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
               "sd15-inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting"}
GUIDANCE_EMBEDDING_DIM = 256  # as diffusers' LCM-distilled SD 1.5 UNets
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections, as diffusers' LoRA scripts


def guidance_scale_embedding(w: torch.Tensor, dim: int = GUIDANCE_EMBEDDING_DIM) -> torch.Tensor:
    """Sinusoidal features of 1000 w (paper's w = guidance_scale - 1), shape (len(w), dim): diffusers'
    StableDiffusionPipeline.get_guidance_scale_embedding, called here so training and the stock
    pipeline can never disagree on it."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.get_guidance_scale_embedding(None, w.float().flatten().cpu(), embedding_dim=dim)


def is_pipeline_teacher(arg) -> bool:
    """Whether --teacher / --from names a diffusers pipeline (not a gdistill run)."""
    path = Path(str(arg))
    if str(arg) in SD_TEACHERS and not path.exists():
        return True
    if path.is_dir():
        return (path / "model_index.json").is_file() and not (path / "manifest.yaml").is_file()
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


@functools.lru_cache(maxsize=1)
def _cached_pipeline(source: str, revision: str | None, variant: str | None):
    # One pipeline per process: the teacher's UNet and the encoders come from the same load.
    return load_sd_pipeline(source, revision, variant)


def pipeline_for(record: dict):
    """The diffusers pipeline a run's `pipeline` record names (loaded once per process)."""
    return _cached_pipeline(record["source"], record.get("revision"), record.get("variant"))


def load_pipeline_teacher(teacher: str, revision: str | None = None, variant: str | None = None):
    """(teacher Denoiser, manifest, source) for a diffusers teacher, shaped like load_model's answer
    for a run: the manifest names the pipeline instead of holding weights."""
    record = pipeline_record(teacher, revision, variant)
    pipe = pipeline_for(record)
    latent = pipe.vae.config.latent_channels
    if pipe.unet.config.in_channels not in (latent, 2 * latent + 1):
        raise GdistillError(f"--teacher {teacher}'s UNet takes {pipe.unet.config.in_channels} input channels, its "
                            f"VAE makes {latent}: gdistill distills text-to-image ({latent}) and inpainting "
                            f"({2 * latent + 1}: latents, mask, masked-image latents) UNets")
    model = LatentUNetDenoiser.from_pipeline(pipe).eval().requires_grad_(False)
    # Runs name their parent by the weights' sha256; a pipeline is named by its record instead
    # (hashing gigabytes of weights on every start would cost more than it tells).
    identity = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    manifest = {"kind": "teacher", "steps": None, "w_range": None, "dataset": None, "pipeline": record,
                "model": model.config, "parameterization": model.parameterization,
                "files": {"model.safetensors": identity}, "lineage": []}
    return model, manifest, record["source"]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


def pack_inpaint_condition(text: torch.Tensor, mask: torch.Tensor, masked_latents: torch.Tensor) -> torch.Tensor:
    """An inpainting model's condition as one (B, L) tensor: the text embedding (B, T, D), then the
    latent-size mask (B, 1, h, w) and the masked image's latents (B, C, h, w), flattened. One tensor
    because every sampler, guidance batch and training loop handles the condition as one (split,
    concatenated, moved); the model unpacks it (unpack_inpaint_condition)."""
    return torch.cat([text.flatten(1), mask.flatten(1).to(text.dtype), masked_latents.flatten(1).to(text.dtype)], 1)


def unpack_inpaint_condition(condition: torch.Tensor, text_shape: tuple[int, int], latent_hw) -> tuple[torch.Tensor, torch.Tensor]:
    """(text (B, T, D), mask and masked latents as UNet input channels (B, 1 + C, h, w))."""
    n = text_shape[0] * text_shape[1]
    text = condition[:, :n].reshape(len(condition), *text_shape)
    return text, condition[:, n:].reshape(len(condition), -1, *latent_hw)


class SDEncoders:
    """The teacher pipeline's frozen VAE and text encoder: prompts -> text embeddings, images in
    [-1, 1] -> latents (the posterior's mean times the VAE's scaling factor: deterministic, so it
    can be cached), latents -> images. Half precision on a GPU."""

    def __init__(self, record: dict):
        self.record = record
        self.pipe = pipeline_for(record)
        self.pipe.vae.requires_grad_(False).eval()
        self.pipe.text_encoder.requires_grad_(False).eval()
        self.device = torch.device("cpu")

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.latent_channels

    @property
    def scale_factor(self) -> int:
        return self.pipe.vae_scale_factor

    def to(self, device) -> SDEncoders:
        device = torch.device(device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        if device != self.device:
            self.pipe.vae.to(device, dtype)
            self.pipe.text_encoder.to(device, dtype)
            self.device = device
        return self

    def fingerprint(self) -> str:
        """Identifies the encoders' weights (for the latent cache): a few tensors' bytes."""
        h = hashlib.sha256(json.dumps(self.record, sort_keys=True).encode())
        for module in (self.pipe.vae, self.pipe.text_encoder):
            params = list(module.parameters())
            for tensor in (params[0], params[len(params) // 2], params[-1]):
                h.update(tensor.detach().flatten()[:1 << 16].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return self.pipe.encode_prompt(list(prompts), self.device, 1, False)[0].float()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        posterior = vae.encode(images.to(self.device, vae.dtype)).latent_dist
        return (posterior.mean * vae.config.scaling_factor).float()

    @torch.no_grad()
    def inpaint_condition(self, texts: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """An inpainting UNet's condition, prepared as diffusers' inpainting pipeline does: the mask
        (1 = repaint) resized (nearest) to the latents, and the latents of the image with the
        masked region blanked (image * (mask < 0.5), here at 0 = mid grey), packed with the text."""
        masked_latents = self.encode_images(images * (masks < 0.5))
        small = torch.nn.functional.interpolate(masks.float(), size=masked_latents.shape[-2:])
        return pack_inpaint_condition(texts.to(self.device), small.to(self.device), masked_latents)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (n, 3, H, W), on the CPU."""
        vae = self.pipe.vae
        out = [vae.decode((z.to(self.device, vae.dtype) / vae.config.scaling_factor)).sample.float().cpu()
               for z in latents.split(8)]
        return torch.cat(out).clamp(-1, 1)


class LatentUNetDenoiser(Denoiser):
    """An SD-family UNet (`UNet2DConditionModel`) behind the Denoiser interface, in latent space on
    SD's discrete schedule. The condition is a batch of text embeddings (B, tokens, dim); the
    unconditional input is the empty prompt's embedding (or a negative prompt's), kept as a buffer
    so it travels with the weights. A w-conditioned model gets w through `timestep_cond` (diffusers'
    hook), embedded as the stock pipeline does. An inpainting UNet (9 input channels) also reads the
    mask and the masked image's latents, packed into the condition (pack_inpaint_condition). The
    run's config holds the UNet's diffusers config, so build_denoiser rebuilds it."""

    kind = "sd-unet"
    w_parameters = ("unet.time_embedding.cond_proj.",)

    def student_config(self) -> dict:
        # w goes through diffusers' own guidance embedding (time_cond_proj_dim), which has no scale to choose
        return {**self.config, "w_conditioned": True}

    def __init__(self, config: dict, unet=None):
        from diffusers import UNet2DConditionModel

        super().__init__({"kind": self.kind, "num_classes": 0, "parameterization": "eps", **config})
        unet_config = dict(config["unet"])
        if self.w_conditioned:
            unet_config["time_cond_proj_dim"] = unet_config.get("time_cond_proj_dim") or GUIDANCE_EMBEDDING_DIM
        # A teacher adopts its pipeline's UNet (no copy, no random init of a billion weights).
        self.unet = unet if unet is not None else UNet2DConditionModel.from_config(unet_config)
        if self.w_conditioned and unet is None:  # zero start: a fresh student equals the teacher's conditional UNet
            torch.nn.init.zeros_(self.unet.time_embedding.cond_proj.weight)
        self.register_buffer("null_embedding", torch.zeros(config["null_embedding_shape"]))
        # the blocks FSDP shards one by one (accelerate's TRANSFORMER_BASED_WRAP reads this)
        self._no_split_modules = list(self.unet._no_split_modules or [])

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
                  "latent_size": unet_config["sample_size"],
                  "schedule": {"name": "sd-discrete", "num_train_timesteps": scheduler["num_train_timesteps"],
                               "beta_start": scheduler["beta_start"], "beta_end": scheduler["beta_end"],
                               "beta_schedule": scheduler["beta_schedule"]}}
        model = cls(config, unet=pipe.unet)
        model.null_embedding.copy_(null)
        return model

    @property
    def data_shape(self):
        size = self.config.get("latent_size") or self.unet.config.sample_size
        return (self.unet.config.out_channels, size, size)

    @property
    def inpainting(self) -> bool:
        """SD's inpainting UNets also read the mask and the masked image's latents (9 channels)."""
        return self.unet.config.in_channels != self.unet.config.out_channels

    def with_latent_size(self, size: int) -> LatentUNetDenoiser:
        """Train and sample at another resolution (the UNet is convolutional; SD 1.5 was trained
        at 64x64 latents, 512 px)."""
        self.config["latent_size"] = int(size)
        return self

    def null_condition(self, condition):
        null = self.null_embedding.to(condition.dtype).expand(len(condition), *self.null_embedding.shape)
        if not self.inpainting:
            return null
        # the unconditional branch keeps the mask and the masked image: only the text is dropped
        return torch.cat([null.flatten(1), condition[:, self.null_embedding.numel():]], 1)

    @contextlib.contextmanager
    def unconditional(self, embedding: torch.Tensor | None):
        """Within the block, guidance steers away from `embedding` (a negative prompt's, (tokens,
        dim)) instead of the empty prompt's: x_w = (1 + w) x(c) - w x(negative). None: no change."""
        if embedding is None:
            yield self
            return
        saved = self.null_embedding.clone()
        self.null_embedding.copy_(embedding)
        try:
            yield self
        finally:
            self.null_embedding.copy_(saved)

    def as_frozen_teacher(self, device) -> LatentUNetDenoiser:
        """A teacher's weights are read only: half precision on a GPU (outputs stay float32)."""
        device = torch.device(device)
        return self.to(device, torch.float16 if device.type == "cuda" else torch.float32)

    def network_output(self, z, model_t, condition, w):
        dtype = self.unet.dtype
        timestep_cond = None if w is None else guidance_scale_embedding(w, self.unet.config.time_cond_proj_dim).to(z.device, dtype)
        if self.inpainting:
            text, image = unpack_inpaint_condition(condition, tuple(self.null_embedding.shape), z.shape[-2:])
            z_in, condition = torch.cat([z, image], 1), text
        else:
            z_in = z
        out = self.unet(z_in.to(dtype), model_t, encoder_hidden_states=condition.to(dtype), timestep_cond=timestep_cond).sample
        return out.to(z.dtype)

    # --- training options ---------------------------------------------------------------------
    def add_lora(self, rank: int) -> None:
        """Train a rank-`rank` adapter (peft) on the attention projections, plus the new w-projection,
        instead of the whole UNet; merge_lora folds it back in before the run is written."""
        from peft import LoraConfig

        self.requires_grad_(False)
        self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
        if self.w_conditioned:
            self.unet.time_embedding.cond_proj.requires_grad_(True)

    def merge_lora(self) -> None:
        """W <- W + B A for every adapter, then drop the adapters: the run holds a plain UNet."""
        self.unet.fuse_lora()
        self.unet.unload_lora()
