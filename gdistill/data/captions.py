"""Image-caption pairs for text-conditioned (SD-family) teachers.

Three sources, read alike:
- a folder of `NAME.jpg` (or .png, …) each beside `NAME.txt`, searched recursively;
- a JSONL or CSV table with `image` (a path, relative to the table's folder) and `text` columns;
- webdataset tar shards, `--data 'shards/{00000..00099}.tar'` (brace expansion), whose samples hold
  an image (jpg / jpeg / png / webp) and a `txt` entry: read with the webdataset library, streamed.

Every image is resized (bicubic) so its shorter side is `resolution`, centre-cropped to a square and
scaled to [-1, 1], as SD's training data are. Folders and tables are indexed and drawn at random
from a seeded generator; shards stream through a seeded shuffle buffer.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

import torch

from ..errors import GdistillError
from ..images import IMAGE_SUFFIXES, read_centre_crop

SHARD_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
TABLE_SUFFIXES = (".jsonl", ".csv")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise GdistillError(f"cannot read image {path}: {e.strerror}") from None


def folder_pairs(root: Path) -> list[tuple[Path, str]]:
    pairs = []
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        caption = image.with_suffix(".txt")
        if caption.is_file():
            pairs.append((image, caption.read_text().strip()))
    if not pairs:
        raise GdistillError(f"{root} holds no image-caption pairs: put NAME.txt beside each NAME.jpg")
    return pairs


def table_pairs(table: Path) -> list[tuple[Path, str]]:
    try:
        if table.suffix == ".jsonl":
            records = [json.loads(line) for line in table.read_text().splitlines() if line.strip()]
        else:
            with open(table, newline="") as f:
                records = list(csv.DictReader(f))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as e:
        raise GdistillError(f"cannot parse {table}: {e}") from None
    if not records or any("image" not in r or "text" not in r for r in records):
        raise GdistillError(f"{table} needs an `image` and a `text` column in every row")
    pairs = [(table.parent / r["image"], str(r["text"]).strip()) for r in records]
    missing = [str(p) for p, _ in pairs if not p.is_file()]
    if missing:
        raise GdistillError(f"{table} names {len(missing)} image(s) that do not exist, first {missing[0]}")
    return pairs


def shard_pairs(pattern: str) -> Iterator[tuple[bytes, str]]:
    """(image bytes, caption) from webdataset shards, in shard order."""
    import webdataset as wds
    from braceexpand import braceexpand

    urls = list(braceexpand(pattern))
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        raise GdistillError(f"--data {pattern}: {len(missing)} of {len(urls)} shards do not exist, first {missing[0]}")
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        image = next((sample[k] for k in SHARD_IMAGE_KEYS if k in sample), None)
        if image is not None and "txt" in sample:
            yield image, sample["txt"].decode("utf-8").strip()


class CaptionDataset:
    """Pairs from a folder, a table or shards; `batch` returns (images (B, 3, R, R), captions)."""

    def __init__(self, source: str, resolution: int, shuffle_buffer: int = 1000):
        self.source, self.resolution, self.shuffle_buffer = str(source), resolution, shuffle_buffer
        path = Path(source)
        self.spec = {"name": "captions", "path": self.source, "resolution": resolution}
        if ".tar" in path.name:
            self.pairs = None  # streamed
            self._stream: Iterator | None = None
            self._buffer: list = []
        elif path.is_dir():
            self.pairs = folder_pairs(path)
        elif path.is_file() and path.suffix in TABLE_SUFFIXES:
            self.pairs = table_pairs(path)
        else:
            raise GdistillError(f"--data {source} is not an image-caption folder, a .jsonl/.csv table "
                                "or webdataset shards (NAME.tar, 'shards/{00000..00099}.tar')")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        """Every pair once, in order."""
        source = self.pairs if self.pairs is not None else shard_pairs(self.source)
        for image, caption in source:
            yield read_centre_crop(image, self.resolution), caption

    def draw(self, size: int, generator: torch.Generator) -> list[tuple[bytes, str]]:
        """`size` pairs (encoded image bytes, caption), drawn at random from the seeded generator."""
        if self.pairs is not None:
            index = torch.randint(0, len(self.pairs), (size,), generator=generator).tolist()
            return [(_read_bytes(self.pairs[i][0]), self.pairs[i][1]) for i in index]
        return [self._next_streamed(generator) for _ in range(size)]

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        chosen = self.draw(size, generator)
        images = torch.stack([read_centre_crop(image, self.resolution) for image, _ in chosen])
        return images, [caption for _, caption in chosen]

    def _next_streamed(self, generator: torch.Generator):
        """A pair from a shuffle buffer refilled from the shards (restarted at their end)."""
        while len(self._buffer) < self.shuffle_buffer:
            if self._stream is None:
                self._stream = shard_pairs(self.source)
            try:
                self._buffer.append(next(self._stream))
            except StopIteration:
                self._stream = None
                if self._buffer:
                    break
                raise GdistillError(f"--data {self.source}: the shards hold no image-caption samples") from None
        return self._buffer.pop(int(torch.randint(0, len(self._buffer), (1,), generator=generator)))
