"""Stage 1, guidance matching: a w-conditioned student learns the teacher's guided prediction
(1 + w) x_c - w x_u for every w in [w_min, w_max] at once."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..config import MatchConfig, apply_preset
from ..errors import GdistillError
from ..models import make_student
from ..run_folder import lineage, load_model, parent_record
from .common import distillation_data, prepare_student, refuse_sd_options, train_and_commit
from .objectives import GuidanceMatching


def match(config: MatchConfig) -> Path:
    teacher, teacher_manifest, teacher_run = load_model(
        config.teacher, pipeline_options={"revision": config.revision, "variant": config.variant})
    if teacher.w_conditioned:
        raise GdistillError(f"{teacher_run} is already w-conditioned ({teacher_manifest['kind']}): "
                            "match takes a guided teacher; to halve its steps run `gdistill halve --from` it")
    pipeline = teacher_manifest.get("pipeline")
    refuse_sd_options(config, teacher_manifest, teacher, teacher_run)
    config = apply_preset(config, teacher.config["kind"], "match")
    data = distillation_data(teacher, teacher_manifest, config)
    torch.manual_seed(config.seed)
    student = prepare_student(make_student(teacher), config)
    # A negative prompt's embedding stands in for the empty prompt as the teacher's unconditional
    # input, so the student learns (1 + w) x(c) - w x(negative) (docs/latent.md).
    negative = data.encoders.encode_prompts([config.negative_prompt])[0].cpu() if config.negative_prompt else None
    objective = GuidanceMatching(data, teacher, config, config.w_min, config.w_max)

    manifest = {"kind": "stage1", "steps": None, "w_range": [config.w_min, config.w_max],
                "dataset": data.spec, "class_names": teacher_manifest.get("class_names"),
                "data_range": teacher_manifest.get("data_range"),
                "teacher": str(config.teacher), "parent": parent_record(teacher_run, teacher_manifest),
                "lineage": lineage(teacher_manifest)}
    if pipeline:
        manifest.update(pipeline=pipeline, negative_prompt=config.negative_prompt)
    with teacher.unconditional(negative) if negative is not None else contextlib.nullcontext():
        # lr decays linearly to 0, as in the halving rounds: on digits the Stage-1 model's digits-FD at
        # w = 0 (64 steps) went from 7.74 at a constant lr to 7.31 (the teacher's 6.75), w = 4 27.21 ->
        # 26.78 (docs/pipeline.md)
        return train_and_commit(student, objective, config, Path(config.out), manifest, "match (stage 1)",
                                lr_decay=True, parent_sha=manifest["parent"]["sha256"])
