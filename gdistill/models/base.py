"""One interface for every model: predict x from (z_t, t, condition, w).

A Denoiser wraps a network whose raw output is read in the run's parameterization (x, eps or v)
and converted to x with the run's schedule, so stages and samplers never see the difference.
"""
from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from torch import nn

from ..diffusion import broadcast, guided, schedule_from_config, x_from_prediction
from ..diffusion.formulas import PredictX, alpha_sigma_like
from ..errors import GdistillError


# How pixel and toy students scale w before its sinusoidal features (sin/cos of scale * w * f, with
# frequencies f from 1 down to 1e-4). Runs made before the scale was recorded in the model config
# used 1000, as for the timestep: over w in [0, 4] most features then turn many times and nearby w
# look unrelated (close to a hash of w). At 1 every feature is a smooth function of w; on toy2d it
# brought Stage 1's effective guidance at w = 0 / 4 from 0.10 / 3.93 to 0.06 / 3.97 (docs/pipeline.md).
LEGACY_W_SCALE = 1000.0
STUDENT_W_SCALE = 1.0


class GuidanceEmbedding(nn.Module):
    """The student's w-input: w -> sinusoidal features (as for the timestep) -> small MLP whose last
    layer starts at zero, added to the time embedding. Zero start => fresh student == teacher(cond)."""

    def __init__(self, features: int, out_dim: int, scale: float = LEGACY_W_SCALE):
        super().__init__()
        self.features, self.scale = features, scale
        self.mlp = TimestepEmbedding(features, out_dim)
        nn.init.zeros_(self.mlp.linear_2.weight)
        nn.init.zeros_(self.mlp.linear_2.bias)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        feats = get_timestep_embedding(w.float() * self.scale, self.features, flip_sin_to_cos=True,
                                       downscale_freq_shift=0)
        return self.mlp(feats.to(self.mlp.linear_1.weight.dtype))


class Denoiser(nn.Module):
    """Base adapter. `config` is everything needed to rebuild the model (it goes into the manifest)."""

    kind: str = ""
    w_parameters: tuple[str, ...] = ("w_embedding.",)  # what a student adds to its teacher

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.schedule = schedule_from_config(config["schedule"])
        self.parameterization = config.get("parameterization", "v")
        self.num_classes = int(config["num_classes"])
        self.w_conditioned = bool(config.get("w_conditioned", False))

    def student_config(self) -> dict:
        """The config of this teacher's Stage-1 student: the same network with a w-input."""
        return {**self.config, "w_conditioned": True, "w_embedding_scale": STUDENT_W_SCALE}

    @property
    def null_label(self) -> int:
        return self.num_classes

    def null_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """The unconditional input matching a batch of conditions: here the null class; text
        models return the empty prompt's embedding."""
        return torch.full_like(condition, self.null_label)

    @property
    def data_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def network_output(self, z, model_t, labels, w) -> torch.Tensor:
        raise NotImplementedError

    def to_device(self, device) -> Denoiser:
        """The model on `device`, moved only when its weights are elsewhere. Module.to walks every
        submodule and weight even when nothing moves: about 2 ms for the digits UNet, more than
        one of its network calls at batch 256 on an H100, paid by every sampling call otherwise."""
        target, weight = torch.device(device), next(self.parameters(), None)
        if weight is None or weight.device.type != target.type or (
                target.index is not None and weight.device.index != target.index):
            return self.to(target)
        return self

    def compile_for_sampling(self) -> None:
        """torch.compile the forward in place with CUDA graphs (mode reduce-overhead): at sampling
        batch sizes a call is bound by the host launching kernels, which a graph replay removes (on an
        H100: the digits 4-step student's sampling at batch 256 from 9,776 to 33,240 images/s, an
        SD-1.5-shaped student's UNet calls from 0.108 to 0.025 s an image; docs/benchmarks.md).
        A graph's outputs are overwritten by its next replay; every sampler uses a prediction before
        the next call, and cudagraph trees raise an error on reading an overwritten output, so misuse
        cannot pass silently. On a CPU the mode compiles as the default one does."""
        self.compile(mode="reduce-overhead")

    # --- training options (models that support them override these) ----------------------------
    def as_frozen_teacher(self, device) -> Denoiser:
        """The model on `device`, ready to be read as a frozen teacher."""
        return self.to(device)

    def enable_gradient_checkpointing(self) -> None:
        unet = getattr(self, "unet", None)
        if unet is None or not getattr(unet, "_supports_gradient_checkpointing", False):
            raise GdistillError(f"--gradient-checkpointing: the {self.kind} model does not support it; leave the flag out")
        unet.enable_gradient_checkpointing()

    def feature_layer(self) -> tuple[nn.Module, int]:
        """(the layer whose output is the network's bottleneck features, their channel width): what
        a discriminator head reads (dmd --gan-weight)."""
        raise GdistillError(f"--gan-weight: the {self.kind} model names no feature layer for a GAN head; leave the flag out")

    def add_lora(self, rank: int) -> None:
        raise GdistillError(f"--lora-rank: LoRA is for SD-family UNets, this is a {self.kind} model; leave the flag out")

    def merge_lora(self) -> None:
        raise NotImplementedError

    def predict_x(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                  w: torch.Tensor | None = None) -> torch.Tensor:
        """x_hat(z_t, t, labels, w). Goes through __call__ so module hooks and wrappers see it."""
        return self(z, t, labels, w)

    def forward(self, z, t, labels, w=None):
        if self.w_conditioned and w is None:
            raise ValueError("this model is w-conditioned: pass w")
        out = self.network_output(z, self.schedule.model_time(t), labels,
                                  w if self.w_conditioned else None)
        a, s = alpha_sigma_like(self.schedule, t, z)
        return x_from_prediction(out, z, a, s, self.parameterization)


def guided_predict_x(model: Denoiser, z, t, labels, w) -> torch.Tensor:
    """Classifier-free guidance of a teacher: x_c and x_u from ONE batched forward of 2B."""
    null = model.null_condition(labels)
    x = model.predict_x(torch.cat([z, z]), torch.cat([t, t]), torch.cat([labels, null]))
    x_c, x_u = x.chunk(2)
    return guided(x_c, x_u, broadcast(w.to(z.dtype), z))


def denoise_fn(model: Denoiser, labels: torch.Tensor, w: torch.Tensor) -> PredictX:
    """predict_x(z, t) with condition and w bound: one call for a w-conditioned model, the guided
    combination (two calls' worth, batched) for a plain teacher."""
    if model.w_conditioned:
        return lambda z, t: model.predict_x(z, t, labels, w)
    return lambda z, t: guided_predict_x(model, z, t, labels, w)


def calls_per_step(model: Denoiser) -> int:
    return 1 if model.w_conditioned else 2
