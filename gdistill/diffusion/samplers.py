"""Samplers as plain functions of a denoiser, a starting z and a grid (as k-diffusion keeps its
samplers): no models, no files, no batching. `predict_x(z, t) -> x` is any denoiser with its
condition and w bound (models.denoise_fn: one call a step for a student, the guided pair for a
teacher).

A sampler is one update z_t -> z_s, given the prediction x and, for samplers that draw it, a fresh
noise tensor per grid step. The DDIM and stochastic samplers run on a uniform N-step grid
(s = t - 1/N), as does a DMD generator's re-noising one; the consistency sampler on the times its
run was distilled for (consistency_grid).
`SAMPLERS` is the registry the CLI reads (`--sampler`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .formulas import alpha_sigma_like, consistency_step, ddim_step_t, diffuse, keep_known, stochastic_step
from .schedules import Schedule

PredictX = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (schedule, z_t, x, t, s, step, noise) -> z_s; step = 1/N on a uniform grid
Update = Callable[..., torch.Tensor]


def ddim_update(schedule: Schedule, z_t, x, t, s, step, noise=None):
    """Deterministic DDIM from t to s (formulas.ddim_step)."""
    return ddim_step_t(schedule, z_t, x, t, s)


def stochastic_update(schedule: Schedule, z_t, x, t, s, step, noise):
    return stochastic_step(schedule, z_t, x, t, step, noise)


def consistency_update(schedule: Schedule, z_t, x, t, s, step, noise):
    return consistency_step(schedule, z_t, x, t, s, noise)


def renoise_update(schedule: Schedule, z_t, x, t, s, step, noise):
    """A multi-step generator's (DMD2): its x diffused to s with fresh noise, z_s = a_s x + s_s n."""
    return diffuse(x, noise, *alpha_sigma_like(schedule, s, z_t))


@dataclass(frozen=True)
class Sampler:
    name: str
    update: Update
    draws_noise: bool  # one fresh noise tensor per grid step
    summary: str
    consistency: bool = False  # for consistency runs only, on their own grid


SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("deterministic", ddim_update, False, "DDIM: z_s = a_s x + s_s (z_t - a_t x) / s_t"),
    Sampler("stochastic", stochastic_update, True,
            "the paper's: DDIM two grid steps down, then fresh noise back up one (formulas.stochastic_step)"),
    Sampler("consistency", consistency_update, True,
            "multistep consistency: z_s = a_s f(z_t) + s_s n, f = c_skip z_t + c_out x (formulas.consistency_step)",
            consistency=True),
    Sampler("renoise", renoise_update, True,
            "a multi-step generator's (DMD2): z_s = a_s x + s_s n, x the prediction at t, n fresh noise"),
)}


@dataclass
class KnownRegion:
    """Inpainting by replacement: where mask = 0 the sample follows x_known diffused to the current
    time (with noises[i] after grid step i), and is x_known itself at t = 0 (formulas.keep_known)."""
    x_known: torch.Tensor
    mask: torch.Tensor
    noises: list[torch.Tensor]


def sdedit_start(schedule: Schedule, x_in: torch.Tensor, noise: torch.Tensor, t_start: float) -> torch.Tensor:
    """SDEdit: the input diffused to the grid's first time, z = a_t x + s_t e (t = 0: the input)."""
    t = torch.full((len(x_in),), t_start, device=x_in.device)
    return diffuse(x_in, noise, *alpha_sigma_like(schedule, t, x_in))


def run_grid(predict_x: PredictX, z: torch.Tensor, schedule: Schedule, times: list[float], step: float,
             sampler: Sampler, noises: list[torch.Tensor] | None = None, clip: tuple[float, float] | None = None,
             known: KnownRegion | None = None, on_step: Callable[[], None] | None = None,
             ends: list[float] | None = None) -> torch.Tensor:
    """Run `sampler` from z at times[0] down the grid: at each t, x = predict_x(z, t), clipped to
    `clip` (the data range, pixel space), then z <- sampler.update to s (with noises[i] for samplers
    that draw noise), then the known region replaced. s = t - step on a uniform grid (step = 1/N),
    else ends[i]. Returns z at the last end (t = 0)."""
    for i, t_value in enumerate(times):
        t = torch.full((len(z),), t_value, device=z.device)
        s = (t - step).clamp_min(0) if ends is None else torch.full_like(t, ends[i])
        x = predict_x(z, t)
        if clip is not None:
            x = x.clamp(*clip)
        z = sampler.update(schedule, z, x, t, s, step, noises[i] if sampler.draws_noise else None)
        if known is not None:
            z = keep_known(z, known.x_known, known.mask, *alpha_sigma_like(schedule, s, z), known.noises[i])
        if on_step is not None:
            on_step()
    return z
