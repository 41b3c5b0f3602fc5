"""The training objectives, one small class each over one shared noisy batch.

Every objective draws, from the run's generator and in this order, (x, condition, noise) for the
global batch, its own per-example draws (label dropout, w), the times t, and then diffuses
z_t = a_t x + s_t e. The x-prediction objectives' loss is the weighted x-loss of the network's
prediction against their target (diffusion.weighted_x_loss):

    teach        target x                                (labels dropped to null with p_uncond)
    match        target (1 + w) x_c - w x_u              (the teacher's guided prediction)
    halve        target x~ of two teacher DDIM steps     (t on the student's N-step grid)

and consistency distillation compares consistency functions f = c_skip z + c_out x instead:

    consistency  f_theta(z_t, t) against f_ema(z^_s, s), z^_s one guided teacher DDIM step from t

Distribution matching (DMD2) trains two networks in turns, a generator and a fake score, and its
generator needs no data, only conditions:

    dmd          fake score: target x_g (the generator's sample);  generator: target x_g - g,
                 g = (x_fake - x_real) / mean|x_g - x_real| at x_g diffused (formulas.distribution_matching_target)

Once-per-run setup (a frozen teacher put on the device) is `prepare`, which the training loop
calls before the first step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data import Dataset
from ..diffusion import (alpha_sigma_like, consistency_output, ddim_step_t, diffuse, distribution_matching_target,
                         halving_target_t, pseudo_huber_loss, sampling_grid, weighted_x_loss)
from ..errors import GdistillError
from ..models import Denoiser, denoise_fn, guided_predict_x
from ..train import Objective
from .common import draw_batch, draw_t, draw_w, micro_batch_size, process_share


@dataclass
class NoisyBatch:
    """This process's share of one loss evaluation's batch."""
    x: torch.Tensor
    labels: torch.Tensor
    t: torch.Tensor
    z: torch.Tensor
    w: torch.Tensor | None = None  # for w-conditioned students


class NoisyBatchObjective(Objective):
    """The shared step: draw a NoisyBatch, compute `target(batch)` without gradients and
    `predict(net, batch)` with them, and return `loss(prediction, target, batch)`."""

    loss_name = "x_loss"

    def __init__(self, data: Dataset, schedule, config):
        self.data, self.schedule, self.config = data, schedule, config

    def draw_extras(self, batch: int, labels: torch.Tensor, generator: torch.Generator, device):
        """(labels, w) after the objective's own per-example draws; drawn before t."""
        return labels, None

    def draw_times(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return draw_t(self.schedule, batch, generator)

    def target(self, batch: NoisyBatch) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, net, batch: NoisyBatch) -> torch.Tensor:
        """The network's x-prediction."""
        return net(batch.z, batch.t, batch.labels) if batch.w is None else net(batch.z, batch.t, batch.labels, batch.w)

    def loss(self, prediction, target, batch: NoisyBatch) -> torch.Tensor:
        return weighted_x_loss(prediction, target, self.schedule.log_snr(batch.t), self.config.weighting)

    def __call__(self, net, generator, device):
        size = micro_batch_size(self.config)
        x, labels, eps = draw_batch(self.data, size, generator, device)
        labels, w = self.draw_extras(size, labels, generator, device)
        t = self.draw_times(size, generator).to(device)
        batch = NoisyBatch(x, labels, t, diffuse(x, eps, *alpha_sigma_like(self.schedule, t, x)), w)
        with torch.no_grad():
            target = self.target(batch)
        loss = self.loss(self.predict(net, batch), target, batch)
        return loss, {self.loss_name: loss.item()}


class TeacherObjective(NoisyBatchObjective):
    """Classifier-free-guided training: the label is dropped to the null class with probability
    p_uncond, so one network learns x_c and x_u."""

    def __init__(self, data: Dataset, schedule, config, null_label: int):
        super().__init__(data, schedule, config)
        self.null_label = null_label

    def draw_extras(self, batch, labels, generator, device):
        drop = torch.rand(batch, generator=generator)[process_share(batch)].to(device) < self.config.p_uncond
        return torch.where(drop, torch.full_like(labels, self.null_label), labels), None

    def target(self, batch):
        return batch.x


class FrozenTeacherObjective(NoisyBatchObjective):
    """A w-conditioned student against a frozen teacher, w ~ draw_w over [w_min, w_max]."""

    def __init__(self, data: Dataset, teacher: Denoiser, config, w_min: float, w_max: float):
        super().__init__(data, teacher.schedule, config)
        self.teacher, self.w_min, self.w_max = teacher, w_min, w_max

    def prepare(self, device, model, ema):
        self.teacher.as_frozen_teacher(device)
        if self.config.compile:
            self.teacher.compile()

    def draw_extras(self, batch, labels, generator, device):
        return labels, draw_w(batch, self.w_min, self.w_max, generator, self.config.w_end_fraction).to(device)


class GuidanceMatching(FrozenTeacherObjective):
    """Stage 1: the student's S(z_t, c, w) learns the guided teacher's (1 + w) x_c - w x_u."""

    loss_name = "match_loss"

    def target(self, batch):
        return guided_predict_x(self.teacher, batch.z, batch.t, batch.labels, batch.w)


class StepHalving(FrozenTeacherObjective):
    """A progressive-distillation round: on the student's N-step grid (t = i / N), one student step
    lands where two DDIM steps of the teacher on the 2N-step grid land (diffusion.halving_target_t)."""

    loss_name = "halve_loss"

    def __init__(self, data: Dataset, teacher: Denoiser, config, w_min: float, w_max: float, steps: int):
        super().__init__(data, teacher, config, w_min, w_max)
        self.steps = steps

    def draw_times(self, batch, generator):
        i = torch.randint(1, self.steps + 1, (batch,), generator=generator)[process_share(batch)]
        return i.float() / self.steps

    def target(self, batch):
        return halving_target_t(self.schedule, denoise_fn(self.teacher, batch.labels, batch.w),
                                batch.z, batch.t, 1.0 / self.steps)


class ConsistencyDistillation(FrozenTeacherObjective):
    """LCM-style consistency distillation (Luo et al. 2023) of a guided teacher, or of a Stage-1
    model (one call a solver step), into a w-conditioned student. On the solver grid t_n = n / N:
    n ~ U{1..N}, t = t_n, s = t_(n-1); one DDIM step of the teacher's guided prediction at w takes
    z_t to z^_s; the student's f(z_t, t) = c_skip z_t + c_out x_theta(z_t, t) learns the same function
    of the EMA weights (the target network, the training loop's ShadowWeights) at (z^_s, s), without
    gradients. At s = 0 the target is z^_0, the teacher's own x (the boundary condition). Distance:
    mean squared error (l2), or pseudo-Huber with c = huber_c (default 0.00054 sqrt(dimensions))."""

    loss_name = "consistency_loss"

    def __init__(self, data: Dataset, teacher: Denoiser, config, w_min: float, w_max: float):
        super().__init__(data, teacher, config, w_min, w_max)
        self.solver_steps = config.solver_steps
        self.model = self.ema = None

    def prepare(self, device, model, ema):
        super().prepare(device, model, ema)
        if ema is None:
            raise GdistillError("consistency distillation needs --ema-decay > 0: the EMA is its target network")
        self.model, self.ema = model, ema

    def draw_times(self, batch, generator):
        n = torch.randint(1, self.solver_steps + 1, (batch,), generator=generator)[process_share(batch)]
        return n.float() / self.solver_steps

    def target(self, batch):
        s = (batch.t - 1.0 / self.solver_steps).clamp_min(0)
        x_teacher = denoise_fn(self.teacher, batch.labels, batch.w)(batch.z, batch.t)
        z_s = ddim_step_t(self.schedule, batch.z, x_teacher, batch.t, s)
        x_ema = self.ema.call(self.model, z_s, s, batch.labels, batch.w)
        return consistency_output(self.schedule, z_s, x_ema, s)

    def predict(self, net, batch):
        return consistency_output(self.schedule, batch.z, super().predict(net, batch), batch.t)

    def loss(self, prediction, target, batch):
        if self.config.loss == "huber":
            c = self.config.huber_c or 0.00054 * math.sqrt(prediction[0].numel())
            return pseudo_huber_loss(prediction, target, c)
        return (prediction - target).pow(2).mean()


class GeneratorAndFakeScore(torch.nn.Module):
    """DMD's two trained networks as one module, so that the one training loop (one optimizer, one
    EMA, one checkpoint) trains both: `forward(part, ...)` runs one of them, through whatever wraps
    the module (DDP's gradient hooks, FSDP's gathers). The run ships the generator."""

    def __init__(self, generator: Denoiser, fake_score: Denoiser):
        super().__init__()
        self.generator, self.fake_score = generator, fake_score

    def forward(self, part: str, *args):
        return getattr(self, part)(*args)


# DMD's diffusion times for both losses: t ~ U[0.02, 0.98] (its 20..980 of 1000 steps)
DMD_TIME_RANGE = (0.02, 0.98)


class DistributionMatching(FrozenTeacherObjective):
    """Distribution-matching distillation (DMD2, Yin et al. 2024) into a w-conditioned generator.
    Steps alternate (the two time-scale rule): `fake_updates` steps train the fake score, a
    denoiser of the generator's own samples at (c, w), by the x-loss; then one step trains the
    generator by the distribution-matching gradient between the real score (the teacher guided at
    the example's w, or a Stage-1 model) and the fake one. No regression to teacher samples.
    A k-step generator (generator_steps) samples on the uniform k-step grid, re-noising between
    steps; training draws one of its grid times per example and makes the generator's input there
    the way sampling does, by running the generator itself from noise (DMD2's backward simulation)."""

    loss_name = "dmd_loss"
    trains_in_turns = True

    def __init__(self, data: Dataset, teacher: Denoiser, config, w_min: float, w_max: float):
        super().__init__(data, teacher, config, w_min, w_max)
        self.updates_generator = False

    def at_step(self, step):
        self.updates_generator = step % (self.config.fake_updates + 1) == self.config.fake_updates

    def generator_input(self, net, size: int, noise, labels, w, generator: torch.Generator):
        """(z, t) per example: one of the generator's grid times, and the state its sampling
        reaches there from `noise` (re-noised with fresh draws, as the renoise sampler does)."""
        grid = sampling_grid(self.config.generator_steps)
        share, device = process_share(size), noise.device
        index = torch.randint(0, len(grid), (size,), generator=generator)
        renoise = [torch.randn((size, *noise.shape[1:]), generator=generator)[share].to(device) for _ in grid[1:]]
        states = [noise]
        with torch.no_grad():
            # as far down the grid as any example of the global batch needs (the same number of
            # calls in every process: under FSDP each one gathers the weights)
            for k in range(int(index.max())):
                t = torch.full((len(noise),), grid[k], device=device)
                x = net("generator", states[-1], t, labels, w)
                states.append(diffuse(x, renoise[k], *alpha_sigma_like(self.schedule, torch.full_like(t, grid[k + 1]), x)))
        index = index[share].to(device)
        z = torch.stack(states)[index, torch.arange(len(index), device=device)]
        return z, torch.tensor(grid, device=device)[index]

    def __call__(self, net, generator, device):
        size = micro_batch_size(self.config)
        _, labels, noise = draw_batch(self.data, size, generator, device)  # DMD uses conditions, not images
        labels, w = self.draw_extras(size, labels, generator, device)
        z_in, t_in = self.generator_input(net, size, noise, labels, w, generator)
        low, high = DMD_TIME_RANGE
        share = process_share(size)
        t = (low + (high - low) * torch.rand(size, generator=generator)[share]).to(device)
        eps = torch.randn((size, *noise.shape[1:]), generator=generator)[share].to(device)
        if not self.updates_generator:  # the fake score learns to denoise the generator's samples
            with torch.no_grad():
                x_g = net("generator", z_in, t_in, labels, w)
            z_t = diffuse(x_g, eps, *alpha_sigma_like(self.schedule, t, x_g))
            loss = weighted_x_loss(net("fake_score", z_t, t, labels, w), x_g, self.schedule.log_snr(t),
                                   self.config.weighting)
            return loss, {"fake_score_loss": loss.item()}
        x_g = net("generator", z_in, t_in, labels, w)
        with torch.no_grad():
            z_t = diffuse(x_g, eps, *alpha_sigma_like(self.schedule, t, x_g))
            x_real = denoise_fn(self.teacher, labels, w)(z_t, t)
            x_fake = net("fake_score", z_t, t, labels, w)
            target = distribution_matching_target(x_g, x_real, x_fake)
        loss = 0.5 * (x_g - target).pow(2).mean()
        return loss, {self.loss_name: loss.item()}
