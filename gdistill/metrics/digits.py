"""The offline metric for the built-in digits default: a small CNN trained on sklearn's real digits,
shipped with the package (gdistill/builtin/digits-classifier.safetensors), giving class accuracy and
digits-FD, the Fréchet distance between Gaussians fitted to its 64-dimensional penultimate features
of two sample sets (metrics/classifier.py).

Recipe (recorded in the weights file's metadata): `python -m gdistill.metrics.digits`, which trains
on a fixed 75 % split (seed 0) and reports accuracy on the other 25 %. Hand-written because no
library ships a feature network for 8x8 digits.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from ..files import save_safetensors_atomic

from ..run_folder import builtin_path
from .classifier import ShippedClassifier, fit_classifier
from .frechet import frechet_distance_of

FEATURES = 64
RECIPE = "python -m gdistill.metrics.digits"


def weights_path() -> Path:
    return builtin_path("digits-classifier.safetensors")


class DigitsNet(nn.Module):
    """(n, 1, 8, 8) in [-1, 1] -> 64 features -> 10 logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 64, 3, padding=1), nn.SiLU(),
            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64 * 4 * 4, FEATURES), nn.SiLU())
        self.head = nn.Linear(FEATURES, 10)

    def forward(self, x):
        return self.head(self.body(x))


def classifier_split(seed: int = 0):
    """(x, labels, train index, held-out index): the fixed 75 / 25 % split the classifier was trained on."""
    from sklearn.model_selection import train_test_split

    from ..data import digits

    data = digits()
    index = torch.arange(len(data.x)).numpy()
    train, test = train_test_split(index, test_size=0.25, random_state=seed, stratify=data.labels.numpy())
    return data.x, data.labels, torch.as_tensor(train), torch.as_tensor(test)


def train_digits_net(seed: int = 0, epochs: int = 40, batch: int = 64, lr: float = 1e-3) -> tuple[DigitsNet, float]:
    """Train on the 75 % split with Adam and small random shifts; returns (net, held-out accuracy)."""
    x, labels, train, test = classifier_split(seed)
    torch.manual_seed(seed)
    net = DigitsNet()
    return net, fit_classifier(net, x, labels, train, test, seed, epochs, batch, lr)


class DigitsClassifier(ShippedClassifier):
    """The shipped digits network, for class accuracy and digits-FD of 8x8 digit samples."""

    def __init__(self, path: Path | None = None):
        super().__init__(path or weights_path(), DigitsNet, RECIPE)

    def digits_fd(self, samples: torch.Tensor, reference: torch.Tensor) -> float:
        """Fréchet distance between the two sets' feature Gaussians (each needs more than 64 samples)."""
        return frechet_distance_of(self.features(samples), self.features(reference))


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the shipped digits classifier (the recipe of record).")
    parser.add_argument("--out", type=Path, default=weights_path())
    args = parser.parse_args()
    net, accuracy = train_digits_net()
    metadata = {"recipe": RECIPE, "seed": "0", "epochs": "40", "held_out_accuracy": f"{accuracy:.4f}",
                "split": "sklearn load_digits, stratified 75/25, random_state 0"}
    save_safetensors_atomic(net.state_dict(), args.out, metadata)
    print(f"held-out accuracy {accuracy:.4f} -> {args.out}")


if __name__ == "__main__":
    main()
