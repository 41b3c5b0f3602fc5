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
