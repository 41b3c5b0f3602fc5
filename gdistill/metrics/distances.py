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


def class_energy_distance(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
                          b_labels: torch.Tensor | None = None) -> float:
    """Mean over the classes of `labels` of the energy distance between a[labels == c] and
    b[b_labels == c] (b_labels defaults to labels): the distance between the class-conditional
    distributions. For two sets drawn with the same labels
    (as every comparison here is) the pooled energy_distance is biased low, because same-class pairs
    are more frequent across the sets than within one; per class the samples are i.i.d. and the
    estimate is unbiased, so the teacher-against-itself floor scatters around zero."""
    b_labels = labels if b_labels is None else b_labels
    classes = labels.unique()
    return sum(energy_distance(a[labels == c], b[b_labels == c]) for c in classes) / len(classes)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of samples `fake` (n, d) against
    `real` (m, d): each set's manifold is the union of balls around its points, of radius the
    distance to their k-th nearest neighbour in the same set. Precision is the share of fake points
    inside the real manifold (fidelity), recall the share of real points inside the fake manifold
    (coverage: a generator that drops modes loses recall, where FD mixes the two). The sets should
    be of equal size, the radii depending on it. Written by hand: torch-fidelity has the same formula
    only on its own Inception features, and it cannot be installed on CPU-only machines."""
    real, fake = real.double().flatten(1), fake.double().flatten(1)

    def radii(points: torch.Tensor) -> torch.Tensor:
        # the k-th nearest neighbour, the point itself (distance 0) being the 0-th
        return torch.cdist(points, points).kthvalue(k + 1, dim=1).values

    def inside(points: torch.Tensor, centres: torch.Tensor, radius: torch.Tensor) -> float:
        return float((torch.cdist(points, centres) <= radius).any(dim=1).double().mean())

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))
