"""Fréchet distance between Gaussians fitted to two feature sets (the formula behind FID):

    FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

Written here because the offline digits metric needs it on features that are not Inception's, and
torch-fidelity (which has the same formula) cannot be installed on CPU-only machines; scipy's sqrtm
gives the matrix square root."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import GdistillError


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of features (n, d), in float64. Needs n > d for a full-rank covariance."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise GdistillError(f"features must be (n, d), got shape {f.shape}")
    n, d = f.shape
    if n <= d:
        raise GdistillError(f"{n} samples cannot estimate a {d}-dimensional covariance: use more than {d} samples")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    from scipy import linalg

    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # Near-singular product: regularise both covariances slightly (as pytorch-fid does).
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real  # sqrtm can return tiny imaginary parts from rounding
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_of(a, b) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets a (n, d) and b (m, d)."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))
