"""Distribution-matching distillation (DMD2-style) into a w-conditioned generator: one run gives a
1-step (or k-step) student for every w of its range, trained so that its samples' distribution
matches the guided teacher's at the example's w (the real score), against a fake score trained
online on the generator's samples. It starts from a guided teacher (generator and fake score are
the teacher plus a zero-initialised w-input; the real score costs two calls) or from a Stage-1 run
(both start as that run, which is also the real score: one call)."""
from __future__ import annotations

import copy
from pathlib import Path

from ..config import DMDConfig
from ..models import make_student
from .common import commit_one_run, prepare_student, start_from_teacher_or_stage1
from .objectives import DistributionMatching, GeneratorAndFakeScore


def dmd(config: DMDConfig) -> Path:
    start = start_from_teacher_or_stage1(config, "dmd", "distribution matching")
    config = start.config
    generator = prepare_student(make_student(start.source), config)
    # With --lora-rank each network gets its own adapter over its own frozen copy of the weights
    # (the fake score's is dropped at the end); LoRA saves their gradients and optimizer state.
    networks = GeneratorAndFakeScore(generator, copy.deepcopy(generator), gan_head=config.gan_weight > 0)
    objective = DistributionMatching(start.data, start.source, config, start.w_min, start.w_max)
    return commit_one_run(start, networks, objective, {"kind": "dmd", "steps": config.generator_steps,
                                                       "fake_updates": config.fake_updates},
                          f"dmd ({config.generator_steps}-step generator)", ships=lambda trained: trained.generator)
