"""Consistency distillation (LCM-style): one training run gives a w-conditioned student that samples
in any 1 to 8 (up to --solver-steps) steps, beside the paper's match + halve rounds. It starts from a
guided teacher (the student is the teacher plus a zero-initialised w-input, and the teacher's
guided prediction costs two calls a solver step) or from a Stage-1 run (the student starts as that
run, which is also the teacher: one call a solver step)."""
from __future__ import annotations

from pathlib import Path

from ..config import ConsistencyConfig
from ..models import make_student
from .common import commit_one_run, prepare_student, start_from_teacher_or_stage1
from .objectives import ConsistencyDistillation


def consistency(config: ConsistencyConfig) -> Path:
    start = start_from_teacher_or_stage1(config, "consistency", "consistency distillation")
    config = start.config
    # From a Stage-1 run the student starts as a copy of it; from a teacher, as the teacher with a
    # zero-initialised w-input (so a fresh student is the teacher's conditional model).
    student = prepare_student(make_student(start.source), config)
    objective = ConsistencyDistillation(start.data, start.source, config, start.w_min, start.w_max)
    return commit_one_run(start, student, objective, {"kind": "consistency", "steps": None,
                                                      "solver_steps": config.solver_steps},
                          f"consistency ({config.solver_steps}-step solver)")
