"""The offline Fashion-MNIST metric: a small CNN trained on the Fashion-MNIST train split, shipped
with the package (gdistill/builtin/fashion-classifier.safetensors), for class accuracy and
fashion-FD (the Fréchet distance of its 128-dim penultimate features; cheap enough for CPU runs,
where Inception costs ~0.5 s an image). Named so that nobody takes it for Inception FID.

Recipe (recorded in the weights file's metadata): `python -m gdistill.metrics.fashion`, which trains
on the 60,000 train images (seed 0) and reports accuracy on the 10,000 test images. Samples of
another size are resized to 28 x 28 before scoring.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from ..files import save_safetensors_atomic

from ..run_folder import builtin_path
from .classifier import ShippedClassifier, fit_classifier

FEATURES = 128
SIZE = 28
RECIPE = "python -m gdistill.metrics.fashion"
EPOCHS = 4


def weights_path() -> Path:
    return builtin_path("fashion-classifier.safetensors")


class FashionNet(nn.Module):
    """(n, 1, 28, 28) in [-1, 1] -> 128 features -> 10 logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 64, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(64 * 7 * 7, FEATURES), nn.SiLU())
        self.head = nn.Linear(FEATURES, 10)

    def forward(self, x):
        return self.head(self.body(x))


class FashionClassifier(ShippedClassifier):
    def __init__(self, path: Path | None = None):
        super().__init__(path or weights_path(), FashionNet, RECIPE)

    def features(self, samples: torch.Tensor) -> torch.Tensor:
        if samples.shape[-1] != SIZE:
            samples = nn.functional.interpolate(samples.float(), size=(SIZE, SIZE), mode="bilinear", antialias=True)
        return super().features(samples)


def train_fashion_net(root: str = "fashion-mnist", seed: int = 0, epochs: int = EPOCHS, batch: int = 128,
                      lr: float = 1e-3) -> tuple[FashionNet, float]:
    """Train on the train split; returns (net, accuracy on the test split)."""
    from ..data import dataset_spec, idx_folder

    train = idx_folder(dataset_spec(root, split="train"))
    test = idx_folder(dataset_spec(root, split="test"))
    x, labels = torch.cat([train.x, test.x]), torch.cat([train.labels, test.labels])
    torch.manual_seed(seed)
    net = FashionNet()
    index = torch.arange(len(x))
    accuracy = fit_classifier(net, x, labels, index[:len(train.x)], index[len(train.x):], seed, epochs, batch, lr)
    return net, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the shipped Fashion-MNIST classifier (the recipe of record).")
    parser.add_argument("--data", default="fashion-mnist", help="fashion-mnist, or fashion-mnist:DIR")
    parser.add_argument("--out", type=Path, default=weights_path())
    args = parser.parse_args()
    net, accuracy = train_fashion_net(args.data)
    metadata = {"recipe": RECIPE, "seed": "0", "epochs": str(EPOCHS), "held_out_accuracy": f"{accuracy:.4f}",
                "split": "Fashion-MNIST train (60,000) / test (10,000)"}
    save_safetensors_atomic(net.state_dict(), args.out, metadata)
    print(f"test accuracy {accuracy:.4f} -> {args.out}")


if __name__ == "__main__":
    main()
