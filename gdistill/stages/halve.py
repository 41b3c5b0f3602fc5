"""Stage 2, progressive distillation: each round trains a student on an N-step grid to match two
DDIM steps of its frozen teacher on the 2N-step grid; every round is kept as DIR/round-K."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import HalveConfig, apply_preset
from ..errors import GdistillError
from ..models import make_student
from ..run_folder import MANIFEST, is_latent_run, lineage, load_model, parent_record, read_manifest
from .common import prepare_student, train_and_commit, training_data
from .objectives import StepHalving


def halve(config: HalveConfig) -> list[Path]:
    teacher, manifest, teacher_run = load_model(config.from_run)
    if not teacher.w_conditioned:
        raise GdistillError(f"{teacher_run} is a {manifest['kind']} run without a w-input: "
                            "halve needs a w-conditioned model: run `gdistill match --teacher` on it first")
    start_given = config.start_steps is not None
    config = apply_preset(config, teacher.config["kind"], "halve")
    if manifest["kind"] == "round":
        if start_given and config.start_steps != manifest["steps"]:
            raise GdistillError(f"--start-steps {config.start_steps} contradicts {teacher_run}, which samples "
                                f"in {manifest['steps']} steps: leave --start-steps out when continuing from a round")
        config = dataclasses.replace(config, start_steps=manifest["steps"])
    teacher_steps, first_round = config.start_steps, int(manifest.get("round", 0)) + 1
    if teacher_steps >> config.rounds < 1:
        raise GdistillError(f"{config.rounds} rounds from {teacher_steps} steps would go below 1 step: "
                            f"use at most {teacher_steps.bit_length() - 1} rounds")
    data = training_data(config.data, manifest, config.cache)
    w_min, w_max = manifest["w_range"]
    out_dir, written = Path(config.out), []
    for k in range(config.rounds):
        round_no, steps = first_round + k, teacher_steps >> (k + 1)
        out = out_dir / f"round-{round_no}"
        parent = parent_record(teacher_run, manifest)
        if (out / MANIFEST).is_file() and not config.overwrite:
            done = read_manifest(out)
            if done.get("parent", {}).get("sha256") != parent["sha256"]:
                raise GdistillError(f"{out} exists and was distilled from another teacher: "
                                    "pass --overwrite to replace it, or choose another --out")
            if config.resume == "never":
                raise GdistillError(f"{out} is already complete and --resume never was given: pass --resume auto "
                                    "to go on from it, or --overwrite to distill every round afresh")
            print(f"{out} is already complete; skipping round {round_no}")
        else:
            # seed + round - 1: continuing from round-3 gives round-4 exactly as a single run would
            round_config = dataclasses.replace(config, seed=config.seed + round_no - 1)
            torch.manual_seed(round_config.seed)
            student = prepare_student(make_student(teacher), round_config)
            objective = StepHalving(data, teacher, round_config, w_min, w_max, steps)
            round_manifest = {
                "kind": "round", "round": round_no, "steps": steps, "teacher_steps": 2 * steps,
                "w_range": [w_min, w_max], "dataset": data.spec,
                "class_names": manifest.get("class_names"), "data_range": manifest.get("data_range"),
                "teacher": manifest.get("teacher"), "parent": parent, "lineage": lineage(manifest)}
            if is_latent_run(manifest):
                round_manifest.update(pipeline=manifest["pipeline"], negative_prompt=manifest.get("negative_prompt"))
            train_and_commit(student, objective, round_config, out, round_manifest,
                             f"halve round {round_no}: {2 * steps} -> {steps} steps",
                             lr_decay=True, parent_sha=parent["sha256"])
        written.append(out)
        teacher, manifest, teacher_run = load_model(out)
    return written

