"""What every stage does around its loss: prepare the output, train on the shared loop, commit the run."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..config import settings_dict
from ..data import Dataset
from ..models import Denoiser
from ..run import RAW_WEIGHTS, WEIGHTS, commit_run, prepare_output
from ..train import LoopSettings, LossFn, train


def fingerprint(*parts) -> str:
    """Identifies a run's inputs, so resume only picks up a checkpoint of the same command."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def draw_w(batch: int, w_min: float, w_max: float, generator: torch.Generator) -> torch.Tensor:
    """w ~ U[w_min, w_max], one per example."""
    return w_min + (w_max - w_min) * torch.rand(batch, generator=generator)


def draw_batch(data: Dataset, batch: int, generator: torch.Generator, device):
    x, labels = data.batch(batch, generator)
    eps = torch.randn(x.shape, generator=generator)
    return x.to(device), labels.to(device), eps.to(device)


def train_and_commit(model: Denoiser, loss_fn: LossFn, config, out: Path, manifest: dict,
                     description: str, lr_decay: bool = False, parent_sha: str | None = None) -> Path:
    work = prepare_output(out, config.overwrite)
    settings = settings_dict(config)
    loop = LoopSettings(steps=config.train_steps, lr=config.lr, ema_decay=config.ema_decay,
                        grad_clip=config.grad_clip, seed=config.seed, log_every=config.log_every,
                        checkpoint_every=config.checkpoint_every, lr_decay=lr_decay)
    # Resume only when what shapes the result matches (not --overwrite or the logging interval).
    shaping = {k: v for k, v in settings.items() if k not in ("overwrite", "log_every", "checkpoint_every")}
    model, ema = train(model, loss_fn, loop, work, description,
                       fingerprint(shaping, manifest.get("round"), parent_sha))
    weights = {WEIGHTS: (ema or model).state_dict()}
    if ema is not None:
        weights[RAW_WEIGHTS] = model.state_dict()
    manifest = {**manifest, "model": model.config, "parameterization": model.parameterization,
                "schedule": model.schedule.to_config(), "ema_decay": config.ema_decay,
                "settings": settings}
    return commit_run(work, Path(out), manifest, weights)
