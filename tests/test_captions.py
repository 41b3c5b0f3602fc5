"""Image-caption data: a folder, a JSONL / CSV table and webdataset shards give the same pairs;
resize and centre crop; seeded batches."""
import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gdistill.data.captions import CaptionDataset
from gdistill.images import read_centre_crop
from gdistill.errors import GdistillError

SIZES = [(12, 12), (20, 10), (10, 24), (16, 16), (9, 13), (30, 15)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    folder = root / "folder"
    folder.mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i, (w, h) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"caption number {i}\n")
        records.append({"image": f"folder/img{i}.png", "text": f"caption number {i}"})
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    with open(root / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "text"])
        writer.writeheader()
        writer.writerows(records)
    import webdataset as wds

    for shard, part in enumerate((range(0, 4), range(4, 6))):
        with wds.TarWriter(str(root / f"shard-{shard:05d}.tar")) as sink:
            for i in part:
                sink.write({"__key__": f"img{i}", "png": (folder / f"img{i}.png").read_bytes(),
                            "txt": f"caption number {i}"})
    return root


def _pairs(dataset):
    return sorted(((caption, image) for image, caption in dataset), key=lambda p: p[0])


def test_every_source_gives_the_same_pairs(sources):
    expected = _pairs(CaptionDataset(str(sources / "folder"), 8))
    assert [c for c, _ in expected] == [f"caption number {i}" for i in range(6)]
    assert all(image.shape == (3, 8, 8) and image.min() >= -1 and image.max() <= 1 for _, image in expected)
    for source in ("pairs.jsonl", "pairs.csv", "shard-{00000..00001}.tar"):
        got = _pairs(CaptionDataset(str(sources / source), 8))
        assert [c for c, _ in got] == [c for c, _ in expected]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, expected)), source


def test_resize_then_centre_crop():
    strip = np.zeros((10, 30, 3), np.uint8)
    strip[:, 10:20] = 255  # only the middle third is white
    buffer = io.BytesIO()
    Image.fromarray(strip).save(buffer, format="PNG")
    image = read_centre_crop(buffer.getvalue(), 8)  # 30x10 -> 24x8 -> the middle 8 columns
    assert image.shape == (3, 8, 8) and image[:, :, 1:-1].mean() > 0.9


def test_batches_are_reproducible_from_the_seed(sources):
    for source in ("folder", "shard-{00000..00001}.tar"):
        first = CaptionDataset(str(sources / source), 8, shuffle_buffer=4).batch(5, torch.Generator().manual_seed(3))
        again = CaptionDataset(str(sources / source), 8, shuffle_buffer=4).batch(5, torch.Generator().manual_seed(3))
        assert first[1] == again[1] and torch.equal(first[0], again[0]) and first[0].shape == (5, 3, 8, 8)


def test_bad_sources(sources, tmp_path):
    with pytest.raises(GdistillError, match="no image-caption pairs"):
        CaptionDataset(str(tmp_path), 8)
    with pytest.raises(GdistillError, match="shards do not exist"):
        list(CaptionDataset(str(tmp_path / "s-{0..3}.tar"), 8))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "nothing.png", "text": "x"}))
    with pytest.raises(GdistillError, match="do not exist"):
        CaptionDataset(str(tmp_path / "bad.jsonl"), 8)
    (tmp_path / "cols.csv").write_text("path,caption\na.png,x\n")
    with pytest.raises(GdistillError, match="`image` and a `text` column"):
        CaptionDataset(str(tmp_path / "cols.csv"), 8)
