"""What every stage does around its loss: prepare the output, train on the shared loop, commit the run."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..config import settings_dict
from ..data import Dataset, load_dataset
from ..errors import GdistillError
from ..models import Denoiser
from ..run import RAW_WEIGHTS, WEIGHTS, commit_run, prepare_output
from ..train import LoopSettings, LossFn, train


def fingerprint(*parts) -> str:
    """Identifies a run's inputs, so resume only picks up a checkpoint of the same command."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_data(data: str | None, manifest: dict, cache: str | None = None,
                  resolution: int | None = None) -> Dataset:
    """What a stage trains on: --data, else the data recorded in the (teacher's) manifest. Runs of
    a diffusers teacher (manifest `pipeline`) train on image-caption pairs encoded by that
    pipeline's frozen VAE and text encoder."""
    if not manifest.get("pipeline"):
        if cache:
            raise GdistillError("--cache holds VAE latents and text embeddings for SD-family teachers; leave it out here")
        return load_dataset(data) if data else load_dataset(manifest["dataset"])
    from ..data.captions import CaptionDataset
    from ..data.latents import InpaintingCaptionData, LatentCaptionData
    from ..models.latent import SDEncoders

    recorded = manifest.get("dataset") or {}
    source = data or recorded.get("path")
    if not source:
        raise GdistillError("an SD-family teacher needs --data: a folder of NAME.jpg + NAME.txt, a .jsonl/.csv "
                            "table with image and text columns, or webdataset shards ('shards/{00000..00099}.tar')")
    encoders = SDEncoders(manifest["pipeline"])
    resolution = resolution or recorded.get("resolution") or \
        encoders.pipe.unet.config.sample_size * encoders.scale_factor  # the UNet's native size
    unet = manifest["model"]["unet"]
    kind = InpaintingCaptionData if unet["in_channels"] != unet["out_channels"] else LatentCaptionData
    return kind(CaptionDataset(source, resolution), encoders, cache)


def prepare_student(student: Denoiser, config) -> Denoiser:
    """The training options that change the student: a LoRA adapter, gradient checkpointing."""
    if config.lora_rank:
        student.add_lora(config.lora_rank)
    if config.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    return student


def draw_w(batch: int, w_min: float, w_max: float, generator: torch.Generator) -> torch.Tensor:
    """w ~ U[w_min, w_max], one per example."""
    return w_min + (w_max - w_min) * torch.rand(batch, generator=generator)


def draw_batch(data: Dataset, batch: int, generator: torch.Generator, device):
    x, labels = data.to(device).batch(batch, generator)
    eps = torch.randn(x.shape, generator=generator)
    return x.to(device), labels.to(device), eps.to(device)


def train_and_commit(model: Denoiser, loss_fn: LossFn, config, out: Path, manifest: dict,
                     description: str, lr_decay: bool = False, parent_sha: str | None = None) -> Path:
    work = prepare_output(out, config.overwrite)
    settings = settings_dict(config)
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise GdistillError("--mixed-precision fp16 needs a CUDA GPU: use bf16 or no on this machine")
    loop = LoopSettings(steps=config.train_steps, lr=config.lr, ema_decay=config.ema_decay,
                        grad_clip=config.grad_clip, seed=config.seed, log_every=config.log_every,
                        checkpoint_every=config.checkpoint_every, lr_decay=lr_decay,
                        mixed_precision=config.mixed_precision)
    # Resume only when what shapes the result matches (not --overwrite or the logging interval).
    shaping = {k: v for k, v in settings.items() if k not in ("overwrite", "log_every", "checkpoint_every", "cache")}
    model, ema = train(model, loss_fn, loop, work, description,
                       fingerprint(shaping, manifest.get("round"), parent_sha))
    if getattr(config, "lora_rank", 0):  # the run holds plain weights: W + B A
        for m in (model, ema):
            if m is not None:
                m.merge_lora()
    weights = {WEIGHTS: (ema or model).state_dict()}
    if ema is not None:
        weights[RAW_WEIGHTS] = model.state_dict()
    manifest = {**manifest, "model": model.config, "parameterization": model.parameterization,
                "schedule": model.schedule.to_config(), "ema_decay": config.ema_decay,
                "settings": settings}
    return commit_run(work, Path(out), manifest, weights)
