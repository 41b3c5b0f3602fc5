"""Reference sets for `gdistill eval --ref`, and a cache of their features keyed by content hash.

A reference is a built-in dataset (digits: sklearn's real digits; toy2d: exact samples of the known
mixture), the test split of Fashion-MNIST or another MNIST-format folder, or an image folder, flat or laid out as DIR/<class>/*.png (then its classes are labels).
Images are loaded at the samples' size and channel count, in [-1, 1], so every metric sees both
sets alike.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..data import Toy2D, dataset_spec, digits, idx_folder, is_idx_folder
from ..errors import GdistillError
from ..files import save_safetensors_atomic, sha256_file
from ..images import IMAGE_SUFFIXES, read_images

BUILTIN_REFERENCES = ("digits", "toy2d")
TOY2D_REFERENCE_SIZE = 10_000


@dataclass
class ReferenceSet:
    name: str
    samples: torch.Tensor  # (n, ...) in the data's space
    labels: torch.Tensor | None  # class of each sample, where the reference has classes
    content_hash: str  # sha256 of what the reference holds: its cache key


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gdistill"


def tensor_hash(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def load_reference(arg: str, sample_shape: tuple[int, ...]) -> ReferenceSet:
    """The reference named by --ref, shaped like samples of `sample_shape`."""
    if arg == "digits" and not Path(arg).exists():
        data = digits()
        return ReferenceSet("digits", data.x, data.labels, tensor_hash(data.x, data.labels))
    if arg == "toy2d" and not Path(arg).exists():
        labels = torch.arange(TOY2D_REFERENCE_SIZE) % Toy2D.num_classes
        points = Toy2D().sample(labels, torch.Generator().manual_seed(0))
        return ReferenceSet("toy2d", points, labels, tensor_hash(points, labels))
    if arg == "fashion-mnist" or arg.startswith("fashion-mnist:") or is_idx_folder(Path(arg)):
        # the test split: the reference FID is measured against on MNIST-format data
        size = sample_shape[-1] if len(sample_shape) == 3 else None
        data = idx_folder(dataset_spec(arg, size, split="test"))
        if len(sample_shape) != 3 or data.data_shape[0] != sample_shape[0]:
            raise GdistillError(f"--ref {arg} holds grey {data.data_shape[1]}x{data.data_shape[2]} images, and the run "
                                f"makes {tuple(sample_shape)}-shaped samples: pass a reference like the samples")
        return ReferenceSet(arg, data.x, data.labels, tensor_hash(data.x, data.labels))
    return _image_folder(Path(arg), sample_shape)


def default_reference(dataset: dict) -> str | None:
    """The --ref that stands for a run's training data: the same built-in or folder (the test
    split for MNIST-format data)."""
    name = dataset.get("name")
    if name in ("folder", "idx"):
        return dataset.get("path")
    if name == "fashion-mnist":
        return f"fashion-mnist:{dataset['path']}"
    return name


def _image_folder(root: Path, sample_shape: tuple[int, ...]) -> ReferenceSet:
    if not root.is_dir():
        raise GdistillError(f"--ref {root} does not exist: pass an image folder, a class-folder dataset "
                            f"DIR/<class>/*.png, or a built-in ({', '.join(BUILTIN_REFERENCES)})")
    if len(sample_shape) != 3:
        raise GdistillError(f"--ref {root} is an image folder, but the run makes {tuple(sample_shape)}-shaped "
                            "samples, not images: use --ref toy2d")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise GdistillError(f"--ref {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): point it at a folder of reference images")
    classes = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1})
    # Class labels only where every image sits in a class folder (DIR/<class>/...).
    class_layout = bool(classes) and all(len(f.relative_to(root).parts) > 1 for f in files)
    channels, height, width = sample_shape
    h = hashlib.sha256(f"{channels}x{height}x{width}".encode())
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(sha256_file(f).encode())
    x = read_images(files, (height, width), "L" if channels == 1 else "RGB")
    labels = torch.tensor([classes.index(f.relative_to(root).parts[0]) for f in files]) if class_layout else None
    return ReferenceSet(str(root), x, labels, h.hexdigest())


class FeatureCache:
    """Features of reference sets on disk, one safetensors file per (feature network, content) key:
    computed once, reused while neither the reference's content nor the network's weights change."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, network_id: str, reference: ReferenceSet) -> Path:
        key = hashlib.sha256(f"{network_id}:{reference.content_hash}".encode()).hexdigest()[:32]
        return self.root / f"features-{key}.safetensors"

    def features(self, network_id: str, reference: ReferenceSet,
                 compute: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """(features of the reference, whether they came from the cache)."""
        path = self.path(network_id, reference)
        if path.is_file():
            try:
                return load_file(str(path))["features"], True
            except (SafetensorError, OSError, KeyError):
                pass  # unreadable cache entry: recompute and replace it
        features = compute(reference.samples)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            save_safetensors_atomic({"features": features}, path)
        except OSError as e:
            raise GdistillError(f"cannot write the feature cache {self.root}: {e.strerror}; pass a writable --cache-dir") from None
        return features, False
