"""The one training loop every stage shares: accelerate, Adam, LR schedule, gradient clipping, EMA,
resume checkpoints, a rich progress bar and a JSON-lines log.

A stage supplies `loss_fn(model, generator, device) -> (loss, terms)`: it draws its own batch and
noise from `generator` (a CPU torch.Generator seeded from the run's seed, saved in checkpoints), so
a run is reproducible from its seed and resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file

from .errors import GdistillError, TrainingDiverged
from .run import LOG, save_safetensors_atomic

LossFn = Callable[[torch.nn.Module, torch.Generator, torch.device], tuple[torch.Tensor, dict]]


@dataclass
class LoopSettings:
    steps: int
    lr: float
    ema_decay: float
    grad_clip: float
    seed: int
    log_every: int
    checkpoint_every: int
    lr_decay: bool = False  # linear decay to 0 within the run (progressive distillation rounds)
    warmup: int = 0
    mixed_precision: str = "no"  # accelerate's: no, fp16, bf16
    accumulation: int = 1  # loss evaluations (micro-batches) per optimizer step
    detect_anomaly: bool = False  # torch.autograd.set_detect_anomaly: the backward op that made a NaN


def process_state():
    """accelerate's view of the processes: one, or those of a launch (accelerate launch, torchrun,
    several nodes). Without a GPU accelerate must be told so, or a CPU launch would not form its
    (gloo) process group and every process would train alone."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_checkpoint(folder: Path, step, model, ema, optimizer, scheduler, generator, recipe):
    """The whole checkpoint (weights, EMA, optimizer, LR schedule, RNG states, step) is written into
    `resume.partial/`, each file atomically, and that folder then replaces `resume/` by renames
    (run.publish_dir): a crash at any point leaves the previous checkpoint whole, in `resume/`
    or, between the two renames, in `.resume.old/` (_checkpoint_folder finds it)."""
    from .run import publish_dir

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_safetensors_atomic(model.state_dict(), partial / "model.safetensors")
    if ema is not None:
        save_safetensors_atomic(ema.state_dict(), partial / "ema.safetensors")
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
             "recipe": recipe}
    _atomic_torch_save(state, partial / "state.pt")
    publish_dir(partial, folder)


def _checkpoint_folder(folder: Path) -> Path | None:
    for candidate in (folder, folder.with_name(f".{folder.name}.old")):
        if (candidate / "state.pt").is_file():
            return candidate
    return None


def _load_checkpoint(folder: Path, model, ema, optimizer, scheduler, generator, recipe) -> int:
    found = _checkpoint_folder(folder)
    if found is None:
        return 0
    state = torch.load(found / "state.pt", weights_only=False)
    if state.get("recipe") != recipe:
        raise GdistillError(f"{folder.parent} holds a checkpoint (step {state.get('step')}) of another command"
                            f"{_differences(state.get('recipe'), recipe)}: re-run that command to resume it, "
                            "or pass --overwrite to start afresh")
    model.load_state_dict(load_file(str(found / "model.safetensors")))
    if ema is not None:
        ema.load_state_dict(load_file(str(found / "ema.safetensors")))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _differences(old: dict | None, new: dict) -> str:
    """' (lr: 0.001 then, 0.0003 now; ...)' for the settings that differ."""
    if not old:
        return ""
    changed = [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return f" ({'; '.join(changed[:4])})" if changed else ""


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, over the weights that train (the rest are equal)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        if p.requires_grad:
            e.lerp_(p.detach().to(e.dtype), 1 - decay)


def train(model: torch.nn.Module, loss_fn: LossFn, settings: LoopSettings, work: Path,
          description: str, recipe: dict, accelerator=None):
    """Train the weights of `model` that require grad (the caller decides: all of them, or a LoRA
    adapter) in place for settings.steps optimizer steps. Returns (model, ema or None).
    Resumes from work/resume when the checkpoint was made with the same `recipe` (what shapes the
    result: settings, round, parent weights); a checkpoint of another recipe is refused, naming
    the differences."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if accelerator is None:
        state = AcceleratorState._shared_state
        if state and state.get("_mixed_precision") not in (None, settings.mixed_precision):
            # accelerate keeps one mixed-precision setting per process; a later stage in the same
            # process (a notebook, the tests) may ask for another. The distributed setup is kept.
            AcceleratorState._reset_state(reset_partial_state=False)
        process_state()
        accelerator = Accelerator(mixed_precision=settings.mixed_precision, cpu=not torch.cuda.is_available())
    device = accelerator.device
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable weights: call requires_grad_(True) on what should train")
    optimizer = torch.optim.Adam(trainable, lr=settings.lr)

    def lr_factor(step: int) -> float:
        warm = min(1.0, (step + 1) / settings.warmup) if settings.warmup else 1.0
        return warm * (1 - step / settings.steps if settings.lr_decay else 1.0)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    ema = copy.deepcopy(model).requires_grad_(False) if settings.ema_decay > 0 else None
    resume_dir = work / "resume"
    start = _load_checkpoint(resume_dir, model, ema, optimizer, scheduler, generator, recipe)
    model, optimizer = accelerator.prepare(model, optimizer)
    if ema is not None:
        ema.to(device)

    work.mkdir(parents=True, exist_ok=True)
    log_path = work / LOG
    if start == 0 and log_path.exists() and accelerator.is_main_process:
        log_path.unlink()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4g}  {task.fields[rate]:.1f} steps/s"),
               TimeRemainingColumn()]
    window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
    with Progress(*columns, console=Console(stderr=True), disable=not accelerator.is_main_process, transient=False) as progress, \
            open(log_path, "a") as log, torch.autograd.set_detect_anomaly(settings.detect_anomaly):
        task = progress.add_task(description, total=settings.steps, completed=start, loss=math.nan, rate=0.0)
        for step in range(start, settings.steps):
            step_loss = 0.0
            for micro in range(settings.accumulation):
                # gradients are averaged across processes only on the last micro-batch
                last = micro == settings.accumulation - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(model):
                    loss, terms = loss_fn(model, generator, device)
                    # every process sees the same mean loss, so all of them stop together on a NaN
                    mean_loss = accelerator.reduce(loss.detach(), "mean")
                    if not torch.isfinite(mean_loss):
                        raise TrainingDiverged(
                            f"loss became {mean_loss.item()} at step {step + 1} (terms: {terms}; seed {settings.seed}); "
                            f"the last good checkpoint is kept in {resume_dir}: lower --lr or check the data")
                    accelerator.backward(loss / settings.accumulation)
                step_loss += mean_loss.item() / settings.accumulation
            if settings.grad_clip > 0:
                accelerator.clip_grad_norm_(trainable, settings.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema_update(ema, accelerator.unwrap_model(model), settings.ema_decay)
            window_loss += step_loss
            window_n += 1
            done = step + 1
            if done % settings.log_every == 0 or done == settings.steps:
                rate = window_n / max(time.perf_counter() - window_start, 1e-9)
                record = {"step": done, "loss": window_loss / window_n, "lr": scheduler.get_last_lr()[0],
                          "steps_per_s": round(rate, 3), "time": round(time.time(), 3)}
                if accelerator.is_main_process:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                progress.update(task, completed=done, loss=record["loss"], rate=rate)
                window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
            else:
                progress.update(task, completed=done)
            if done % settings.checkpoint_every == 0 and done < settings.steps and accelerator.is_main_process:
                _save_checkpoint(resume_dir, done, accelerator.unwrap_model(model), ema, optimizer,
                                 scheduler, generator, recipe)
    model = accelerator.unwrap_model(model).eval().requires_grad_(False)
    return model, (ema.eval() if ema is not None else None)
