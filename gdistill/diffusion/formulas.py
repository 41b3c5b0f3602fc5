"""The paper's formulas as pure functions over tensors (no models, no files).

Notation (Salimans & Ho 2022, "Progressive Distillation"; Meng et al. 2023, "On Distillation of
Guided Diffusion Models"): z_t = a_t x + s_t e, with a_t^2 + s_t^2 = 1 for variance-preserving
schedules and a_t + s_t = 1 for the rectified flow (the v conversions below assume the former, the
flow one the latter). Per-example times t have shape (B,); they broadcast over the remaining
dimensions of z.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn.functional import softplus

from .schedules import Schedule

# x_hat = predict_x(z_t, t): any denoiser with its condition and w already bound.
PredictX = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PARAMETERIZATIONS = ("x", "eps", "v")  # what `gdistill teach` trains; SD3-family teachers predict "flow"
LOSS_WEIGHTINGS = ("snr-trunc", "v-mse", "snr", "x-mse")


def broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, ...) so that it multiplies a batch shaped like `like`."""
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))


def alpha_sigma_like(schedule: Schedule, t: torch.Tensor, like: torch.Tensor):
    a, s = schedule.alpha_sigma(t)
    return broadcast(a, like).to(like.dtype), broadcast(s, like).to(like.dtype)


# --- prediction conversions (all affine in the prediction) -------------------------------------
def x_from_eps(z, eps, a, s):
    """x = (z - s e) / a"""
    return (z - s * eps) / a


def eps_from_x(z, x, a, s):
    """e = (z - a x) / s"""
    return (z - a * x) / s


def v_from_x_eps(x, eps, a, s):
    """v = a e - s x"""
    return a * eps - s * x


def x_from_v(z, v, a, s):
    """x = a z - s v"""
    return a * z - s * v


def x_from_flow(z, v, a, s):
    """The rectified flow's velocity v = e - x (SD3): x = z - s v, as z = (1 - s) x + s e."""
    return z - s * v


def x_from_prediction(prediction, z, a, s, parameterization: str):
    """The network's raw output, read as `parameterization`, converted to x."""
    if parameterization == "x":
        return prediction
    if parameterization == "eps":
        return x_from_eps(z, prediction, a, s)
    if parameterization == "v":
        return x_from_v(z, prediction, a, s)
    if parameterization == "flow":
        return x_from_flow(z, prediction, a, s)
    raise ValueError(f"unknown parameterization {parameterization!r} (known: {PARAMETERIZATIONS}, flow)")


def diffuse(x, eps, a, s):
    """z_t = a_t x + s_t e"""
    return a * x + s * eps


# --- guidance -------------------------------------------------------------------------------
def guided(cond, uncond, w):
    """x_w = (1 + w) x_c - w x_u  (paper's w; diffusers' guidance_scale = w + 1)."""
    return (1 + w) * cond - w * uncond


def effective_guidance(prediction, cond, uncond) -> float:
    """The guidance strength a prediction shows along the teacher's guidance direction d = x_c - x_u,
    fitted by least squares over the batch: w_eff = sum <x - x_c, d> / sum |d|^2. The teacher's own
    guided prediction (1 + w) x_c - w x_u gives exactly w."""
    direction = (cond - uncond).double()
    return float(((prediction - cond).double() * direction).sum() / direction.pow(2).sum())


# --- samplers' single steps ------------------------------------------------------------------
def ddim_step(z_t, x, a_t, s_t, a_s, s_s):
    """z_s = a_s x + s_s (z_t - a_t x) / s_t; at s = 0 (a_s = 1, s_s = 0) this is exactly x."""
    return a_s * x + s_s * (z_t - a_t * x) / s_t


def ddim_step_t(schedule: Schedule, z_t, x, t, s):
    a_t, s_t = alpha_sigma_like(schedule, t, z_t)
    a_s, s_s = alpha_sigma_like(schedule, s, z_t)
    return ddim_step(z_t, x, a_t, s_t, a_s, s_s)


def renoise(z_k, a_k, s_k, a_s, s_s, noise):
    """Go back up from k to s > k with fresh noise n (forward process from k to s):
    z_s = (a_s / a_k) z_k + sqrt(s_s^2 - (a_s / a_k)^2 s_k^2) n."""
    ratio = a_s / a_k
    return ratio * z_k + torch.sqrt((s_s**2 - ratio**2 * s_k**2).clamp_min(0)) * noise


def stochastic_step(schedule: Schedule, z_t, x, t, step: float, noise):
    """The paper's stochastic step on an N-step grid (step = 1/N): jump deterministically to
    k = t - 2/N, then add fresh noise to come back up to t - 1/N. From t = 1/N it is plain DDIM to 0."""
    s = (t - step).clamp_min(0)
    k = (t - 2 * step).clamp_min(0)
    a_k, s_k = alpha_sigma_like(schedule, k, z_t)
    a_s, s_s = alpha_sigma_like(schedule, s, z_t)
    z_k = ddim_step_t(schedule, z_t, x, t, k)
    stochastic = renoise(z_k, a_k, s_k, a_s, s_s, noise)
    last = broadcast(s <= 0, z_t)
    return torch.where(last, ddim_step_t(schedule, z_t, x, t, s), stochastic)


# --- distillation targets --------------------------------------------------------------------
def halving_target(z_t, z_t2, x2, a_t, s_t, a_t2, s_t2):
    """Stage 2: the x~ whose single DDIM step t -> t'' lands where the teacher's two steps land:
    x~ = (z_t'' - (s_t''/s_t) z_t) / (a_t'' - (s_t''/s_t) a_t); when t'' = 0 it is the teacher's x2."""
    ratio = s_t2 / s_t
    target = (z_t2 - ratio * z_t) / (a_t2 - ratio * a_t)
    return torch.where(s_t2 <= 0, x2, target)


def teacher_two_steps(schedule: Schedule, teacher: PredictX, z_t, t, step: float):
    """Two DDIM steps of the teacher, t -> t - step/2 -> t - step. Returns (z_t'', x2)."""
    t1, t2 = t - step / 2, (t - step).clamp_min(0)
    x1 = teacher(z_t, t)
    z_t1 = ddim_step_t(schedule, z_t, x1, t, t1)
    x2 = teacher(z_t1, t1)
    z_t2 = ddim_step_t(schedule, z_t1, x2, t1, t2)
    return z_t2, x2


def halving_target_t(schedule: Schedule, teacher: PredictX, z_t, t, step: float):
    """The Stage-2 regression target for a student on a grid of spacing `step` (= 1/N)."""
    z_t2, x2 = teacher_two_steps(schedule, teacher, z_t, t, step)
    t2 = (t - step).clamp_min(0)
    a_t, s_t = alpha_sigma_like(schedule, t, z_t)
    a_t2, s_t2 = alpha_sigma_like(schedule, t2, z_t)
    return halving_target(z_t, z_t2, x2, a_t, s_t, a_t2, s_t2)


# --- loss -------------------------------------------------------------------------------------
# --- consistency distillation (Song et al. 2023; LCM, Luo et al. 2023) -------------------------
CONSISTENCY_SIGMA_DATA = 0.5  # LCM's constants (diffusers' LCMScheduler): sigma_data, timestep scaling
CONSISTENCY_TIME_SCALING = 10.0


def consistency_scalings(model_time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LCM's boundary condition on the network's time input tau (schedule.model_time: 1000 t, or SD's
    step index), u = 10 tau: c_skip = 0.25 / (u^2 + 0.25), c_out = u / sqrt(u^2 + 0.25), so that
    c_skip = 1 and c_out = 0 at tau = 0. The same numbers as diffusers' LCMScheduler."""
    u = model_time.double() * CONSISTENCY_TIME_SCALING
    d2 = CONSISTENCY_SIGMA_DATA ** 2
    return d2 / (u ** 2 + d2), u / (u ** 2 + d2).sqrt()


def consistency_output(schedule: Schedule, z_t, x, t):
    """The consistency function f(z_t, t) = c_skip(t) z_t + c_out(t) x(z_t, t): f(z_0, 0) = z_0 exactly."""
    c_skip, c_out = consistency_scalings(schedule.model_time(t))
    return broadcast(c_skip.to(z_t.dtype), z_t) * z_t + broadcast(c_out.to(z_t.dtype), z_t) * x


def consistency_step(schedule: Schedule, z_t, x, t, s, noise):
    """Multistep consistency sampling: z_s = a_s f(z_t, t) + s_s n with fresh noise n; at s = 0, f."""
    return diffuse(consistency_output(schedule, z_t, x, t), noise, *alpha_sigma_like(schedule, s, z_t))


def distribution_matching_target(x, x_real, x_fake):
    """DMD's generator update as a regression target (Yin et al. 2024; x-prediction form). At a
    generator sample x diffused to x_t, the reverse-KL gradient is -(s_real - s_fake) = a_t (x_fake -
    x_real) / s_t^2 for the real (guided teacher) and fake (trained on the generator) denoisers'
    predictions; DMD's weight makes it g = (x_fake - x_real) / mean|x - x_real| (per example, over
    the dimensions). The target is x - g: 0.5 |x - stopgrad(x - g)|^2 has gradient g in x."""
    scale = (x - x_real).abs().flatten(1).mean(1).clamp_min(1e-8)
    return x - (x_fake - x_real) / broadcast(scale, x)


def discriminator_loss(logit_real, logit_fake):
    """The non-saturating GAN's classifier loss (DMD2's on the fake score's features):
    softplus(-D(real)) + softplus(D(fake)), i.e. -log sigmoid(D(real)) - log(1 - sigmoid(D(fake)))."""
    return softplus(-logit_real).mean() + softplus(logit_fake).mean()


def generator_gan_loss(logit_fake):
    """The non-saturating generator term: softplus(-D(fake)) = -log sigmoid(D(fake))."""
    return softplus(-logit_fake).mean()


def pseudo_huber_loss(prediction, target, c: float):
    """Mean over the batch of sqrt(|a - b|^2 + c^2) - c per example (|.| over all dimensions); c = 0
    is the plain distance. Song & Dhariwal 2023 take c = 0.00054 sqrt(dimensions)."""
    squared = (prediction - target).pow(2).flatten(1).sum(1)
    return ((squared + c * c).sqrt() - c).mean()


def consistency_grid(steps: int, solver_steps: int) -> list[float]:
    """The start times of `steps`-step consistency sampling on a `solver_steps` grid (t = i / solver_steps),
    evenly spaced from t = 1 as diffusers' LCMScheduler picks them: index floor(k L / N) of the grid
    read from t = 1 down, k = 0 .. N - 1 (N = steps, L = solver_steps)."""
    if not 1 <= steps <= solver_steps:
        raise ValueError(f"consistency sampling takes 1 to {solver_steps} steps on its {solver_steps}-step grid, got {steps}")
    return [(solver_steps - k * solver_steps // steps) / solver_steps for k in range(steps)]


def loss_weight(log_snr: torch.Tensor, weighting: str) -> torch.Tensor:
    """Weight on ||x - x*||^2. snr-trunc: max(1, SNR) = max(||x-x*||^2, ||e-e*||^2);
    v-mse: 1 + SNR = ||v-v*||^2; snr: SNR = ||e-e*||^2; x-mse: 1."""
    snr = torch.exp(log_snr)
    if weighting == "snr-trunc":
        return snr.clamp_min(1.0)
    if weighting == "v-mse":
        return 1.0 + snr
    if weighting == "snr":
        return snr
    if weighting == "x-mse":
        return torch.ones_like(snr)
    raise ValueError(f"unknown loss weighting {weighting!r} (known: {LOSS_WEIGHTINGS})")


def guidance_loss_weight(w: torch.Tensor, power: float) -> torch.Tensor:
    """(1 + w)^-power: the guided target (1 + w) x_c - w x_u moves by (1 + w) times any change of
    x_c, so at power 2 every w's relative error weighs alike; at 0 (every weight 1) the examples
    at large w, whose errors are largest, take most of the gradient."""
    return (1.0 + w).pow(-power)


def weighted_x_loss(x_pred, x_target, log_snr, weighting: str, example_weight: torch.Tensor | None = None):
    """mean over the batch of weight(l_t) [* example_weight] * mean over dimensions of (x_pred - x_target)^2."""
    per_example = (x_pred - x_target).pow(2).flatten(1).mean(1)
    weight = loss_weight(log_snr.to(per_example.dtype), weighting)
    if example_weight is not None:
        weight = weight * example_weight.to(per_example.dtype)
    return (weight * per_example).mean()


def keep_known(z_s, x_known, mask, a_s, s_s, noise):
    """Inpainting by replacement: z_s <- m z_s + (1 - m)(a_s x + s_s n). Where m = 0 (keep) the
    sample follows the input diffused to the current time; at s = 0 it is the input itself."""
    return mask * z_s + (1 - mask) * diffuse(x_known, noise, a_s, s_s)


def snap_strength(strength: float, steps: int) -> int:
    """SDEdit's strength on an N-step grid: the number of steps k = floor(strength N + 1/2) (the
    nearest, halves up) that are run, starting from the input diffused to t = k / N (0: the
    input, N: sampling from noise)."""
    return int(min(max(math.floor(strength * steps + 0.5), 0), steps))


def sampling_grid(steps: int) -> list[float]:
    """The N-step grid's starting times, t = 1, (N-1)/N, ..., 1/N."""
    return [(steps - i) / steps for i in range(steps)]
