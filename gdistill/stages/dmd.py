"""Distribution-matching distillation (DMD2-style) into a w-conditioned generator: one run gives a
1-step (or k-step) student for every w of its range, trained so that its samples' distribution
matches the guided teacher's at the example's w (the real score), against a fake score trained
online on the generator's samples. It starts from a guided teacher (generator and fake score are
the teacher plus a zero-initialised w-input; the real score costs two calls) or from a Stage-1 run
(both start as that run, which is also the real score: one call)."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from ..config import DMDConfig
from ..errors import GdistillError
from ..files import sha256_file
from ..models import make_student
from ..run_folder import load_model, parent_record, read_manifest, resolve_run, same_run
from .common import OneRunStart, commit_one_run, prepare_student, start_from_teacher_or_stage1
from .objectives import DistributionMatching, GeneratorAndFakeScore


def dmd(config: DMDConfig) -> Path:
    start = start_from_teacher_or_stage1(config, "dmd", "distribution matching")
    pairs_record = None
    if start.config.pairs_from is not None:
        start, pairs_record = take_pairs_from(start.config.pairs_from, start)
    config = start.config
    networks, fields = dmd_networks(start)
    if pairs_record is not None:
        fields["pairs_from"] = pairs_record
    objective = DistributionMatching(start.data, start.source, config, start.w_min, start.w_max)
    return commit_one_run(start, networks, objective, fields, f"dmd ({config.generator_steps}-step generator)",
                          ships=lambda trained: trained.generator)


def dmd_networks(start: OneRunStart) -> tuple[GeneratorAndFakeScore, dict]:
    """The generator and fake score at their start, and the run's manifest fields."""
    config = start.config
    fields = {"kind": "dmd", "steps": config.generator_steps, "fake_updates": config.fake_updates}
    # With --lora-rank each network gets its own adapter over its own frozen copy of the weights
    # (the fake score's is dropped at the end); LoRA saves their gradients and optimizer state.
    if config.init is None:
        generator = prepare_student(make_student(start.source), config)
        fake_score = copy.deepcopy(generator)
    else:  # the fake score denoises at every t, which the teacher does and a few-step student does not
        init, init_manifest, init_run = load_init(config.init, start)
        generator = prepare_student(init.requires_grad_(True), config)
        fake_score = prepare_student(make_student(start.source), config)
        fields["init"] = parent_record(init_run, init_manifest)
    return GeneratorAndFakeScore(generator, fake_score, gan_head=config.gan_weight > 0), fields


def load_init(arg: str, start: OneRunStart):
    """The --init run: a w-conditioned student distilled from this run's teacher, for its w range,
    with the model a generator of this teacher has (so its weights are the generator's)."""
    init, manifest, run = load_model(arg)
    teacher = start.manifest["teacher"] if start.from_stage1 else str(start.config.teacher)
    if not init.w_conditioned:
        raise GdistillError(f"--init {arg}: {run} has no w-input (a {manifest['kind']}); pass a student of "
                            f"{teacher}, e.g. a halving round")
    if not same_run(manifest.get("teacher"), teacher):
        raise GdistillError(f"--init {arg}: {run} was distilled from {manifest.get('teacher')}, not from {teacher}; "
                            "pass a student of this teacher")
    if list(manifest["w_range"]) != [start.w_min, start.w_max]:
        w_min, w_max = manifest["w_range"]
        raise GdistillError(f"--init {arg}: {run} was trained for w in [{w_min}, {w_max}], this run is for "
                            f"[{start.w_min}, {start.w_max}]: pass --w-min {w_min} --w-max {w_max}")
    source = start.source
    if init.config != (source.config if source.w_conditioned else source.student_config()):
        raise GdistillError(f"--init {arg}: {run} holds another model than a student of {teacher} "
                            f"({init.config['kind']}); pass a student of this teacher")
    return init, manifest, run


def take_pairs_from(arg: str, start: OneRunStart) -> tuple[OneRunStart, dict]:
    """The start with its config's pair count and steps those of the --pairs-from run, and that
    run's record for the manifest, after checking that its pairs fit this run: made by the same
    start (the sha256 of the parent's weights), for the same w range and negative prompt, and whole."""
    run = resolve_run(arg)
    manifest = read_manifest(run)
    pairs = DistributionMatching.PAIRS_FILE
    if manifest.get("kind") != "dmd" or pairs not in manifest.get("files", {}):
        raise GdistillError(f"--pairs-from {arg}: {run} keeps no teacher pairs (a {manifest.get('kind')} run, or a dmd "
                            "run without --regression-weight or --gan-real teacher): pass a dmd run that made them")
    parent = parent_record(start.run, start.manifest)
    if manifest["parent"]["sha256"] != parent["sha256"]:
        raise GdistillError(f"--pairs-from {arg}: its pairs were made by {manifest['parent']['path']}, not by "
                            f"{start.run}: pass a dmd run of this teacher")
    if list(manifest["w_range"]) != [start.w_min, start.w_max]:
        w_min, w_max = manifest["w_range"]
        raise GdistillError(f"--pairs-from {arg}: its pairs are for w in [{w_min}, {w_max}], this run is for "
                            f"[{start.w_min}, {start.w_max}]: pass --w-min {w_min} --w-max {w_max}")
    settings = manifest["settings"]
    if settings.get("negative_prompt") != start.config.negative_prompt:
        raise GdistillError(f"--pairs-from {arg}: its pairs were made with --negative-prompt "
                            f"{settings.get('negative_prompt')!r}: pass the same")
    if sha256_file(run / pairs) != manifest["files"][pairs]:
        raise GdistillError(f"--pairs-from {arg}: {run / pairs} does not match its recorded sha256 (changed after "
                            "the run was written): make the pairs afresh (leave --pairs-from out)")
    config = dataclasses.replace(start.config, regression_pairs=settings["regression_pairs"],
                                 regression_steps=settings["regression_steps"])
    return start._replace(config=config), parent_record(run, manifest)
