"""Datasets: built-in toy2d and digits, and class-folder images for users' own data.

A dataset draws training batches (x, labels) from a torch.Generator, so a run is reproducible from
its seed, and is described by a small `spec` dict that goes into the manifest and rebuilds it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import GdistillError

BUILTIN_DATASETS = ("toy2d", "digits")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class Dataset:
    spec: dict
    data_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    data_range: tuple[float, float] | None = None  # pixel data are clipped to it when sampling

    def batch(self, size: int, generator: torch.Generator, share: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """`size` examples drawn from `generator`, of which the `share` slice is returned: every
        process of a distributed run draws the same global batch and trains on its own slice."""
        raise NotImplementedError

    def to(self, device) -> Dataset:
        """Where batches are made (datasets that encode on the fly move their encoders)."""
        return self


class TensorDataset(Dataset):
    """A dataset held in memory; batches are drawn uniformly with replacement."""

    def __init__(self, spec, x, labels, class_names, data_range):
        self.spec, self.x, self.labels = spec, x, labels
        self.class_names, self.num_classes = list(class_names), len(class_names)
        self.data_shape, self.data_range = tuple(x.shape[1:]), data_range

    def __len__(self):
        return len(self.x)

    def batch(self, size, generator, share=slice(None)):
        idx = torch.randint(0, len(self.x), (size,), generator=generator)[share]
        return self.x[idx], self.labels[idx]


class Toy2D(Dataset):
    """A class-conditional 2-D Gaussian mixture with a known density: 8 components of std 0.08 on the
    unit circle; class k owns the two opposite components k and k + 4 (4 classes, each bimodal)."""

    num_components, num_classes, std = 8, 4, 0.08

    def __init__(self):
        self.spec = {"name": "toy2d"}
        self.data_shape, self.class_names = (2,), [str(k) for k in range(self.num_classes)]
        angles = torch.arange(self.num_components) * (2 * math.pi / self.num_components)
        self.means = torch.stack([torch.cos(angles), torch.sin(angles)], 1)

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Exact samples of p(x | label)."""
        side = torch.randint(0, 2, labels.shape, generator=generator)
        component = labels + side * self.num_classes
        noise = torch.randn(len(labels), 2, generator=generator)
        return self.means[component] + self.std * noise

    def batch(self, size, generator, share=slice(None)):
        labels = torch.randint(0, self.num_classes, (size,), generator=generator)
        return self.sample(labels, generator)[share], labels[share]


def digits() -> TensorDataset:
    """sklearn's 1,797 8x8 digits (values 0..16), scaled to [-1, 1], with their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    return TensorDataset({"name": "digits"}, x, labels, [str(k) for k in range(10)], (-1.0, 1.0))


def read_images(files: list[Path], size: tuple[int, int], mode: str | None = None) -> torch.Tensor:
    """Image files -> (n, c, height, width) in [-1, 1], resized (bicubic) to size = (height, width).
    mode "L" (grey, c = 1) or "RGB" (c = 3); None picks grey when every image is grey."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for f in files:
        try:
            with Image.open(f) as image:  # closes the file: a big folder must not exhaust file handles
                images.append(image.copy())
        except (UnidentifiedImageError, OSError) as e:
            raise GdistillError(f"cannot read image {f}: {e}; remove or replace it") from None
    mode = mode or ("L" if all(im.mode in ("L", "1", "I", "I;16") for im in images) else "RGB")
    height, width = size
    arrays = [np.asarray(im.convert(mode).resize((width, height), Image.BICUBIC), dtype=np.float32) for im in images]
    x = torch.tensor(np.stack(arrays)) / 127.5 - 1.0
    return (x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2)).contiguous()


def class_folder(path: str | Path, image_size: int = 32) -> TensorDataset:
    """DIR/<class>/*.{png,jpg,...}: one sub-folder per class, images of any size resized to
    image_size x image_size, scaled to [-1, 1]. Grayscale when every image is, RGB otherwise."""
    root = Path(path)
    if not root.is_dir():
        raise GdistillError(f"dataset folder {root} does not exist: pass toy2d, digits or a folder DIR/<class>/*.png")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not classes or not files:
        raise GdistillError(f"{root} holds no class folders with images: lay it out as DIR/<class>/*.png")
    x = read_images([f for f, _ in files], (image_size, image_size))
    labels = torch.tensor([k for _, k in files], dtype=torch.long)
    spec = {"name": "folder", "path": str(root.resolve()), "image_size": image_size}
    return TensorDataset(spec, x, labels, classes, (-1.0, 1.0))


def load_dataset(spec: dict | str, image_size: int | None = None) -> Dataset:
    """A dataset from its manifest spec, or from a CLI argument (a built-in name or a folder)."""
    if isinstance(spec, str):
        spec = {"name": spec} if spec in BUILTIN_DATASETS else {"name": "folder", "path": spec}
        if image_size is not None:
            spec["image_size"] = image_size
    name = spec.get("name")
    if name == "toy2d":
        return Toy2D()
    if name == "digits":
        return digits()
    if name == "folder":
        return class_folder(spec["path"], spec.get("image_size") or 32)
    raise GdistillError(f"unknown dataset {name!r}: use toy2d, digits or a folder DIR/<class>/*.png")
