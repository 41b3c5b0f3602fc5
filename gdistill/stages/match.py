"""Stage 1, guidance matching: a w-conditioned student learns the teacher's guided prediction
(1 + w) x_c - w x_u for every w in [w_min, w_max] at once."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import MatchConfig, apply_preset
from ..data import load_dataset
from ..diffusion import alpha_sigma_like, diffuse, weighted_x_loss
from ..errors import GdistillError
from ..models import guided_predict_x, make_student
from ..run import lineage, load_model, parent_record
from .common import draw_batch, draw_w, train_and_commit


def match(config: MatchConfig) -> Path:
    teacher, teacher_manifest, teacher_run = load_model(config.teacher)
    if teacher.w_conditioned:
        raise GdistillError(f"{teacher_run} is already w-conditioned ({teacher_manifest['kind']}): "
                            "match takes a guided teacher; to halve its steps run `gdistill halve --from` it")
    config = apply_preset(config, teacher.config["kind"], "match")
    data = load_dataset(config.data) if config.data else load_dataset(teacher_manifest["dataset"])
    if data.num_classes != teacher.num_classes or tuple(data.data_shape) != tuple(teacher.data_shape):
        raise GdistillError(f"--data {config.data} has {data.num_classes} classes of shape {data.data_shape}, "
                            f"the teacher expects {teacher.num_classes} of shape {teacher.data_shape}")
    torch.manual_seed(config.seed)
    student = make_student(teacher)
    schedule = teacher.schedule

    def loss_fn(net, generator, device):
        teacher.to(device)
        x, labels, eps = draw_batch(data, config.batch_size, generator, device)
        w = draw_w(len(x), config.w_min, config.w_max, generator).to(device)
        t = schedule.sample_t(len(x), generator).to(device)
        a, s = alpha_sigma_like(schedule, t, x)
        z = diffuse(x, eps, a, s)
        with torch.no_grad():
            target = guided_predict_x(teacher, z, t, labels, w)
        loss = weighted_x_loss(net(z, t, labels, w), target, schedule.log_snr(t), config.weighting)
        return loss, {"match_loss": loss.item()}

    manifest = {"kind": "stage1", "steps": None, "w_range": [config.w_min, config.w_max],
                "dataset": data.spec, "class_names": teacher_manifest.get("class_names"),
                "data_range": teacher_manifest.get("data_range"),
                "teacher": str(config.teacher), "parent": parent_record(teacher_run, teacher_manifest),
                "lineage": lineage(teacher_manifest)}
    return train_and_commit(student, loss_fn, config, Path(config.out), manifest, "match (stage 1)",
                            parent_sha=manifest["parent"]["sha256"])
