"""Distribution-matching distillation (DMD2-style) into a w-conditioned generator: one run gives a
1-step (or k-step) student for every w of its range, trained so that its samples' distribution
matches the guided teacher's at the example's w (the real score), against a fake score trained
online on the generator's samples. It starts from a guided teacher (generator and fake score are
the teacher plus a zero-initialised w-input; the real score costs two calls) or from a Stage-1 run
(both start as that run, which is also the real score: one call)."""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch

from ..config import DMDConfig, apply_preset
from ..errors import GdistillError
from ..models import make_student
from ..run_folder import lineage, load_model, parent_record
from .common import distillation_data, prepare_student, refuse_sd_options, train_and_commit
from .objectives import DistributionMatching, GeneratorAndFakeScore


def dmd(config: DMDConfig) -> Path:
    source, source_manifest, source_run = load_model(
        config.teacher, pipeline_options={"revision": config.revision, "variant": config.variant})
    from_stage1 = source.w_conditioned
    if from_stage1 and source_manifest["kind"] != "stage1":
        raise GdistillError(f"{source_run} is a {source_manifest['kind']} run: distribution matching starts from "
                            "a guided teacher or a Stage-1 run (`gdistill match`)")
    if from_stage1 and (config.w_min is not None or config.w_max is not None or config.negative_prompt):
        raise GdistillError(f"{source_run} is a Stage-1 run: its w range and negative prompt are fixed there; leave "
                            "--w-min, --w-max and --negative-prompt out")
    if config.lora_rank:
        raise GdistillError("--lora-rank is not offered for dmd yet: DMD trains the generator and the fake score "
                            "whole; leave it out")
    pipeline = source_manifest.get("pipeline")
    refuse_sd_options(config, source_manifest, source, source_run)
    config = apply_preset(config, source.config["kind"], "dmd")
    w_min, w_max = source_manifest["w_range"] if from_stage1 else (config.w_min, config.w_max)
    data = distillation_data(source, source_manifest, config)
    torch.manual_seed(config.seed)
    generator = prepare_student(make_student(source), config)
    networks = GeneratorAndFakeScore(generator, copy.deepcopy(generator))
    negative = data.encoders.encode_prompts([config.negative_prompt])[0].cpu() if config.negative_prompt else None
    objective = DistributionMatching(data, source, config, w_min, w_max)
    root_teacher = source_manifest["teacher"] if from_stage1 else str(config.teacher)
    manifest = {"kind": "dmd", "steps": config.generator_steps, "fake_updates": config.fake_updates,
                "w_range": [w_min, w_max], "dataset": data.spec, "class_names": source_manifest.get("class_names"),
                "data_range": source_manifest.get("data_range"), "teacher": root_teacher,
                "parent": parent_record(source_run, source_manifest), "lineage": lineage(source_manifest)}
    if pipeline:
        manifest.update(pipeline=pipeline, negative_prompt=source_manifest.get("negative_prompt", config.negative_prompt))
    with source.unconditional(negative) if negative is not None else contextlib.nullcontext():
        return train_and_commit(networks, objective, config, Path(config.out), manifest,
                                f"dmd ({config.generator_steps}-step generator)", parent_sha=manifest["parent"]["sha256"],
                                ships=lambda trained: trained.generator)
