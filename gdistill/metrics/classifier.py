"""Small classifiers shipped with the package (digits, Fashion-MNIST), for offline metrics:

- class accuracy: the fraction of class-conditional samples the network labels as the requested class;
- a Fréchet distance (and KID, IS) on its penultimate features, named after the data (digits_fd,
  fashion_fd) so that nobody takes it for Inception FID.

Each is a safetensors file in gdistill/builtin/ whose metadata records its recipe and held-out
accuracy; each data set's module (metrics/digits.py, metrics/fashion.py) holds the network and the
recipe. Hand-written because no library ships feature networks for these small images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from torch import nn

from ..errors import GdistillError
from ..files import sha256_file


class ShippedClassifier:
    """A shipped network `body` (features) + `head` (logits) with the metrics' interface."""

    has_logits = True  # its IS formula needs them

    def __init__(self, path: Path, make_net: Callable[[], nn.Module], recipe: str):
        if not path.is_file():
            raise GdistillError(f"the classifier {path} is missing: reinstall gdistill, or remake it with `{recipe}`")
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        self.net = make_net()
        self.net.load_state_dict(state)
        self.net.eval().requires_grad_(False)
        self.held_out_accuracy = float(metadata.get("held_out_accuracy", "nan"))
        self.id = f"{path.stem}-" + sha256_file(path)[:16]  # names its features in caches
        self.metadata = metadata

    @torch.no_grad()
    def features(self, samples: torch.Tensor) -> torch.Tensor:
        """samples (n, 1, h, w) in [-1, 1] -> penultimate features (n, d)."""
        return torch.cat([self.net.body(chunk.float().clamp(-1, 1)) for chunk in samples.split(1024)])

    @torch.no_grad()
    def logits(self, samples: torch.Tensor) -> torch.Tensor:
        return self.net.head(self.features(samples))

    def predict(self, samples: torch.Tensor) -> torch.Tensor:
        return self.logits(samples).argmax(1)

    def accuracy(self, samples: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of samples classified as their requested label."""
        return (self.predict(samples) == labels).float().mean().item()


def fit_classifier(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
                   seed: int, epochs: int, batch: int, lr: float) -> float:
    """Adam on the `train` rows with random shifts of +-1 pixel; returns the accuracy on `test`."""
    g = torch.Generator().manual_seed(seed)
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
        return (torch.cat([net(x[i]) for i in test.split(1024)]).argmax(1) == labels[test]).float().mean().item()
