"""The offline metric for the built-in digits default: a small CNN trained on sklearn's real digits,
shipped with the package (gdistill/builtin/digits-classifier.safetensors), giving

- class accuracy: the fraction of class-conditional samples it labels as the requested class;
- digits-FD: the Fréchet distance between Gaussians fitted to its 64-dimensional penultimate
  features of two sample sets. Named so that nobody takes it for Inception FID.

Recipe (recorded in the weights file's metadata): `python -m gdistill.metrics.digits`, which trains
on a fixed 75 % split (seed 0) and reports accuracy on the other 25 %. Hand-written because no
library ships a feature network for 8x8 digits.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..errors import GdistillError
from ..run import builtin_path, save_safetensors_atomic, sha256_file
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
    g = torch.Generator().manual_seed(seed)
    net = DigitsNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in train[torch.randperm(len(train), generator=g)].split(batch):
            xb = x[idx]
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()  # +-1 pixel shifts
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = nn.functional.cross_entropy(net(xb), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x[test]).argmax(1) == labels[test]).float().mean().item()
    return net, accuracy


class DigitsClassifier:
    """The shipped digits network, for class accuracy and digits-FD of 8x8 digit samples."""

    def __init__(self, path: Path | None = None):
        path = path or weights_path()
        if not path.is_file():
            raise GdistillError(f"the digits classifier {path} is missing: reinstall gdistill, or remake it with `{RECIPE}`")
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        self.net = DigitsNet()
        self.net.load_state_dict(state)
        self.net.eval().requires_grad_(False)
        self.held_out_accuracy = float(metadata.get("held_out_accuracy", "nan"))
        self.id = "digits-classifier-" + sha256_file(path)[:16]  # names its features in caches
        self.metadata = metadata

    @torch.no_grad()
    def features(self, samples: torch.Tensor) -> torch.Tensor:
        """samples (n, 1, 8, 8) in [-1, 1] -> penultimate features (n, 64)."""
        return torch.cat([self.net.body(chunk.float().clamp(-1, 1)) for chunk in samples.split(1024)])

    @torch.no_grad()
    def logits(self, samples: torch.Tensor) -> torch.Tensor:
        return self.net.head(self.features(samples))

    def predict(self, samples: torch.Tensor) -> torch.Tensor:
        return self.logits(samples).argmax(1)

    def accuracy(self, samples: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of samples classified as their requested label."""
        return (self.predict(samples) == labels).float().mean().item()

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
