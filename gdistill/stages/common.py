"""What every stage does around its loss: prepare the output, train on the shared loop, commit the run."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import torch

from ..config import report_to, settings_dict
from ..data import Dataset, load_dataset
from ..errors import GdistillError
from ..files import prepare_output, work_dir_for
from ..models import Denoiser
from ..run_folder import RAW_WEIGHTS, WEIGHTS, commit_run, is_latent_run, is_text_run
from ..train import LoopSettings, LossFn, process_state, train


def training_data(data: str | None, manifest: dict, cache: str | None = None,
                  resolution: int | None = None) -> Dataset:
    """What a stage trains on: --data, else the data recorded in the (teacher's) manifest. Runs of
    a diffusers teacher (manifest `pipeline`) train on image-caption pairs encoded by that
    pipeline's frozen VAE and text encoder(s), or for DiT on a class folder encoded by its VAE."""
    if not is_text_run(manifest) and cache:
        raise GdistillError("--cache holds VAE latents and text embeddings for SD-family teachers; leave it out here")
    if not is_latent_run(manifest):
        return load_dataset(data) if data else load_dataset(manifest["dataset"])
    from ..data.captions import CaptionDataset
    from ..data.latents import InpaintingCaptionData, LatentCaptionData, LatentClassData
    from ..models.sd_encoders import SDEncoders

    text = is_text_run(manifest)  # else a class-conditional latent teacher (DiT): a class folder of images
    recorded = manifest.get("dataset") or {}
    source = data or recorded.get("path")
    if not source:
        raise GdistillError("an SD-family teacher needs --data: a folder of NAME.jpg + NAME.txt, a .jsonl/.csv table with "
                            "image and text columns, or webdataset shards ('shards/{00000..00099}.tar')" if text else
                            "a DiT teacher needs --data: a class folder DIR/<class>/*.png, the folders named by class "
                            "id (0..999) or label")
    encoders = SDEncoders(manifest["pipeline"])
    resolution = resolution or recorded.get("resolution") or encoders.native_resolution
    if not text:
        return LatentClassData(source, resolution, encoders, manifest["model"]["num_classes"])
    network = manifest["model"].get("unet") or manifest["model"]["transformer"]
    kind = InpaintingCaptionData if network["in_channels"] != network["out_channels"] else LatentCaptionData
    return kind(CaptionDataset(source, resolution), encoders, cache)


def refuse_sd_options(config, teacher_manifest: dict, teacher: Denoiser, teacher_run) -> None:
    """The options only a diffusers (SD-family) teacher takes are an error for any other teacher."""
    if not is_latent_run(teacher_manifest) and (config.resolution or config.negative_prompt or config.revision or config.variant):
        raise GdistillError("--resolution, --negative-prompt, --revision and --variant are for SD-family teachers "
                            f"(diffusers pipelines); {teacher_run} is a {teacher.kind} run")
    if is_latent_run(teacher_manifest) and not is_text_run(teacher_manifest) and config.negative_prompt:
        raise GdistillError(f"--negative-prompt is for text-to-image teachers; {teacher_run} is class-conditional "
                            f"({teacher.kind}): leave it out")


def distillation_data(teacher: Denoiser, teacher_manifest: dict, config) -> Dataset:
    """What a distillation from `teacher` trains on (training_data), checked against the teacher; a
    diffusers teacher (a pipeline, not a run) is set to the data's latent size."""
    data = training_data(config.data, teacher_manifest, config.cache, config.resolution)
    if is_latent_run(teacher_manifest) and not teacher.w_conditioned:
        teacher.with_latent_size(data.data_shape[-1])
    if data.num_classes != teacher.num_classes or tuple(data.data_shape) != tuple(teacher.data_shape):
        raise GdistillError(f"--data {config.data} has {data.num_classes} classes of shape {data.data_shape}, "
                            f"the teacher expects {teacher.num_classes} of shape {teacher.data_shape}")
    return data


def prepare_student(student: Denoiser, config) -> Denoiser:
    """The training options that change the student: a LoRA adapter, gradient checkpointing."""
    if config.lora_rank:
        student.add_lora(config.lora_rank)
    if config.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    return student


def process_share(batch: int) -> slice:
    """This process's slice of a global batch. Every process draws the same global batch from the
    same seeded generator and trains on its own equal slice; DDP averages the gradients, which is
    the gradient of the global batch's mean loss: N processes train as one does (tests/test_distributed.py)."""
    state = process_state()
    per = batch // state.num_processes
    return slice(state.process_index * per, (state.process_index + 1) * per)


def draw_w(batch: int, w_min: float, w_max: float, generator: torch.Generator, end_fraction: float = 0.0,
           share: slice | None = None) -> torch.Tensor:
    """w ~ U[w_min, w_max], one per example of the global batch, except that a fraction
    `end_fraction` of them is put exactly at the ends (half at w_min, half at w_max): a regression
    over w fits the ends of its range worst, and the ends are where users sample (w_min unguided,
    w_max the strongest). The `share` slice of them; by default this process's share."""
    w = w_min + (w_max - w_min) * torch.rand(batch, generator=generator)
    if end_fraction > 0:
        u = torch.rand(batch, generator=generator)
        w = torch.where(u < end_fraction / 2, w_min, torch.where(u >= 1 - end_fraction / 2, w_max, w))
    return w[process_share(batch) if share is None else share]


def draw_t(schedule, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Training times for the global batch (the schedule's own draw); this process's share."""
    return schedule.sample_t(batch, generator)[process_share(batch)]


def micro_batch_size(config) -> int:
    """Examples per loss evaluation (all processes together): the global batch over the
    gradient-accumulation steps."""
    return config.batch_size // config.gradient_accumulation


def draw_batch(data: Dataset, batch: int, generator: torch.Generator, device):
    """(x, condition, noise) for this process's share of a global batch of `batch`."""
    share = process_share(batch)
    x, labels = data.to(device).batch(batch, generator, share)
    eps = torch.randn((batch, *x.shape[1:]), generator=generator)[share]
    return x.to(device), labels.to(device), eps.to(device)


def train_and_commit(model: torch.nn.Module, loss_fn: LossFn, config, out: Path, manifest: dict,
                     description: str, lr_decay: bool = False, parent_sha: str | None = None,
                     ships: Callable[[torch.nn.Module], Denoiser] = lambda trained: trained) -> Path:
    """Train `model` on the shared loop and commit the run: the weights of `ships(model)` (the
    model itself, or the part of it a run holds, e.g. DMD's generator) with the manifest."""
    state = process_state()
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise GdistillError("--mixed-precision fp16 needs a CUDA GPU: use bf16 or no on this machine")
    if config.batch_size % (config.gradient_accumulation * state.num_processes):
        raise GdistillError(f"--batch-size {config.batch_size} (the global batch) must divide into {state.num_processes} "
                            f"process(es) x {config.gradient_accumulation} accumulation step(s): use a multiple of "
                            f"{config.gradient_accumulation * state.num_processes}")
    if state.is_main_process:  # one process prepares (and with --overwrite empties) the work folder
        prepare_output(out, config.overwrite)
    state.wait_for_everyone()
    work = work_dir_for(Path(out))
    settings = settings_dict(config)
    loop = LoopSettings(steps=config.train_steps, lr=config.lr, ema_decay=config.ema_decay,
                        grad_clip=config.grad_clip, seed=config.seed, log_every=config.log_every,
                        checkpoint_every=config.checkpoint_every, lr_decay=lr_decay,
                        mixed_precision=config.mixed_precision, accumulation=config.gradient_accumulation,
                        detect_anomaly=config.detect_anomaly, resume=config.resume, report_to=report_to(config),
                        compile=config.compile, warmup=config.warmup_steps)
    # Resume only when what shapes the result matches (not --overwrite or the logging interval).
    shaping = {k: v for k, v in settings.items() if k not in ("overwrite", "log_every", "checkpoint_every", "cache", "detect_anomaly", "resume", "report_to", "compile")}
    recipe = {**shaping, "round": manifest.get("round"), "parent_sha256": parent_sha}
    model, ema = train(model, loss_fn, loop, work, description, recipe)
    model, ema = ships(model), (ships(ema) if ema is not None else None)
    if getattr(config, "lora_rank", 0):  # the run holds plain weights: W + B A
        for m in (model, ema):
            if m is not None:
                m.merge_lora()
    weights = {WEIGHTS: (ema or model).state_dict()}
    if ema is not None:
        weights[RAW_WEIGHTS] = model.state_dict()
    manifest = {**manifest, "model": model.config, "parameterization": model.parameterization,
                "schedule": model.schedule.to_config(), "ema_decay": config.ema_decay,
                "settings": settings}
    if state.is_main_process:  # one writer; the others wait until the run is in place (halve reads it next)
        commit_run(work, Path(out), manifest, weights, keep=getattr(loss_fn, "kept_in_run", ()))
    state.wait_for_everyone()
    return Path(out)


class OneRunStart(NamedTuple):
    """What a one-run distillation (consistency, dmd) starts from: a guided teacher, or a Stage-1
    run (then it is also the teacher, and its w range and negative prompt are kept)."""
    source: Denoiser
    manifest: dict
    run: Path
    from_stage1: bool
    config: object  # the stage's config with its model kind's preset applied
    w_min: float
    w_max: float
    data: Dataset


def start_from_teacher_or_stage1(config, stage: str, method: str) -> OneRunStart:
    """Load --teacher (a guided teacher or a Stage-1 run), refuse what does not fit it, apply the
    `stage` preset and pick the training data; seeds torch for the student's initialisation."""
    from ..config import apply_preset
    from ..run_folder import load_model

    source, manifest, run = load_model(config.teacher, pipeline_options={"revision": config.revision,
                                                                         "variant": config.variant})
    from_stage1 = source.w_conditioned
    if from_stage1 and manifest["kind"] != "stage1":
        raise GdistillError(f"{run} is a {manifest['kind']} run: {method} starts from a guided teacher or a "
                            "Stage-1 run (`gdistill match`)")
    if from_stage1 and (config.w_min is not None or config.w_max is not None or config.negative_prompt):
        raise GdistillError(f"{run} is a Stage-1 run: its w range and negative prompt are fixed there; leave "
                            "--w-min, --w-max and --negative-prompt out")
    refuse_sd_options(config, manifest, source, run)
    config = apply_preset(config, source.config["kind"], stage)
    w_min, w_max = manifest["w_range"] if from_stage1 else (config.w_min, config.w_max)
    data = distillation_data(source, manifest, config)
    torch.manual_seed(config.seed)
    return OneRunStart(source, manifest, Path(run), from_stage1, config, w_min, w_max, data)


def commit_one_run(start: OneRunStart, model: torch.nn.Module, loss_fn: LossFn, fields: dict, description: str,
                   **train_options) -> Path:
    """Train and commit a one-run distillation: its manifest `fields` (kind, steps, ...) plus the
    lineage from `start`; an SD-family teacher's negative prompt is the unconditional branch."""
    import contextlib

    from ..run_folder import lineage, parent_record

    config, source = start.config, start.source
    manifest = {**fields, "w_range": [start.w_min, start.w_max], "dataset": start.data.spec,
                "class_names": start.manifest.get("class_names"), "data_range": start.manifest.get("data_range"),
                "teacher": start.manifest["teacher"] if start.from_stage1 else str(config.teacher),
                "parent": parent_record(start.run, start.manifest), "lineage": lineage(start.manifest)}
    if start.manifest.get("pipeline"):
        manifest.update(pipeline=start.manifest["pipeline"],
                        negative_prompt=start.manifest.get("negative_prompt", config.negative_prompt))
    negative = start.data.encoders.encode_prompts([config.negative_prompt])[0].cpu() if config.negative_prompt else None
    with source.unconditional(negative) if negative is not None else contextlib.nullcontext():
        return train_and_commit(model, loss_fn, config, Path(config.out), manifest, description,
                                parent_sha=manifest["parent"]["sha256"], **train_options)
