"""The one training loop every stage shares: accelerate, Adam, LR schedule, gradient clipping, EMA,
resume checkpoints, a rich progress bar and a JSON-lines log.

A stage supplies its objective (stages/objectives.py), or any `loss_fn(model, generator, device) ->
(loss, terms)`: it draws its own batch and noise from `generator` (a CPU torch.Generator seeded from
the run's seed, saved in checkpoints), so a run is reproducible from its seed and resumes where it
stopped.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import resource
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
from .files import save_safetensors_atomic, sha256_file
from .run_folder import LOG, SCRATCH

LossFn = Callable[[torch.nn.Module, torch.Generator, torch.device], tuple[torch.Tensor, dict]]


class Objective:
    """A LossFn with once-per-run setup: `prepare(device, model, ema)` runs before the first step
    (for example a frozen teacher put on the device; `model` is the unwrapped model that trains and
    `ema` its ShadowWeights or None, for objectives whose target network is the EMA), then the
    objective is called every loss evaluation, after `at_step(step)` at the start of each optimizer
    step (0-based, resumes included). An objective that trains parts of the model in turns (each
    step's loss reaches some of the weights; Adam leaves the others as they are) sets
    `trains_in_turns`, so that DDP expects unused weights. Before `prepare` the loop sets `scratch`
    to a folder of the work folder that a resume of the same recipe finds again (emptied when the
    recipe changes, removed when the run is committed): for what is costly to make once per run.
    The files named in `kept_in_run` move from it into the committed run."""

    trains_in_turns = False
    scratch: Path | None = None
    kept_in_run: tuple[str, ...] = ()

    def prepare(self, device: torch.device, model: torch.nn.Module, ema: ShadowWeights | None) -> None:
        pass

    def at_step(self, step: int) -> None:
        pass

    def __call__(self, model: torch.nn.Module, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError


@dataclass
class LoopSettings:
    steps: int
    lr: float
    ema_decay: float
    grad_clip: float
    seed: int
    log_every: int
    checkpoint_every: int
    lr_decay: bool = False  # linear decay to 0 within the run (Stage 1 and the halving rounds)
    warmup: int = 0
    mixed_precision: str = "no"  # accelerate's: no, fp16, bf16
    accumulation: int = 1  # loss evaluations (micro-batches) per optimizer step
    detect_anomaly: bool = False  # torch.autograd.set_detect_anomaly: the backward op that made a NaN
    resume: str = "auto"  # auto: continue a checkpoint of the same recipe; never: refuse to, if there is one
    report_to: tuple[str, ...] = ()  # accelerate trackers (tensorboard, wandb) that get the log's records too
    compile: bool = False  # torch.compile the model's forward (in place: its weights and their names unchanged)


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


def ema_decay_at(decay: float, update: int) -> float:
    """The EMA's decay at its n-th update, warmed up: min(decay, (1 + n) / (10 + n)). Without the
    warm-up a run of S steps keeps decay^S of its weight on the starting weights (13.5 % for 0.999
    over 2,000 steps: for a Stage-1 student, the w-blind teacher); with it, a negligible share."""
    return min(decay, (1 + update) / (10 + update))


class ShadowWeights:
    """The EMA of the weights that train: w_ema <- d_n * w_ema + (1 - d_n) * w, with the warmed-up
    decay d_n = ema_decay_at(decay, n). It holds what the process holds of them: whole tensors, or
    under FSDP this process's shards (DTensors)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, update: int) -> None:
        """The n-th update (n = 1, 2, ...: the optimizer step just taken)."""
        decay = ema_decay_at(self.decay, update)
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1 - decay)

    @torch.no_grad()
    def call(self, module: torch.nn.Module, *args):
        """module(*args) with the averaged weights in place of the trained ones, without gradients:
        the EMA as a network, e.g. consistency's target. Whole tensors: torch.func.functional_call
        (the module untouched). FSDP shards: FSDP2 all-gathers a block's weights from its own shard
        storage whatever the module's attributes hold, so the averaged shards are copied into the
        parameters for this call and back after it (one more copy of this process's shards), and
        every block is resharded, so that the next forward gathers the trained weights again (the
        root module keeps its gathered weights after a forward). Collective under FSDP."""
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor

        if not any(isinstance(t, DTensor) for t in self.shadow.values()):
            return torch.func.functional_call(module, self.shadow, args, strict=False)
        parameters = dict(module.named_parameters())
        trained = {name: parameters[name].detach().clone() for name in self.shadow}
        try:
            for name, averaged in self.shadow.items():
                parameters[name].detach().copy_(averaged)
            return module(*args)
        finally:
            for name, weights in trained.items():
                parameters[name].detach().copy_(weights)
            for block in module.modules():
                if isinstance(block, FSDPModule):
                    block.reshard()

    def full_state(self, model_state: dict) -> dict:
        """The EMA model's whole state dict: the model's with the averaged weights in place (the
        frozen ones are equal). Under FSDP every process must call it (it gathers the shards)."""
        return {**model_state, **{n: _whole(t) for n, t in self.shadow.items()}}

    def load(self, state: dict) -> None:
        for name, t in self.shadow.items():
            self.shadow[name] = _shard_like(state[name], t)


def _whole(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor, distribute_tensor

    full = full.to(device=like.device, dtype=like.dtype)
    return distribute_tensor(full, like.device_mesh, like.placements) if isinstance(like, DTensor) else full.clone()


def _state_options(sharded: bool, main_only: bool = True):
    """torch's state-dict API names tensors by parameter name whatever wraps the model (DDP, FSDP2,
    nothing), so one checkpoint format serves them all. Sharded: gather whole tensors to write
    (to the main process only, on the CPU, unless `main_only` is False), and cut them back on load."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=sharded, cpu_offload=sharded and main_only)


def _save_checkpoint(folder: Path, step, model, ema, optimizer, scheduler, generator, recipe, sharded: bool, main: bool):
    """The whole checkpoint (weights, EMA, optimizer, LR schedule, RNG states, step) is written into
    `resume.partial/`, each file atomically, and that folder then replaces `resume/` by renames
    (files.publish_dir): a crash at any point leaves the previous checkpoint whole, in `resume/`
    or, between the two renames, in `.resume.old/` (_checkpoint_folder finds it). Every process
    calls it (under FSDP gathering the shards is collective); the main process writes."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    from .files import publish_dir

    options = _state_options(sharded)
    model_state = get_model_state_dict(model, options=options)
    ema_state = ema.full_state(model_state) if ema is not None else None
    optimizer_state = get_optimizer_state_dict(model, optimizer.optimizer, options=options)
    if not main:
        return
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    weights = {"model.safetensors": model_state, "ema.safetensors": ema_state}
    for name, tensors in weights.items():
        if tensors is not None:
            save_safetensors_atomic(tensors, partial / name)
    # the state file, written last, records the weights' sha256: a damaged file is found on resume
    state = {"step": step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "recipe": recipe,
             "files": {name: sha256_file(partial / name) for name, t in weights.items() if t is not None}}
    _atomic_torch_save(state, partial / "state.pt")
    publish_dir(partial, folder)


def _keep_scratch_of(folder: Path, recipe: dict) -> None:
    """Make the objective's scratch folder, emptied unless it was made for this same recipe (an
    earlier attempt of another command may have stopped before its first checkpoint)."""
    stamp = json.dumps(recipe, sort_keys=True, default=str)
    if (folder / "recipe.json").is_file() and (folder / "recipe.json").read_text() == stamp:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "recipe.json").write_text(stamp)


def _checkpoint_folder(folder: Path) -> Path | None:
    for candidate in (folder, folder.with_name(f".{folder.name}.old")):
        if (candidate / "state.pt").is_file():
            return candidate
    return None


def _load_state(found: Path) -> dict:
    """A checkpoint's state file, after checking its weight files against the sha256 it records."""
    damaged = (f"the checkpoint in {found} is damaged ({{}}): pass --overwrite to start afresh "
               "(it was written whole, so the disk or another program changed it)")
    try:
        state = torch.load(found / "state.pt", weights_only=False)
    except Exception as error:  # truncated or overwritten: torch raises several kinds
        raise GdistillError(damaged.format(f"state.pt does not load: {str(error).splitlines()[0]}")) from error
    for name, digest in state.get("files", {}).items():
        if not (found / name).is_file() or sha256_file(found / name) != digest:
            raise GdistillError(damaged.format(f"{name} is missing or does not match its recorded sha256"))
    return state


def checkpoint_in(work: Path) -> dict | None:
    """The state of the resume checkpoint in a work folder (step, recipe, ...), or None."""
    found = _checkpoint_folder(work / "resume")
    return _load_state(found) if found else None


def _read_checkpoint(folder: Path, recipe: dict, resume: str) -> tuple[Path, dict] | None:
    """The checkpoint to resume from, if any, checked against this command's recipe before any
    work is done: a checkpoint of other settings is refused, naming the differences."""
    found = _checkpoint_folder(folder)
    if found is None:
        return None
    state = _load_state(found)
    if resume == "never":
        raise GdistillError(f"{folder.parent} holds a checkpoint at step {state.get('step')} and --resume never was given: "
                            "pass --resume auto to continue it, or --overwrite to start afresh")
    if state.get("recipe") != recipe:
        raise GdistillError(f"{folder.parent} holds a checkpoint (step {state.get('step')}) of another command"
                            f"{_differences(state.get('recipe'), recipe)}: re-run that command to resume it, "
                            "or pass --overwrite to start afresh")
    return found, state


def _restore(found: Path, state: dict, model, ema, optimizer, scheduler, generator, sharded: bool) -> int:
    """Load a checkpoint into the prepared (wrapped, maybe sharded) model and optimizer."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    options = _state_options(sharded)
    set_model_state_dict(model, load_file(str(found / "model.safetensors")), options=options)
    if ema is not None:
        ema.load(load_file(str(found / "ema.safetensors")))
    set_optimizer_state_dict(model, optimizer.optimizer, state["optimizer"], options=options)
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


def _meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose parameters live on the meta device (no memory). FSDP shards a model
    in place; the plain model handed back after training is this copy with the gathered weights."""
    memo = {id(p): torch.nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    return copy.deepcopy(model, memo)


def _check_distributed_type(accelerator) -> None:
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and kind != DistributedType.FSDP \
            and accelerator.is_main_process:
        Console(stderr=True).print("[yellow]warning:[/] the accelerate config asks for FSDP, which accelerate runs on "
                                   f"GPUs only: training with {kind.value} instead")
    if kind == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise GdistillError("gdistill shards with FSDP2: set fsdp_version: 2 in the accelerate config "
                            "(examples/accelerate/fsdp_8gpus.yaml)")
    if kind in (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        raise GdistillError(f"gdistill does not train under {kind.value}: launch with a DDP or an FSDP2 accelerate "
                            "config (examples/accelerate/)")


def peak_memory_gib(device: torch.device) -> float:
    """This process's peak memory so far, in GiB, as the JSON-lines log records it: on a GPU torch's
    peak allocated memory there (what the tensors need; its caching allocator reserves a little more),
    else the process's peak resident set (ru_maxrss, in KiB on Linux), Python and libraries included."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def train(model: torch.nn.Module, loss_fn: LossFn, settings: LoopSettings, work: Path,
          description: str, recipe: dict, accelerator=None):
    """Train the weights of `model` that require grad (the caller decides: all of them, or a LoRA
    adapter) for settings.steps optimizer steps. Returns (model, ema model or None), plain modules
    on the training device. Resumes from work/resume when the checkpoint was made with the same
    `recipe` (what shapes the result: settings, round, parent weights); a checkpoint of another
    recipe is refused, naming the differences. Runs as accelerate launches it: one process, DDP,
    or FSDP2 (the model and its optimizer state sharded across processes)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    if accelerator is None:
        state = AcceleratorState._shared_state
        if state and state.get("_mixed_precision") not in (None, settings.mixed_precision):
            # accelerate keeps one mixed-precision setting per process; a later stage in the same
            # process (a notebook, the tests) may ask for another. The distributed setup is kept.
            AcceleratorState._reset_state(reset_partial_state=False)
        process_state()
        from accelerate.utils import DistributedDataParallelKwargs

        in_turns = [DistributedDataParallelKwargs(find_unused_parameters=True)] if getattr(loss_fn, "trains_in_turns", False) else []
        from accelerate.utils import ProjectConfiguration

        # trackers write under the run (RUN/trackers/gdistill/...), so their files travel with it
        project = ProjectConfiguration(project_dir=str(work), logging_dir=str(work / "trackers"))
        accelerator = Accelerator(mixed_precision=settings.mixed_precision, cpu=not torch.cuda.is_available(),
                                  kwargs_handlers=in_turns, log_with=list(settings.report_to) or None,
                                  project_config=project)
    _check_distributed_type(accelerator)
    sharded = accelerator.is_fsdp2
    device = accelerator.device
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    model.train()
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable weights: call requires_grad_(True) on what should train")
    resume_dir = work / "resume"
    # The lr schedule shapes the result as the stage's settings do: a checkpoint made under another
    # schedule (say, a Stage 1 from before its lr decayed) is refused, not continued under this one.
    recipe = {**recipe, "lr_decay": settings.lr_decay}
    checkpoint = _read_checkpoint(resume_dir, recipe, settings.resume)
    skeleton = _meta_copy(model) if sharded else None
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)

    def lr_factor(step: int) -> float:
        warm = min(1.0, (step + 1) / settings.warmup) if settings.warmup else 1.0
        return warm * (1 - step / settings.steps if settings.lr_decay else 1.0)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)  # its parameters are this process's shards under FSDP
    if settings.compile:  # in place (nn.Module.compile): wrappers, EMA and checkpoints see the same module
        inner.compile()
    trainable = [p for p in inner.parameters() if p.requires_grad]
    ema = ShadowWeights(inner, settings.ema_decay) if settings.ema_decay > 0 else None
    start = _restore(*checkpoint, model, ema, optimizer, scheduler, generator, sharded) if checkpoint else 0
    if isinstance(loss_fn, Objective):
        loss_fn.scratch = work / SCRATCH
        if accelerator.is_main_process:
            _keep_scratch_of(loss_fn.scratch, recipe)
        accelerator.wait_for_everyone()
        loss_fn.prepare(device, inner, ema)

    work.mkdir(parents=True, exist_ok=True)
    tracking = bool(settings.report_to)
    if tracking:  # the recipe's plain values are the run's hyperparameters
        accelerator.init_trackers("gdistill", config={k: v for k, v in recipe.items() if isinstance(v, (int, float, str, bool))})
    log_path = work / LOG
    if start == 0 and log_path.exists() and accelerator.is_main_process:
        log_path.unlink()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4g}  {task.fields[rate]:.1f} steps/s"),
               TimeRemainingColumn()]
    window_loss, window_n, window_start, window_terms = 0.0, 0, time.perf_counter(), {}
    with Progress(*columns, console=Console(stderr=True), disable=not accelerator.is_main_process, transient=False) as progress, \
            open(log_path, "a") as log, torch.autograd.set_detect_anomaly(settings.detect_anomaly):
        task = progress.add_task(description, total=settings.steps, completed=start, loss=math.nan, rate=0.0)
        for step in range(start, settings.steps):
            step_loss = 0.0
            if isinstance(loss_fn, Objective):
                loss_fn.at_step(step)
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
                for name, value in terms.items():  # this process's terms, averaged over the window
                    window_terms.setdefault(name, []).append(value)
            if settings.grad_clip > 0:
                accelerator.clip_grad_norm_(trainable, settings.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if ema is not None:
                ema.update(inner, done)
            window_loss += step_loss
            window_n += 1
            if done % settings.log_every == 0 or done == settings.steps:
                rate = window_n / max(time.perf_counter() - window_start, 1e-9)
                record = {"step": done, "loss": window_loss / window_n, "lr": scheduler.get_last_lr()[0],
                          "steps_per_s": round(rate, 3), "time": round(time.time(), 3),
                          "peak_memory_gib": round(peak_memory_gib(device), 3),
                          **{name: sum(values) / len(values) for name, values in window_terms.items()}}
                if accelerator.is_main_process:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if tracking:
                    accelerator.log({k: v for k, v in record.items() if k not in ("step", "time")}, step=done)
                progress.update(task, completed=done, loss=record["loss"], rate=rate)
                window_loss, window_n, window_start, window_terms = 0.0, 0, time.perf_counter(), {}
            else:
                progress.update(task, completed=done)
            if done % settings.checkpoint_every == 0 and done < settings.steps:
                _save_checkpoint(resume_dir, done, model, ema, optimizer, scheduler, generator, recipe, sharded,
                                 accelerator.is_main_process)
    if tracking:
        accelerator.end_training()
    if sharded:  # every process gets the whole weights back in a plain copy of the model
        trained = skeleton
        trained.load_state_dict(get_model_state_dict(model, options=_state_options(True, main_only=False)), assign=True)
        trained.to(device)
    else:
        trained = inner
    trained.eval().requires_grad_(False)
    if ema is None:
        return trained, None
    ema_model = copy.deepcopy(trained)
    ema_model.load_state_dict(ema.full_state(trained.state_dict()))
    return trained, ema_model
