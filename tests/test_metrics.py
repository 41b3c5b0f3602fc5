"""Energy distance: zero in expectation between equal distributions, clearly positive otherwise; the
class-conditional version is unbiased for sets drawn with the same labels."""
import torch

from gdistill.data import Toy2D
from gdistill.metrics import class_energy_distance, energy_distance
from gdistill.tasks.sample import cycle_labels


def test_energy_distance_of_known_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2000, 3, generator=g), torch.randn(2000, 3, generator=g)
    assert abs(energy_distance(a, b)) < 0.01
    # 2 E|X-Y| - E|X-X'| - E|Y-Y'| for N(0, I) against N(mu, I) grows with |mu|
    assert energy_distance(a, b + 0.5) > 0.1 > energy_distance(a, b + 0.2) > 0.01


def test_class_energy_distance_is_unbiased_where_the_pooled_one_is_not():
    data, g = Toy2D(), torch.Generator().manual_seed(1)
    labels = cycle_labels(100, data.num_classes)  # both sets drawn with the same labels
    pooled, per_class = [], []
    for _ in range(200):
        a, b = data.sample(labels, g), data.sample(labels, g)
        pooled.append(energy_distance(a, b))
        per_class.append(class_energy_distance(a, b, labels))
    pooled, per_class = torch.tensor(pooled), torch.tensor(per_class)
    stderr = per_class.std() / len(per_class) ** 0.5
    assert abs(per_class.mean()) < 3 * stderr
    assert pooled.mean() < -3 * pooled.std() / len(pooled) ** 0.5  # the bias class_energy_distance removes
    many = cycle_labels(4000, data.num_classes)
    same = class_energy_distance(data.sample(many, g), data.sample(many, g), many)
    shifted = class_energy_distance(data.sample(many, g), data.sample(many, g) + 0.1, many)
    assert abs(same) < 0.01 < shifted


def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    from gdistill.metrics.frechet import frechet_distance_of

    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 8, generator=g)
    assert abs(frechet_distance_of(a, a)) < 1e-6
    b = torch.randn(20000, 8, generator=g)
    small = frechet_distance_of(a, b)
    assert small < 0.05
    # N(0, I) against N(mu, I): FD = |mu|^2 exactly, estimated from samples
    assert abs(frechet_distance_of(a, b + 1.0) - 8.0) < 0.2
    assert frechet_distance_of(a, b + 0.5) > frechet_distance_of(a, b + 0.2) > small
    # N(0, I) against N(0, 4 I): Tr(I + 4I - 2*2I) = d
    assert abs(frechet_distance_of(a, 2 * b) - 8.0) < 0.3


def test_frechet_distance_needs_more_samples_than_dimensions():
    import pytest

    from gdistill.errors import GdistillError
    from gdistill.metrics.frechet import frechet_distance_of

    with pytest.raises(GdistillError, match="more than 64"):
        frechet_distance_of(torch.randn(50, 64), torch.randn(500, 64))
