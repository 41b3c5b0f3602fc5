"""Model adapters with one interface (see base.Denoiser)."""
from __future__ import annotations

import copy

from .base import Denoiser, GuidanceEmbedding, calls_per_step, denoise_fn, guided_predict_x  # noqa: F401
from .dit import LatentDiTDenoiser
from .latent import LatentUNetDenoiser
from .pixel import PixelUNetDenoiser
from .sd3 import LatentTransformerDenoiser
from .toy import ToyMLPDenoiser

MODEL_KINDS = {PixelUNetDenoiser.kind: PixelUNetDenoiser, ToyMLPDenoiser.kind: ToyMLPDenoiser,
               LatentUNetDenoiser.kind: LatentUNetDenoiser, LatentTransformerDenoiser.kind: LatentTransformerDenoiser,
               LatentDiTDenoiser.kind: LatentDiTDenoiser}


def build_denoiser(config: dict) -> Denoiser:
    kind = config.get("kind")
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
    return MODEL_KINDS[kind](config)


def make_student(teacher: Denoiser) -> Denoiser:
    """A copy of the teacher. A plain teacher gains the zero-initialised w-embedding (Stage 1);
    a w-conditioned one is copied as it is (Stage 2). All its weights train (see add_lora)."""
    if teacher.w_conditioned:
        return copy.deepcopy(teacher).requires_grad_(True)
    student = build_denoiser(teacher.student_config())
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(student.w_parameters) for k in missing), (missing, unexpected)
    return student.requires_grad_(True)
