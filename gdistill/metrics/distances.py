"""Sample-based distances between distributions (pure tensor code)."""
from __future__ import annotations

import torch


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Energy distance D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'| between samples a (n, d) and b (m, d).
    Zero iff the distributions are equal; the unbiased within-set means exclude the diagonal.
    Written by hand: scipy's version is 1-D only and the O(n^2) form is a few lines."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    n, m = len(a), len(b)
    ab = torch.cdist(a, b).mean()
    aa = torch.cdist(a, a).sum() / (n * (n - 1))
    bb = torch.cdist(b, b).sum() / (m * (m - 1))
    return float(2 * ab - aa - bb)
