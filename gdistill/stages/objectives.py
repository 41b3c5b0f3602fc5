"""The training objectives, one small class each over one shared noisy batch.

Every objective draws, from the run's generator and in this order, (x, condition, noise) for the
global batch, its own per-example draws (label dropout, w), the times t, and then diffuses
z_t = a_t x + s_t e. The x-prediction objectives' loss is the weighted x-loss of the network's
prediction against their target (diffusion.weighted_x_loss):

    teach        target x                                (labels dropped to null with p_uncond)
    match        target (1 + w) x_c - w x_u              (the teacher's guided prediction)
    halve        target x~ of two teacher DDIM steps     (t on the student's N-step grid)

match and halve also weigh each example by (1 + w)^-p (--w-loss-power; formulas.guidance_loss_weight)

and consistency distillation compares consistency functions f = c_skip z + c_out x instead:

    consistency  f_theta(z_t, t) against f_ema(z^_s, s), z^_s one guided teacher DDIM step from t

Distribution matching (DMD2) trains two networks in turns, a generator and a fake score, and its
generator needs no data, only conditions:

    dmd          fake score: target x_g (the generator's sample);  generator: target x_g - g,
                 g = (x_fake - x_real) / mean|x_g - x_real| at x_g diffused (formulas.distribution_matching_target)
                 (+ with --regression-weight: target the teacher's ODE sample from the generator's noise)

Once-per-run setup (a frozen teacher put on the device) is `prepare`, which the training loop
calls before the first step.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from ..data import Dataset
from ..diffusion import (alpha_sigma_like, consistency_output, ddim_step_t, diffuse, discriminator_loss,
                         distribution_matching_target, generator_gan_loss, guidance_loss_weight, halving_target_t,
                         pseudo_huber_loss, sampling_grid, weighted_x_loss)
from ..diffusion.samplers import SAMPLERS, run_grid
from ..errors import GdistillError
from ..models import Denoiser, denoise_fn, guided_predict_x
from ..train import Objective, process_state
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

    def loss(self, prediction, target, batch):
        """The weighted x-loss, each example also weighted by (1 + w)^-p (p = --w-loss-power)."""
        power = self.config.w_loss_power
        return weighted_x_loss(prediction, target, self.schedule.log_snr(batch.t), self.config.weighting,
                               guidance_loss_weight(batch.w, power) if power else None)


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


def pooled(features) -> torch.Tensor:
    """A feature layer's output as (B, C): spatial maps (B, C, H, W) and token sequences (B, N, C)
    averaged; a block returning a tuple (SD3's joint blocks: text, image tokens) gives its last."""
    if isinstance(features, tuple):
        features = features[-1]
    if features.ndim == 4:
        return features.mean((2, 3))
    return features.mean(1) if features.ndim == 3 else features


class GeneratorAndFakeScore(torch.nn.Module):
    """DMD's two trained networks as one module, so that the one training loop (one optimizer, one
    EMA, one checkpoint) trains both: `forward(part, ...)` runs one of them, through whatever wraps
    the module (DDP's gradient hooks, FSDP's gathers). The run ships the generator.
    With `gan_head`, the fake score is also a discriminator (DMD2): a small head reads its
    bottleneck features (Denoiser.feature_layer, kept by a forward hook) and gives a real/fake logit;
    `critic(...)` returns (the fake score's x prediction, the logit) from one forward."""

    def __init__(self, generator: Denoiser, fake_score: Denoiser, gan_head: bool = False):
        super().__init__()
        self.generator, self.fake_score = generator, fake_score
        self.gan_head = None
        if gan_head:
            layer, width = fake_score.feature_layer()
            self.gan_head = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, 1))
            torch.nn.init.zeros_(self.gan_head[-1].weight)  # logit 0 at the start: the GAN terms begin neutral
            torch.nn.init.zeros_(self.gan_head[-1].bias)
            self._features = None
            layer.register_forward_hook(self._keep_features)

    def _keep_features(self, module, args, output):
        self._features = output

    def critic(self, z, t, labels, w):
        x = self.fake_score(z, t, labels, w)
        features, self._features = pooled(self._features), None  # not kept: the EMA deep-copies the module
        return x, self.gan_head(features.to(self.gan_head[0].weight.dtype)).squeeze(1)

    @contextlib.contextmanager
    def critic_frozen(self):
        """The fake score and its head as constants (requires_grad off, each flag restored after):
        the generator's GAN term differentiates the logit in x only, so the critic's weights get
        no gradient and the optimizer leaves them alone in the generator's turn."""
        critic = [p for p in [*self.fake_score.parameters(), *self.gan_head.parameters()] if p.requires_grad]
        for p in critic:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in critic:
                p.requires_grad_(True)

    def forward(self, part: str, *args):
        return getattr(self, part)(*args)


# DMD's diffusion times for both losses: t ~ U[0.02, 0.98] (its 20..980 of 1000 steps)
DMD_TIME_RANGE = (0.02, 0.98)


class DistributionMatching(FrozenTeacherObjective):
    """Distribution-matching distillation (DMD2, Yin et al. 2024) into a w-conditioned generator.
    Steps alternate (the two time-scale rule): `fake_updates` steps train the fake score, a
    denoiser of the generator's own samples at (c, w), by the x-loss; then one step trains the
    generator by the distribution-matching gradient between the real score (the teacher guided at
    the example's w, or a Stage-1 model) and the fake one.
    A k-step generator (generator_steps) samples on the uniform k-step grid, re-noising between
    steps; both turns see its last step, whose input is made the way sampling makes it, by running
    the generator itself from noise without gradients (DMD2's backward simulation, kept to the
    step whose output is the sample: see generator_input).
    With gan_weight > 0 the fake score is also a discriminator between real images (the data's, or
    with gan_real "teacher" the guided teacher's samples at their own w) and the generator's
    samples, both diffused (DMD2's GAN term): its turn adds gan_head_weight times the classifier
    loss, the generator's turn adds gan_weight times the non-saturating generator loss.
    With regression_weight > 0 the generator's turn also adds DMD's regression term (Yin et al. 2023,
    eq. 5, with the squared error where DMD uses LPIPS, which has no weights offline): the 1-step
    generator's output from a noise z against the guided teacher's deterministic DDIM sample from the
    same z (regression_pairs pairs at their own w, made once in `prepare`). It ties the generator
    to the teacher's whole distribution, where the distribution-matching gradient alone seeks modes."""

    loss_name = "dmd_loss"
    trains_in_turns = True

    def __init__(self, data: Dataset, teacher: Denoiser, config, w_min: float, w_max: float):
        super().__init__(data, teacher, config, w_min, w_max)
        self.updates_generator = False
        self.networks = None
        self.pairs = None  # (noise, labels, w, teacher sample), all of them on every process: the regression term's

    def prepare(self, device, model, ema):
        super().prepare(device, model, ema)
        self.networks = model  # the unwrapped GeneratorAndFakeScore, for critic_frozen
        if self.config.regression_weight > 0 or self.teacher_is_real:
            self.pairs = self.kept_regression_pairs(device)

    @property
    def teacher_is_real(self) -> bool:
        """The GAN head's real images are the pairs' teacher samples (--gan-real teacher)."""
        return self.config.gan_weight > 0 and self.config.gan_real == "teacher"

    PAIRS_FILE = "teacher_pairs.safetensors"
    PAIR_PARTS = ("noise", "labels", "w", "sample")

    @property
    def kept_in_run(self) -> tuple[str, ...]:
        """The committed run keeps its pairs, for a later run's --pairs-from: they cost more to make
        again (4,096 at 64 guided steps: 31 minutes for the Fashion CPU teacher) than to store."""
        return (self.PAIRS_FILE,) if self.pairs is not None and self.scratch is not None else ()

    def kept_regression_pairs(self, device):
        """regression_pairs, made once per run or taken from an earlier run's (--pairs-from,
        checked by the dmd stage): kept in the scratch folder, so that a resume loads them instead
        of sampling the teacher again."""
        from ..files import save_safetensors_atomic
        from ..run_folder import resolve_run

        path = self.scratch / self.PAIRS_FILE if self.scratch is not None else None
        if path is not None and path.is_file():
            return self.loaded_pairs(path, device)
        if self.config.pairs_from is not None:
            pairs = self.loaded_pairs(resolve_run(self.config.pairs_from) / self.PAIRS_FILE, device)
        else:
            pairs = self.regression_pairs(device)
        if path is not None and process_state().is_main_process:
            save_safetensors_atomic(dict(zip(self.PAIR_PARTS, pairs)), path)
        return pairs

    def loaded_pairs(self, path, device):
        from safetensors.torch import load_file

        kept = load_file(str(path))
        return tuple(kept[name].to(device) for name in self.PAIR_PARTS)

    @torch.no_grad()
    def regression_pairs(self, device):
        """`regression_pairs` (noise, labels, w, teacher sample) tuples: labels from the data and w
        drawn as for training, the sample the guided teacher's deterministic DDIM reaches from the
        noise in `regression_steps` steps (clipped to the data range, as sampling does). From their
        own generator seeded with the run's seed, so a resumed run makes the same; every process
        makes all of them, so a batch of them is the same global batch on any number of processes."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        n, steps = self.config.regression_pairs, self.config.regression_steps
        generator = torch.Generator().manual_seed(self.config.seed)
        _, labels = self.data.to(device).batch(n, generator)
        noise = torch.randn((n, *self.data.data_shape), generator=generator)
        w = draw_w(n, self.w_min, self.w_max, generator, self.config.w_end_fraction, share=slice(None))
        chunk = micro_batch_size(self.config)
        samples = []
        # minutes for large teachers or many pairs (4,096 at 64 steps: 31 min for the Fashion CPU teacher on one core)
        with Progress(TextColumn(f"teacher samples ({steps} guided steps)"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                      disable=not process_state().is_main_process) as progress:
            task = progress.add_task("", total=n)
            for i in range(0, n, chunk):
                c, w_i = labels[i:i + chunk].to(device), w[i:i + chunk].to(device)
                samples.append(run_grid(denoise_fn(self.teacher, c, w_i), noise[i:i + chunk].to(device), self.schedule,
                                        sampling_grid(steps), 1.0 / steps, SAMPLERS["deterministic"], None,
                                        self.data.data_range))
                progress.advance(task, len(c))
        return noise.to(device), labels.to(device), w.to(device), torch.cat(samples)

    def draw_pairs(self, size: int, generator: torch.Generator):
        """This process's share of a global batch of `size` pairs (noise, labels, w, teacher sample),
        drawn from the run's generator."""
        noise = self.pairs[0]
        idx = torch.randint(0, len(noise), (size,), generator=generator)[process_share(size)].to(noise.device)
        return tuple(part[idx] for part in self.pairs)

    def regression_loss(self, net, size: int, generator: torch.Generator):
        """mean |G(z, 1, c, w) - x_teacher(z, c, w)|^2 over a batch of pairs."""
        noise, labels, w, target = self.draw_pairs(size, generator)
        t = torch.ones(len(noise), device=noise.device)
        return (net("generator", noise, t, labels, w) - target).pow(2).mean()

    def gan_real_batch(self, x_data, labels, w, size: int, generator: torch.Generator):
        """(x, labels, w) of the GAN head's real class: the data's images at the batch's own
        conditions and w (DMD2), or with --gan-real teacher a batch of the guided teacher's samples
        at their own labels and w: the data pull a w-conditioned generator toward the unguided data
        at every w, harder at higher w (docs/dmd.md); the teacher's guided samples do not."""
        if not self.teacher_is_real:
            return x_data, labels, w
        _, pair_labels, pair_w, samples = self.draw_pairs(size, generator)
        return samples, pair_labels, pair_w

    def at_step(self, step):
        self.updates_generator = step % (self.config.fake_updates + 1) == self.config.fake_updates

    def generator_input(self, net, size: int, noise, labels, w, generator: torch.Generator):
        """(z, t): the generator's last grid time t = 1/k, and the state its sampling reaches there
        from `noise` (k - 1 generator steps, re-noised with fresh draws as the renoise sampler does).
        DMD2 draws any grid time; then the fake score learns the mixture of every step's outputs
        while only the last step's are samples, and on toy2d its 2-step generator was 15x further
        from the teacher than its 1-step one (docs/dmd.md). At k = 1 the input is pure noise at t = 1."""
        grid = sampling_grid(self.config.generator_steps)
        share, device = process_share(size), noise.device
        renoise = [torch.randn((size, *noise.shape[1:]), generator=generator)[share].to(device) for _ in grid[1:]]
        z = noise
        with torch.no_grad():
            for k in range(len(grid) - 1):
                t = torch.full((len(noise),), grid[k], device=device)
                x = net("generator", z, t, labels, w)
                z = diffuse(x, renoise[k], *alpha_sigma_like(self.schedule, torch.full_like(t, grid[k + 1]), x))
        return z, torch.full((len(noise),), grid[-1], device=device)

    def diffused(self, x, size: int, generator: torch.Generator):
        """x at t ~ U[DMD_TIME_RANGE] (this process's share of the draws), and t."""
        low, high = DMD_TIME_RANGE
        share = process_share(size)
        t = (low + (high - low) * torch.rand(size, generator=generator)[share]).to(x.device)
        eps = torch.randn((size, *x.shape[1:]), generator=generator)[share].to(x.device)
        return diffuse(x, eps, *alpha_sigma_like(self.schedule, t, x)), t

    def __call__(self, net, generator, device):
        size = micro_batch_size(self.config)
        # the images only serve the GAN term, as the real class
        x_data, labels, noise = draw_batch(self.data, size, generator, device)
        labels, w = self.draw_extras(size, labels, generator, device)
        z_in, t_in = self.generator_input(net, size, noise, labels, w, generator)
        gan = self.config.gan_weight > 0
        if not self.updates_generator:  # the fake score learns to denoise the generator's samples
            with torch.no_grad():
                x_g = net("generator", z_in, t_in, labels, w)
            z_t, t = self.diffused(x_g, size, generator)
            log_snr = self.schedule.log_snr(t)
            if not gan:
                loss = weighted_x_loss(net("fake_score", z_t, t, labels, w), x_g, log_snr, self.config.weighting)
                return loss, {"fake_score_loss": loss.item()}
            x_real, labels_real, w_real = self.gan_real_batch(x_data, labels, w, size, generator)
            z_real, t_real = self.diffused(x_real, size, generator)
            n = len(z_t)  # one forward for both halves
            x_fake, logit = net("critic", torch.cat([z_t, z_real]), torch.cat([t, t_real]),
                                torch.cat([labels, labels_real]), torch.cat([w, w_real]))
            denoising = weighted_x_loss(x_fake[:n], x_g, log_snr, self.config.weighting)
            classifier = discriminator_loss(logit[n:], logit[:n])
            loss = denoising + self.config.gan_head_weight * classifier
            return loss, {"fake_score_loss": denoising.item(), "discriminator_loss": classifier.item()}
        x_g = net("generator", z_in, t_in, labels, w)
        z_t, t = self.diffused(x_g, size, generator)  # with gradients to x_g, for the GAN term
        with torch.no_grad():
            x_real = denoise_fn(self.teacher, labels, w)(z_t, t)
            x_fake = net("fake_score", z_t, t, labels, w)
            target = distribution_matching_target(x_g, x_real, x_fake)
        loss = 0.5 * (x_g - target).pow(2).mean()
        terms = {self.loss_name: loss.item()}
        if gan:
            with self.networks.critic_frozen():
                _, logit = net("critic", z_t, t, labels, w)
            gan_loss = generator_gan_loss(logit)
            loss = loss + self.config.gan_weight * gan_loss
            terms["generator_gan_loss"] = gan_loss.item()
        if self.pairs is not None:
            regression = self.regression_loss(net, size, generator)
            loss = loss + self.config.regression_weight * regression
            terms["regression_loss"] = regression.item()
        return loss, terms
