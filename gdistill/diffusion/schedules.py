"""Noise schedules behind one interface: t in [0, 1] -> (a_t, s_t), the network's time input,
and how training draws t; l_t = log(a_t^2 / s_t^2). The cosine and SD schedules are variance
preserving (a_t^2 + s_t^2 = 1); the rectified flow of SD3-family teachers is not (a_t + s_t = 1).
Every formula in formulas.py holds for any (a_t, s_t)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


class Schedule:
    """t = 0 is clean data (a = 1, s = 0) and t = 1 the noisiest point of the schedule."""

    name: str

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        a, s = self.alpha_sigma(t)
        return 2 * (torch.log(a) - torch.log(s))

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The time value the network is conditioned on."""
        raise NotImplementedError

    def sample_t(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training times, uniform on (0, 1]."""
        raise NotImplementedError

    def to_config(self) -> dict:
        raise NotImplementedError


@dataclass
class CosineSchedule(Schedule):
    """Continuous cosine schedule: l(t) = -2 log tan(A t + B), B = atan(exp(-l_max/2)),
    A = atan(exp(-l_min/2)) - B; so a_t = cos(A t + B) and s_t = sin(A t + B)."""

    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    name: str = "cosine"

    @property
    def _b(self) -> float:
        return math.atan(math.exp(-self.logsnr_max / 2))

    @property
    def _a(self) -> float:
        return math.atan(math.exp(-self.logsnr_min / 2)) - self._b

    def alpha_sigma(self, t):
        angle = self._a * t.double() + self._b
        a, s = torch.cos(angle), torch.sin(angle)
        # t = 0 is the data itself: the last sampling step returns x (formulas.ddim_step at s = 0).
        clean = t <= 0
        a = torch.where(clean, torch.ones_like(a), a)
        s = torch.where(clean, torch.zeros_like(s), s)
        return a.to(t.dtype), s.to(t.dtype)

    def model_time(self, t):
        return t * 1000.0

    def sample_t(self, batch, generator=None):
        u = torch.rand(batch, generator=generator)
        return 1.0 - u  # (0, 1]

    def to_config(self):
        return asdict(self)


class DiscreteSchedule(Schedule):
    """Stable Diffusion's 1000-step scaled-linear schedule (betas from 0.00085 to 0.012), taken from
    diffusers' DDPMScheduler. An N-step grid maps onto the training steps as index = round(1000 t) - 1,
    so t = 1 is the last training step (alpha_bar ~ 0.0047, SNR never reaches zero)."""

    name = "sd-discrete"

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                 beta_end: float = 0.012, beta_schedule: str = "scaled_linear"):
        from diffusers import DDPMScheduler

        self.num_train_timesteps = num_train_timesteps
        self.beta_start, self.beta_end, self.beta_schedule = beta_start, beta_end, beta_schedule
        scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start,
                                  beta_end=beta_end, beta_schedule=beta_schedule)
        self.alphas_cumprod = scheduler.alphas_cumprod.double()
        self._on_device = {}  # device -> alphas_cumprod there: copied once, not at every call

    def alphas_cumprod_on(self, device) -> torch.Tensor:
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = self.alphas_cumprod.to(device)
        return self._on_device[device]

    def step_index(self, t: torch.Tensor) -> torch.Tensor:
        n = self.num_train_timesteps
        return (torch.round(t.double() * n) - 1).clamp(0, n - 1).long()

    def alpha_sigma(self, t):
        alpha_bar = self.alphas_cumprod_on(t.device)[self.step_index(t)]
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        clean = t <= 0
        a = torch.where(clean, torch.ones_like(a), a)
        s = torch.where(clean, torch.zeros_like(s), s)
        return a.to(t.dtype), s.to(t.dtype)

    def model_time(self, t):
        return self.step_index(t).to(t.dtype)

    def sample_t(self, batch, generator=None):
        n = self.num_train_timesteps
        idx = torch.randint(1, n + 1, (batch,), generator=generator)
        return idx.float() / n

    def to_config(self):
        return {"name": self.name, "num_train_timesteps": self.num_train_timesteps,
                "beta_start": self.beta_start, "beta_end": self.beta_end,
                "beta_schedule": self.beta_schedule}


@dataclass
class FlowMatchSchedule(Schedule):
    """The rectified flow of SD3-family teachers (diffusers' FlowMatchEulerDiscreteScheduler):
    z = (1 - s) x + s e with s = shift t / (1 + (shift - 1) t), the shifted sigma; the network's time
    input is 1000 s. A uniform N-step grid in t is the stock scheduler's `sigmas=[1, (N-1)/N, ...]`,
    and DDIM on it is the scheduler's Euler step (formulas.ddim_step)."""

    shift: float = 3.0
    num_train_timesteps: int = 1000
    name: str = "flow-match"

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double()
        return self.shift * t / (1 + (self.shift - 1) * t)

    def alpha_sigma(self, t):
        s = self.sigma(t)
        return (1 - s).to(t.dtype), s.to(t.dtype)

    def model_time(self, t):
        return (self.sigma(t) * self.num_train_timesteps).to(t.dtype)

    def sample_t(self, batch, generator=None):
        return 1.0 - torch.rand(batch, generator=generator)  # (0, 1]

    def to_config(self):
        return asdict(self)


def schedule_from_config(config: dict) -> Schedule:
    config = dict(config)
    name = config.pop("name", "cosine")
    if name == "cosine":
        return CosineSchedule(**config)
    if name == "sd-discrete":
        return DiscreteSchedule(**config)
    if name == "flow-match":
        return FlowMatchSchedule(**config)
    raise ValueError(f"unknown schedule {name!r} (known: cosine, sd-discrete, flow-match)")
