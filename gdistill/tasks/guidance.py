"""How much guidance a w-conditioned run really applies: w_eff per w and per range of t.

On the same noisy inputs z_t = a_t x + s_t e (x from the run's training data), the run's prediction
S(z_t, c, w) is compared with its root teacher's conditional and unconditional predictions x_c, x_u:

    w_eff = sum <S(w) - x_c, x_c - x_u> / sum |x_c - x_u|^2      (diffusion.effective_guidance)

The teacher's own guided prediction gives exactly w, so a Stage-1 model that learned the whole range
has w_eff close to w at every w and t; one whose w_eff is squeezed toward the middle of the range is
less guided than its teacher at the top and more guided at the bottom. For a halving round the
prediction is a few-step target rather than the teacher's x, so read its w_eff as a trend.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion import alpha_sigma_like, diffuse, effective_guidance
from ..errors import GdistillError
from ..models import Denoiser

DEFAULT_T_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class GuidanceRow:
    w: float
    w_eff: dict[str, float]  # by t range ("0-0.25", ..., and "all")

    def as_dict(self) -> dict:
        return {"w": self.w, **{f"w_eff t {k}": v for k, v in self.w_eff.items()}}


@torch.no_grad()
def effective_guidance_table(model: Denoiser, teacher: Denoiser, data, ws: list[float], n: int = 512,
                             seed: int = 0, t_edges=DEFAULT_T_EDGES, device="cpu") -> list[GuidanceRow]:
    """w_eff of `model` against `teacher` at every w, over n examples per t range (t uniform in
    the range), the same examples and noise at every w."""
    if not model.w_conditioned:
        raise GdistillError("w_eff is measured on a w-conditioned run (stage 1 or a round); this is a teacher")
    if n < 1:
        raise GdistillError(f"--n must be at least 1, got {n}")
    model, teacher = model.to(device), teacher.to(device)
    generator = torch.Generator().manual_seed(seed)
    bins = []  # (name, z, t, labels, x_c, x_u), drawn once and reused at every w
    for lo, hi in zip(t_edges[:-1], t_edges[1:]):
        x, labels = data.to(device).batch(n, generator)
        x, labels = x.to(device), labels.to(device)
        eps = torch.randn(x.shape, generator=generator).to(device)
        t = (lo + (hi - lo) * (1 - torch.rand(n, generator=generator))).to(device)  # (lo, hi]
        z = diffuse(x, eps, *alpha_sigma_like(teacher.schedule, t, x))
        x_c = teacher.predict_x(z, t, labels)
        x_u = teacher.predict_x(z, t, teacher.null_condition(labels))
        bins.append((f"{lo:g}-{hi:g}", z, t, labels, x_c, x_u))
    rows = []
    for w in ws:
        per_bin, predictions = {}, []
        for name, z, t, labels, x_c, x_u in bins:
            prediction = model.predict_x(z, t, labels, torch.full((n,), float(w), device=device))
            per_bin[name] = effective_guidance(prediction, x_c, x_u)
            predictions.append((prediction, x_c, x_u))
        every = [torch.cat(parts) for parts in zip(*predictions)]
        per_bin["all"] = effective_guidance(*every)
        rows.append(GuidanceRow(w, per_bin))
    return rows


def run_effective_guidance(run: str, ws: list[float] | None, n: int, seed: int, device) -> tuple[dict, list[GuidanceRow]]:
    """(manifest, rows) for a Stage-1 or round run against its root teacher, on the run's training
    data; w defaults to five points spanning the run's w range, its ends included."""
    from ..run_folder import is_latent_run, load_model
    from ..stages.common import training_data

    model, manifest, path = load_model(run)
    if not model.w_conditioned or not manifest.get("teacher"):
        raise GdistillError(f"--w-eff measures a distilled run (stage 1 or a round) against its teacher; {path} is a "
                            f"{manifest['kind']} run")
    try:
        teacher, teacher_manifest, _ = load_model(manifest["teacher"])
    except GdistillError as e:
        raise GdistillError(f"--w-eff: cannot load {path}'s teacher {manifest['teacher']}: {e}") from None
    data = training_data(None, manifest)
    if is_latent_run(teacher_manifest):
        teacher.with_latent_size(data.data_shape[-1])
    if ws is None:
        lo, hi = manifest["w_range"]
        ws = [lo + (hi - lo) * k / 4 for k in range(5)]
    return manifest, effective_guidance_table(model, teacher, data, ws, n, seed, device=device)
