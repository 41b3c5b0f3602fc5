"""Consistency distillation (LCM-style): one training run gives a w-conditioned student that samples
in any 1 to 8 (up to --solver-steps) steps, beside the paper's match + halve rounds. It starts from a
guided teacher (the student is the teacher plus a zero-initialised w-input, and the teacher's
guided prediction costs two calls a solver step) or from a Stage-1 run (the student starts as that
run, which is also the teacher: one call a solver step)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..config import ConsistencyConfig, apply_preset
from ..errors import GdistillError
from ..models import make_student
from ..run_folder import lineage, load_model, parent_record
from .common import distillation_data, prepare_student, refuse_sd_options, train_and_commit
from .objectives import ConsistencyDistillation


def consistency(config: ConsistencyConfig) -> Path:
    source, source_manifest, source_run = load_model(
        config.teacher, pipeline_options={"revision": config.revision, "variant": config.variant})
    from_stage1 = source.w_conditioned
    if from_stage1 and source_manifest["kind"] != "stage1":
        raise GdistillError(f"{source_run} is a {source_manifest['kind']} run: consistency distillation starts from "
                            "a guided teacher or a Stage-1 run (`gdistill match`)")
    if from_stage1 and (config.w_min is not None or config.w_max is not None or config.negative_prompt):
        raise GdistillError(f"{source_run} is a Stage-1 run: its w range and negative prompt are fixed there; leave "
                            "--w-min, --w-max and --negative-prompt out")
    pipeline = source_manifest.get("pipeline")
    refuse_sd_options(config, source_manifest, source, source_run)
    config = apply_preset(config, source.config["kind"], "consistency")
    w_min, w_max = source_manifest["w_range"] if from_stage1 else (config.w_min, config.w_max)
    data = distillation_data(source, source_manifest, config)
    torch.manual_seed(config.seed)
    # From a Stage-1 run the student starts as a copy of it; from a teacher, as the teacher with a
    # zero-initialised w-input (so a fresh student is the teacher's conditional model).
    student = prepare_student(make_student(source), config)
    negative = data.encoders.encode_prompts([config.negative_prompt])[0].cpu() if config.negative_prompt else None
    objective = ConsistencyDistillation(data, source, config, w_min, w_max)
    root_teacher = source_manifest["teacher"] if from_stage1 else str(config.teacher)
    manifest = {"kind": "consistency", "steps": None, "solver_steps": config.solver_steps, "w_range": [w_min, w_max],
                "dataset": data.spec, "class_names": source_manifest.get("class_names"),
                "data_range": source_manifest.get("data_range"), "teacher": root_teacher,
                "parent": parent_record(source_run, source_manifest), "lineage": lineage(source_manifest)}
    if pipeline:
        manifest.update(pipeline=pipeline, negative_prompt=source_manifest.get("negative_prompt", config.negative_prompt))
    with source.unconditional(negative) if negative is not None else contextlib.nullcontext():
        return train_and_commit(student, objective, config, Path(config.out), manifest,
                                f"consistency ({config.solver_steps}-step solver)", parent_sha=manifest["parent"]["sha256"])
