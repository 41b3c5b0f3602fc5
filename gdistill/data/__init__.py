"""Datasets: built-in toy2d and digits, Fashion-MNIST and other MNIST-format (idx) folders, and
class-folder images for users' own data.

A dataset draws training batches (x, labels) from a torch.Generator, so a run is reproducible from
its seed, and is described by a small `spec` dict that goes into the manifest and rebuilds it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import GdistillError
from ..images import IMAGE_SUFFIXES, read_images

BUILTIN_DATASETS = ("toy2d", "digits")  # in the package; fashion-mnist is read from disk


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


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
IDX_SPLITS = {"train": "train", "test": "t10k"}  # split -> file prefix ({prefix}-images-idx3-ubyte[.gz])
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format, optionally gzipped): 2 zero bytes, a type byte, the number of
    dimensions, one big-endian int32 per dimension, then the array."""
    import gzip

    opener = gzip.open if Path(path).suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise GdistillError(f"cannot read {path}: {e.strerror or e}; replace the file") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in IDX_DTYPES:
        raise GdistillError(f"{path} is not an IDX file (MNIST format): its header is wrong")
    dims = int(raw[3])
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    body = raw[4 + 4 * dims:]
    if len(body) != int(np.prod(shape)) * dtype.itemsize:
        raise GdistillError(f"{path} is truncated or damaged: its header says {shape}, it holds {len(body)} bytes")
    return np.frombuffer(body, dtype).reshape(shape)


def idx_file(root: Path, split: str, kind: str) -> Path | None:
    """root/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], or None."""
    stem = f"{IDX_SPLITS[split]}-{kind}-ubyte"
    return next((root / f"{stem}{ext}" for ext in (".gz", "") if (root / f"{stem}{ext}").is_file()), None)


def is_idx_folder(root: Path) -> bool:
    return Path(root).is_dir() and idx_file(Path(root), "train", "images-idx3") is not None


def idx_folder(spec: dict) -> TensorDataset:
    """An MNIST-format folder (train-images-idx3-ubyte[.gz] and friends; Fashion-MNIST, MNIST,
    KMNIST...): the split's grey images scaled to [-1, 1] (resized when image_size is not the
    files' own), with their labels. spec: name (fashion-mnist or idx), path, split, image_size."""
    name, root, split = spec["name"], Path(spec["path"]), spec.get("split", "train")
    images_file, labels_file = idx_file(root, split, "images-idx3"), idx_file(root, split, "labels-idx1")
    if images_file is None or labels_file is None:
        how = ("install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or pass "
               "fashion-mnist:DIR for a folder holding the four idx-ubyte(.gz) files") if name == "fashion-mnist" else \
            "point it at a folder of MNIST-format files"
        raise GdistillError(f"{root} lacks the {split} split ({IDX_SPLITS[split]}-images-idx3-ubyte[.gz] and "
                            f"{IDX_SPLITS[split]}-labels-idx1-ubyte[.gz]): {how}")
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise GdistillError(f"{root}: images {images.shape} and labels {labels.shape} do not pair up (n x h x w and n)")
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 127.5 - 1.0
    size = spec.get("image_size") or x.shape[-1]
    if size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True).clamp(-1, 1)
    labels = torch.tensor(labels.astype(np.int64))
    num_classes = int(labels.max()) + 1
    names = FASHION_MNIST_CLASSES if name == "fashion-mnist" else [str(k) for k in range(num_classes)]
    return TensorDataset(dict(spec), x, labels, names, (-1.0, 1.0))


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


def dataset_spec(arg: str, image_size: int | None = None, split: str = "train") -> dict:
    """The spec of a dataset named on the command line: toy2d, digits, fashion-mnist (Debian's
    files) or fashion-mnist:DIR, an MNIST-format folder (idx files), or a class folder."""
    if arg in BUILTIN_DATASETS:
        spec = {"name": arg}
    elif arg == "fashion-mnist" or arg.startswith("fashion-mnist:"):
        path = arg.partition(":")[2] or FASHION_MNIST_DIR
        spec = {"name": "fashion-mnist", "path": str(Path(path).resolve()), "split": split}
    elif is_idx_folder(Path(arg)):
        spec = {"name": "idx", "path": str(Path(arg).resolve()), "split": split}
    else:
        spec = {"name": "folder", "path": arg}
    if image_size is not None:
        spec["image_size"] = image_size
    return spec


def load_dataset(spec: dict | str, image_size: int | None = None) -> Dataset:
    """A dataset from its manifest spec, or from a CLI argument (see dataset_spec)."""
    if isinstance(spec, str):
        spec = dataset_spec(spec, image_size)
    name = spec.get("name")
    if name == "toy2d":
        return Toy2D()
    if name == "digits":
        return digits()
    if name in ("fashion-mnist", "idx"):
        return idx_folder(spec)
    if name == "folder":
        return class_folder(spec["path"], spec.get("image_size") or 32)
    raise GdistillError(f"unknown dataset {name!r}: use toy2d, digits, fashion-mnist, an MNIST-format folder "
                        "or a folder DIR/<class>/*.png")
