"""Stage settings: dataclasses filled from defaults, then a YAML file, then the command line.

A field left at None is filled from the model kind's preset (PRESETS) once the model is known, so the
tiny toy MLP and the digits UNet each get defaults that fit them; the manifest records final values.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import GdistillError


@dataclass
class TrainConfig:
    train_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None  # the lr rises linearly from 0 over these first steps (default 0)
    ema_decay: float | None = None  # 0 = no EMA
    grad_clip: float = 1.0
    weighting: str = "snr-trunc"
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    overwrite: bool = False
    mixed_precision: str = "no"  # accelerate's autocast: no, fp16 (GPU), bf16
    gradient_accumulation: int = 1  # loss evaluations per optimizer step; --batch-size stays the global batch
    detect_anomaly: bool = False  # torch.autograd anomaly detection (slow; debugging NaNs)
    resume: str = "auto"  # auto: continue the output's checkpoint of the same settings; never: refuse to
    report_to: str | None = None  # experiment trackers beside log.jsonl, through accelerate: tensorboard, wandb
    compile: bool = False  # torch.compile the student's and the frozen teacher's forward


@dataclass
class TeachConfig(TrainConfig):
    dataset: str = "digits"
    out: str = ""
    image_size: int | None = None  # class-folder and idx datasets
    channels: str | None = None  # image UNet widths per level, e.g. "64,128,128" (default 32,64)
    parameterization: str = "v"
    p_uncond: float = 0.1  # label dropout to the null class, for classifier-free guidance
    weighting: str = "v-mse"


@dataclass
class DistillConfig(TrainConfig):
    """What both distillation stages take beyond the loop's settings."""
    lora_rank: int = 0  # > 0: train a LoRA adapter of this rank instead of the whole UNet (SD teachers)
    cache: str | None = None  # latent / text-embedding cache folder (SD teachers)
    gradient_checkpointing: bool = False
    w_end_fraction: float = 0.2  # share of the examples drawn exactly at w_min or w_max (half each)
    w_loss_power: float | None = None  # match, halve: each example's loss weighed by (1 + w)^-p (default 0)


@dataclass
class MatchConfig(DistillConfig):
    teacher: str = "digits"
    out: str = ""
    data: str | None = None  # default: the teacher's training data
    w_min: float | None = None
    w_max: float | None = None
    resolution: int | None = None  # SD teachers: image size in pixels (default: the UNet's native)
    revision: str | None = None  # SD teachers from the hub
    variant: str | None = None  # e.g. fp16: the hub's half-precision weight files
    negative_prompt: str | None = None  # SD teachers: guide away from this prompt instead of the empty one


@dataclass
class ConsistencyConfig(MatchConfig):
    """Consistency distillation: Stage 1's inputs (a teacher, or a Stage-1 run to start from) plus
    the solver grid and the distance."""
    solver_steps: int | None = None  # the teacher's DDIM grid (LCM: 50); sampling picks 1..N of its times
    # l2 or huber (pseudo-Huber, as LCM and iCT): closer to the teacher at every (steps, w) measured
    # on toy2d and digits (docs/consistency.md)
    loss: str = "huber"
    huber_c: float | None = None  # pseudo-Huber's c; default 0.00054 sqrt(dimensions)


@dataclass
class DMDConfig(MatchConfig):
    """Distribution-matching distillation: Stage 1's inputs (a teacher, or a Stage-1 run to start
    from) plus the generator's steps and the two time-scale rule."""
    generator_steps: int | None = None  # 1: a one-step generator; 2, 4: multi-step with re-noising
    fake_updates: int | None = None  # fake-score updates per generator update (DMD2: 5)
    gan_weight: float = 0.0  # the generator's GAN term; 0: no GAN head (DMD2 ImageNet: 3e-3)
    gan_head_weight: float = 0.01  # the discriminator's classifier loss beside the fake score's (DMD2: 1e-2)
    gan_real: str = "data"  # the discriminator's real images: the data's (DMD2), or the guided teacher's samples at their w
    regression_weight: float = 0.0  # DMD's regression to the teacher's own samples from the same noise; 0: none
    regression_pairs: int = 1024  # (noise, teacher sample) pairs made at the start of the run
    regression_steps: int = 64  # the guided teacher's deterministic DDIM steps for those samples
    pairs_from: str | None = None  # an earlier dmd run of the same start whose pairs this run takes (their count and steps too)
    init: str | None = None  # a w-conditioned student of the same teacher the generator starts from (a halving round)


@dataclass
class HalveConfig(DistillConfig):
    from_run: str = ""
    out: str = ""
    rounds: int = 6
    start_steps: int | None = None  # the Stage-1 model's grid; default 256 (see docs/pipeline.md)
    data: str | None = None


# Per-model-kind defaults for fields left at None. Sized for 2 CPU cores (docs/pipeline.md).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "toy-mlp": {
        "teach": {"train_steps": 4000, "batch_size": 512, "lr": 1e-3, "ema_decay": 0.999},
        "match": {"train_steps": 2000, "batch_size": 512, "lr": 3e-4, "ema_decay": 0.999,
                  "w_min": 0.0, "w_max": 4.0},
        "halve": {"train_steps": 1000, "batch_size": 512, "lr": 3e-4, "ema_decay": 0.0,
                  "start_steps": 256},
        # the EMA is the target network theta^- (LCM: 0.95). 8,000 steps: at 2,000 one step was up to
        # 3.5x the noise floor from the 256-step teacher at w <= 2; at 8,000 at it (docs/consistency.md)
        "consistency": {"train_steps": 8000, "batch_size": 512, "lr": 3e-4, "ema_decay": 0.95,
                        "w_min": 0.0, "w_max": 4.0, "solver_steps": 50},
        # lr 1e-3: at 1e-4 the 1-step generator was 0.016 from the teacher at w = 0, at 1e-3 0.011
        "dmd": {"train_steps": 6000, "batch_size": 512, "lr": 1e-3, "ema_decay": 0.99,
                "w_min": 0.0, "w_max": 4.0, "generator_steps": 1, "fake_updates": 5},
    },
    "pixel-unet": {
        "teach": {"train_steps": 12000, "batch_size": 64, "lr": 3e-4, "ema_decay": 0.999},
        # Stage 1 at lr 1e-3: at 1e-4 2,000 steps left the w range squeezed (w_eff 0.14 / 3.52 at
        # w = 0 / 4 on digits); 1e-3 gives 0.08 / 3.68 in the same steps (docs/pipeline.md).
        # Warm-up 200 and each example's loss weighed by 1 / (1 + w): at weight 1 the large-w examples
        # take most of the gradient, and the model's w = 0 end varied with the seed (digits-FD at w = 0
        # 7.24 and 8.52 for seeds 0 and 1, the teacher's 6.75); weighed, 7.02 / 7.05 / 6.91 for seeds
        # 0 / 1 / 2 and w = 4 26.73-26.92 (25.81) (docs/pipeline.md).
        "match": {"train_steps": 2000, "batch_size": 64, "lr": 1e-3, "warmup_steps": 200, "ema_decay": 0.999,
                  "w_min": 0.0, "w_max": 4.0, "w_loss_power": 1.0},
        "halve": {"train_steps": 1200, "batch_size": 64, "lr": 1e-4, "ema_decay": 0.0,
                  "start_steps": 256, "w_loss_power": 1.0},
        "consistency": {"train_steps": 2000, "batch_size": 64, "lr": 3e-4, "ema_decay": 0.95,
                        "w_min": 0.0, "w_max": 4.0, "solver_steps": 50},
        "dmd": {"train_steps": 6000, "batch_size": 64, "lr": 1e-4, "ema_decay": 0.99,
                "w_min": 0.0, "w_max": 4.0, "generator_steps": 1, "fake_updates": 5},
    },
    # SD-family UNets: fine-tuning rates, no EMA copy of a billion weights by default; w up to 14
    # (guidance_scale 15) covers what SD users sample with (7.5 is w = 6.5).
    "sd-unet": {
        "match": {"train_steps": 4000, "batch_size": 8, "lr": 1e-5, "ema_decay": 0.0,
                  "w_min": 0.0, "w_max": 14.0},
        "halve": {"train_steps": 2000, "batch_size": 8, "lr": 1e-5, "ema_decay": 0.0,
                  "start_steps": 256},
        "consistency": {"train_steps": 4000, "batch_size": 8, "lr": 1e-5, "ema_decay": 0.95,
                        "w_min": 0.0, "w_max": 14.0, "solver_steps": 50},
        "dmd": {"train_steps": 6000, "batch_size": 8, "lr": 1e-5, "ema_decay": 0.0,
                "w_min": 0.0, "w_max": 14.0, "generator_steps": 1, "fake_updates": 5},
    },
}
# SD3-family transformers: as SD, with w up to 9 (guidance_scale 10); SD3 samples at 7 (w = 6),
# SD3.5 at 3.5 to 4.5
PRESETS["sd3-transformer"] = {stage: {**values, **({"w_max": 9.0} if "w_max" in values else {})}
                              for stage, values in PRESETS["sd-unet"].items()}
# DiT: as SD, with the paper's ImageNet range w in [0, 4] (DiT samples at guidance_scale 4, w = 3)
PRESETS["dit-transformer"] = {stage: {**values, **({"w_max": 4.0} if "w_max" in values else {})}
                              for stage, values in PRESETS["sd-unet"].items()}
MIXED_PRECISION = ("no", "fp16", "bf16")
# The DMD GAN head's real images: the data's (DMD2, whose guidance scale is fixed), or the guided
# teacher's DDIM samples at their own w, which a w-conditioned generator should match at every w.
GAN_REAL = ("data", "teacher")
# --report-to: accelerate's trackers gdistill offers, and how each is installed (none is at install time)
TRACKERS = {"tensorboard": "pip install tensorboard (or tensorboardX)", "wandb": "pip install wandb"}
CONSISTENCY_LOSSES = ("l2", "huber")


def build_config(cls, config_file: str | None, overrides: dict[str, Any]):
    """defaults <- YAML file <- command-line values that were given (not None)."""
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise GdistillError(f"config file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise GdistillError(f"config file {path} is not valid YAML ({e.__class__.__name__})") from None
        if not isinstance(loaded, dict):
            raise GdistillError(f"config file {path} must be a mapping of option: value")
        loaded = {k.replace("-", "_"): v for k, v in loaded.items()}
        loaded = {("from_run" if k == "from" else k): v for k, v in loaded.items()}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise GdistillError(f"config file {path}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = cls(**values)
    _check_types(config)
    return config


def _check_types(config) -> None:
    for f in fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        kind = str(f.type)
        try:
            if kind.startswith("int"):
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError
                setattr(config, f.name, int(float(value)))
            elif kind.startswith("float"):
                setattr(config, f.name, float(value))
            elif kind.startswith("bool"):
                if not isinstance(value, bool):
                    raise ValueError
        except (TypeError, ValueError):
            raise GdistillError(f"option {f.name.replace('_', '-')} must be {kind.split(' ')[0]}, got {value!r}") from None


# What a field left at None is where the model kind's preset names no value for it
PRESET_FALLBACKS: dict[str, Any] = {"warmup_steps": 0, "w_loss_power": 0.0}


def apply_preset(config, model_kind: str, stage: str):
    """Fill None fields from the model kind's preset (else PRESET_FALLBACKS) and validate the result."""
    preset = {**PRESET_FALLBACKS, **PRESETS.get(model_kind, PRESETS["pixel-unet"])[stage]}
    filled = {k: v for k, v in preset.items() if hasattr(config, k) and getattr(config, k) is None}
    config = dataclasses.replace(config, **filled)
    validate(config)
    return config


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise GdistillError(message)


def report_to(c) -> tuple[str, ...]:
    """The trackers --report-to names, in order, without repeats."""
    return tuple(dict.fromkeys(t.strip() for t in (c.report_to or "").split(",") if t.strip()))


def tracker_available(tracker: str) -> bool:
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    return {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[tracker]()


def validate(c) -> None:
    # imported here, not at the top: gdistill.diffusion imports torch, which `gdistill --help` does not need
    from .diffusion import LOSS_WEIGHTINGS, PARAMETERIZATIONS

    _require(c.train_steps >= 1, f"--train-steps must be at least 1, got {c.train_steps}")
    _require(c.batch_size >= 1, f"--batch-size must be at least 1, got {c.batch_size}")
    _require(c.lr > 0, f"--lr must be positive, got {c.lr}")
    _require(c.warmup_steps >= 0, f"--warmup-steps must be >= 0 (0: no warm-up), got {c.warmup_steps}")
    _require(0 <= c.ema_decay < 1, f"--ema-decay must be in [0, 1), got {c.ema_decay}")
    _require(c.weighting in LOSS_WEIGHTINGS, f"--weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, got {c.weighting!r}")
    _require(c.log_every >= 1 and c.checkpoint_every >= 1, "--log-every and --checkpoint-every must be at least 1")
    _require(c.gradient_accumulation >= 1, f"--gradient-accumulation must be at least 1, got {c.gradient_accumulation}")
    _require(c.resume in ("auto", "never"), f"--resume must be auto or never, got {c.resume!r}")
    _require(c.mixed_precision in MIXED_PRECISION, f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, got {c.mixed_precision!r}")
    for tracker in report_to(c):
        _require(tracker in TRACKERS, f"--report-to takes {', '.join(TRACKERS)} (comma-separated), got {tracker!r}")
        _require(tracker_available(tracker), f"--report-to {tracker}: the package is not installed; {TRACKERS[tracker]}")
    if isinstance(c, TeachConfig):
        _require(c.parameterization in PARAMETERIZATIONS, f"--parameterization must be one of {', '.join(PARAMETERIZATIONS)}, got {c.parameterization!r}")
        _require(0 < c.p_uncond < 1, f"--p-uncond must be in (0, 1) for guidance to work, got {c.p_uncond}")
        _require(c.channels is None or _widths(c.channels) is not None,
                 f"--channels must be comma-separated widths that are multiples of 8, e.g. 32,64; got {c.channels!r}")
    if isinstance(c, DistillConfig):
        _require(c.lora_rank >= 0, f"--lora-rank must be >= 0 (0 = train the whole model), got {c.lora_rank}")
        _require(0 <= c.w_end_fraction < 1, f"--w-end-fraction must be in [0, 1), got {c.w_end_fraction}")
        _require(0 <= c.w_loss_power < math.inf, f"--w-loss-power must be a finite number >= 0, got {c.w_loss_power}")
        _require(c.w_loss_power == 0 or not isinstance(c, (ConsistencyConfig, DMDConfig)),
                 "w_loss_power weighs the x-loss of match and halve; consistency and dmd have their own losses: leave it out")
    if isinstance(c, MatchConfig):
        _require(0 <= c.w_min <= c.w_max < math.inf, f"need 0 <= --w-min <= --w-max, both finite, got {c.w_min} and {c.w_max}")
        _require(c.resolution is None or c.resolution >= 8, f"--resolution must be at least 8 pixels, got {c.resolution}")
    if isinstance(c, ConsistencyConfig):
        _require(c.solver_steps >= 1, f"--solver-steps must be at least 1, got {c.solver_steps}")
        _require(c.loss in CONSISTENCY_LOSSES, f"--loss must be one of {', '.join(CONSISTENCY_LOSSES)}, got {c.loss!r}")
        _require(c.huber_c is None or c.huber_c > 0, f"--huber-c must be positive, got {c.huber_c}")
        _require(c.ema_decay > 0, "--ema-decay must be in (0, 1) for consistency distillation: the EMA is its target network")
    if isinstance(c, DMDConfig):
        _require(c.generator_steps >= 1, f"--generator-steps must be at least 1, got {c.generator_steps}")
        _require(c.fake_updates >= 1, f"--fake-updates must be at least 1, got {c.fake_updates}")
        _require(c.train_steps > c.fake_updates, f"--train-steps {c.train_steps} leaves no generator update: each "
                 f"takes {c.fake_updates} fake-score updates first (--fake-updates); use more steps")
        _require(0 <= c.gan_weight < math.inf, f"--gan-weight must be a finite number >= 0 (0: no GAN head), got {c.gan_weight}")
        _require(0 < c.gan_head_weight < math.inf, f"--gan-head-weight must be a finite number > 0, got {c.gan_head_weight}")
        _require(c.gan_real in GAN_REAL, f"--gan-real must be one of {', '.join(GAN_REAL)}, got {c.gan_real!r}")
        _require(c.gan_real == "data" or c.gan_weight > 0,
                 "--gan-real teacher sets the GAN head's real images, and there is no head: give --gan-weight > 0 too")
        _require(0 <= c.regression_weight < math.inf,
                 f"--regression-weight must be a finite number >= 0 (0: no regression term), got {c.regression_weight}")
        _require(c.regression_pairs >= 1, f"--regression-pairs must be at least 1, got {c.regression_pairs}")
        _require(c.regression_steps >= 1, f"--regression-steps must be at least 1, got {c.regression_steps}")
        _require(c.pairs_from is None or c.regression_weight > 0 or c.gan_real == "teacher",
                 "--pairs-from gives the teacher pairs of --regression-weight and --gan-real teacher, and neither "
                 "is on: give one of them, or leave --pairs-from out")
        _require(c.regression_weight == 0 or c.generator_steps == 1,
                 f"--regression-weight is for 1-step generators (a {c.generator_steps}-step generator re-noises between "
                 "steps, so its sample is no function of the noise): use --generator-steps 1 or leave it out")
    if isinstance(c, HalveConfig):
        _require(c.rounds >= 1, f"--rounds must be at least 1, got {c.rounds}")
        s = c.start_steps
        _require(s >= 2 and s & (s - 1) == 0, f"--start-steps must be a power of two >= 2, got {s}")


def _widths(text: str) -> list[int] | None:
    """'32,64,64' -> [32, 64, 64]; None when it is not a list of positive multiples of 8 (the
    UNet's group norm takes 8 groups)."""
    try:
        widths = [int(v) for v in str(text).split(",")]
    except ValueError:
        return None
    return widths if widths and all(w > 0 and w % 8 == 0 for w in widths) else None


def unet_widths(config: TeachConfig) -> list[int] | None:
    return _widths(config.channels) if config.channels else None


def settings_dict(config) -> dict:
    return dataclasses.asdict(config)
