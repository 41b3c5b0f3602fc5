"""Train a classifier-free-guided teacher: labels dropped to the null class with probability p_uncond."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import TeachConfig, apply_preset, unet_widths
from ..data import Toy2D, load_dataset
from ..errors import GdistillError
from ..models import build_denoiser
from .common import train_and_commit
from .objectives import TeacherObjective


def teacher_model_config(data, parameterization: str, widths: list[int] | None = None) -> dict:
    base = {"num_classes": data.num_classes, "parameterization": parameterization,
            "schedule": {"name": "cosine", "logsnr_min": -20.0, "logsnr_max": 20.0}}
    if isinstance(data, Toy2D):
        if widths:
            raise GdistillError("--channels sizes the image UNet; the toy2d model is an MLP: leave it out")
        return {**base, "kind": "toy-mlp", "dim": 2}
    channels, size, _ = data.data_shape
    config = {**base, "kind": "pixel-unet", "image_size": size, "channels": channels}
    if widths:
        if size % 2 ** (len(widths) - 1):
            raise GdistillError(f"--channels {','.join(map(str, widths))} halves the {size}x{size} images "
                                f"{len(widths) - 1} times, which does not divide evenly: use fewer levels")
        config["block_out_channels"] = widths
    return config


def teach(config: TeachConfig) -> Path:
    data = load_dataset(config.dataset, config.image_size)
    model_config = teacher_model_config(data, config.parameterization, unet_widths(config))
    config = apply_preset(config, model_config["kind"], "teach")
    torch.manual_seed(config.seed)  # the model's initial weights
    model = build_denoiser(model_config)
    objective = TeacherObjective(data, model.schedule, config, model.null_label)
    manifest = {"kind": "teacher", "steps": None, "w_range": None, "dataset": data.spec,
                "class_names": data.class_names, "data_range": data.data_range, "parent": None,
                "lineage": []}
    return train_and_commit(model, objective, config, Path(config.out), manifest, f"teach {data.spec['name']}")
