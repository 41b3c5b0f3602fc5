"""Training data as an SD teacher sees it: image-caption pairs turned into VAE latents and text
embeddings by the teacher pipeline's frozen encoders, optionally cached on disk.

With `--cache DIR` each pair is encoded once: DIR/<ab>/<key>.safetensors holds its latent and its
text embedding, keyed by the sha256 of the image's bytes, the caption, the resolution and the
encoders' fingerprint, so a changed image, caption or teacher never reads a stale entry. Entries
are written atomically (several processes may share a cache). Later epochs, Stage-2 rounds and
reruns then skip the VAE and the text encoder; docs/benchmarks.md has the measured saving.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import GdistillError
from ..files import save_safetensors_atomic
from . import Dataset
from ..images import read_centre_crop
from .captions import CaptionDataset

if TYPE_CHECKING:
    from ..models.sd_encoders import SDEncoders


class LatentCaptionData(Dataset):
    """`batch` returns (latents (B, C, R/f, R/f), text embeddings (B, tokens, dim)), float32 on the
    encoders' device: the (x, condition) pair every stage trains on."""

    num_classes = 0
    class_names: list[str] = []
    data_range = None  # latents are not clipped

    def __init__(self, captions: CaptionDataset, encoders: SDEncoders, cache: str | Path | None = None):
        if captions.resolution % encoders.scale_factor:
            raise GdistillError(f"--resolution {captions.resolution} is not a multiple of the VAE's "
                                f"downsampling factor {encoders.scale_factor}")
        self.captions, self.encoders = captions, encoders
        self.spec = captions.spec
        size = captions.resolution // encoders.scale_factor
        self.data_shape = (encoders.latent_channels, size, size)
        self.cache = Path(cache) if cache else None
        self.cache_hits = self.cache_misses = 0
        if self.cache is not None:
            try:
                self.cache.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise GdistillError(f"--cache {self.cache}: cannot create it ({e.strerror}); choose a writable folder") from None
            self._encoder_id = encoders.fingerprint()

    def to(self, device) -> LatentCaptionData:
        self.encoders.to(device)
        return self

    def batch(self, size: int, generator: torch.Generator, share: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_pairs(self.captions.draw(size, generator)[share])  # encode this process's share only

    def encode_pairs(self, pairs: list[tuple[bytes, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents, text embeddings) of drawn pairs, from the cache where it has them."""
        entries: list[dict | None] = [self._cached(pair) for pair in pairs]
        todo = [i for i, entry in enumerate(entries) if entry is None]
        if todo:
            images = torch.stack([read_centre_crop(pairs[i][0], self.captions.resolution) for i in todo])
            latents = self.encoders.encode_images(images)
            texts = self.encoders.encode_prompts([pairs[i][1] for i in todo])
            for j, i in enumerate(todo):
                entries[i] = {"latent": latents[j], "text": texts[j]}
                self._store(pairs[i], entries[i])
        device = self.encoders.device
        return (torch.stack([e["latent"].to(device) for e in entries]),
                torch.stack([e["text"].to(device) for e in entries]))

    def _path(self, pair: tuple[bytes, str]) -> Path:
        image, caption = pair
        h = hashlib.sha256(image)
        h.update(f"\0{caption}\0{self.captions.resolution}\0{self._encoder_id}".encode())
        key = h.hexdigest()
        return self.cache / key[:2] / f"{key}.safetensors"

    def _cached(self, pair) -> dict | None:
        if self.cache is None:
            return None
        path = self._path(pair)
        if path.is_file():
            try:
                entry = load_file(str(path))
                self.cache_hits += 1
                return entry
            except (SafetensorError, OSError):
                pass  # damaged (a crash mid-write of another tool): encode it again
        self.cache_misses += 1
        return None

    def _store(self, pair, entry: dict) -> None:
        if self.cache is None:
            return
        path = self._path(pair)
        path.parent.mkdir(exist_ok=True)
        save_safetensors_atomic(entry, path)


class InpaintingCaptionData(LatentCaptionData):
    """For inpainting teachers (SD's 9-channel UNet): every drawn image also gets a training mask
    (data/masks.py: rectangles and brush strokes, sometimes the whole image, as SD's inpainting
    model was trained), and the condition packs the text with the mask and the masked image's
    latents (SDEncoders.inpaint_condition), for teacher and student alike. The masked image is
    encoded afresh every batch (its mask is random), so --cache saves only the target latents and
    the text."""

    def batch(self, size: int, generator: torch.Generator, share: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        from .masks import training_masks

        pairs = self.captions.draw(size, generator)
        masks = training_masks(size, self.captions.resolution, self.captions.resolution, generator)[share]
        pairs = pairs[share]
        latents, texts = self.encode_pairs(pairs)
        images = torch.stack([read_centre_crop(image, self.captions.resolution) for image, _ in pairs])
        return latents, self.encoders.inpaint_condition(texts, images, masks).float()


class LatentClassData(Dataset):
    """A class folder (DIR/<class>/*.png) as a class-conditional latent teacher (DiT) sees it: every
    image resized to the resolution and encoded once, when the data is loaded, by the teacher's
    frozen VAE (posterior mean x scaling factor). Folder names are the teacher's class ids (0..999)
    or its label words (DiTPipeline's id2label, e.g. `golden retriever`)."""

    data_range = None  # latents are not clipped

    def __init__(self, folder: str | Path, resolution: int, encoders: SDEncoders, num_classes: int):
        from . import class_folder

        if resolution % encoders.scale_factor:
            raise GdistillError(f"--resolution {resolution} is not a multiple of the VAE's downsampling factor "
                                f"{encoders.scale_factor}")
        images = class_folder(folder, resolution)
        if images.x.shape[1] != 3:
            images.x = images.x.expand(-1, 3, -1, -1)  # grey images as RGB, as the VAE reads them
        ids = [class_id(name, getattr(encoders.pipe, "labels", {}) or {}, num_classes, folder) for name in images.class_names]
        self.labels = torch.tensor(ids)[images.labels]
        self.x = torch.cat([encoders.encode_images(chunk) for chunk in images.x.split(16)]).cpu()
        self.num_classes, self.class_names = num_classes, images.class_names
        self.spec = {"name": "latent-folder", "path": images.spec["path"], "resolution": resolution}
        self.data_shape = tuple(self.x.shape[1:])

    def batch(self, size, generator, share=slice(None)):
        index = torch.randint(0, len(self.x), (size,), generator=generator)[share]
        return self.x[index], self.labels[index]


def class_id(name: str, labels: dict[str, int], num_classes: int, folder) -> int:
    """A class folder's id: its name as a number, or the teacher's label for it."""
    if name.isdigit() and int(name) < num_classes:
        return int(name)
    key = name.replace("_", " ").strip()
    if key in labels:
        return labels[key]
    raise GdistillError(f"{folder}/{name}: name class folders by the teacher's class id (0..{num_classes - 1}) or "
                        "by one of its labels (e.g. `golden retriever`)")
