"""Inception Score and Kernel Inception Distance as formulas over a classifier's logits or features.

torch-fidelity computes both, but only inside its Inception pipeline (which needs torchvision); the
offline digits metric applies the same formulas to the shipped digits classifier, so they are
written here, in the form torch-fidelity uses (so the two read alike).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import GdistillError


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` equal parts of the set.
    Between 1 (every sample gets the same class distribution) and the number of classes
    (confident, evenly spread)."""
    if len(logits) < splits:
        raise GdistillError(f"the inception score needs at least {splits} samples, got {len(logits)}")
    log_p = torch.log_softmax(logits.double(), dim=1)
    scores = []
    for part in log_p.chunk(splits):
        log_marginal = torch.logsumexp(part, 0) - np.log(len(part))
        kl = (part.exp() * (part - log_marginal)).sum(1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def kernel_distance(a: torch.Tensor, b: torch.Tensor, subset_size: int = 1000, subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD^2 between features a (n, d) and b (m, d) with the polynomial kernel
    k(x, y) = (x.y / d + 1)^3, averaged over random subsets of `subset_size` from each set
    (mean, std). Zero in expectation for equal distributions, so it can come out slightly negative."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    subset_size = min(subset_size, len(a), len(b))
    if subset_size < 2:
        raise GdistillError("the kernel distance needs at least 2 samples in each set")
    d = a.shape[1]
    generator = torch.Generator().manual_seed(seed)
    m = subset_size
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=generator)[:m]]
        y = b[torch.randperm(len(b), generator=generator)[:m]]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off_diagonal = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append((off_diagonal - 2 * kxy.mean()).item())
    return float(np.mean(values)), float(np.std(values))
