"""MNIST-format (idx) data: the reader, Fashion-MNIST as a dataset and as a reference; and Inception
features from a TorchScript file (the offline FID route), checked on a tiny network made here."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from gdistill.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, dataset_spec, load_dataset, read_idx
from gdistill.errors import GdistillError
from gdistill.metrics.inception import FEATURES, TorchScriptInception, inception_input, is_torchscript_file, tf1_bilinear_resize
from gdistill.metrics.reference import default_reference, load_reference


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format: 0, 0, type 0x08 (uint8), ndim, big-endian int32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def idx_folder(root: Path, n_train=40, n_test=30, size=8, classes=4, gz=True) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, size, size)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n) % classes)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_and_dataset(tmp_path, gz):
    root = idx_folder(tmp_path / "mnistlike", gz=gz)
    images = read_idx(root / f"train-images-idx3-ubyte{'.gz' if gz else ''}")
    assert images.shape == (40, 8, 8) and images.dtype == np.uint8
    data = load_dataset(str(root))
    assert data.spec == {"name": "idx", "path": str(root.resolve()), "split": "train"}
    assert data.x.shape == (40, 1, 8, 8) and data.num_classes == 4 and data.class_names == ["0", "1", "2", "3"]
    assert torch.equal(data.x, torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 127.5 - 1)
    assert data.x.min() >= -1 and data.x.max() <= 1
    assert load_dataset(data.spec).x.equal(data.x)  # rebuilt from the manifest's spec
    resized = load_dataset(str(root), image_size=16)
    assert resized.x.shape == (40, 1, 16, 16) and resized.spec["image_size"] == 16


def test_fashion_mnist_names_its_classes_and_says_how_to_get_the_files(tmp_path):
    root = idx_folder(tmp_path / "fashion", classes=10, n_train=20, n_test=10)
    data = load_dataset(f"fashion-mnist:{root}")
    assert data.spec["name"] == "fashion-mnist" and data.class_names == FASHION_MNIST_CLASSES
    with pytest.raises(GdistillError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(f"fashion-mnist:{tmp_path / 'empty'}")
    assert dataset_spec("fashion-mnist")["path"] == str(FASHION_MNIST_DIR)


def test_damaged_idx_files_are_refused(tmp_path):
    root = idx_folder(tmp_path / "bad", gz=False)
    good = (root / "train-images-idx3-ubyte").read_bytes()
    (root / "train-images-idx3-ubyte").write_bytes(good[:-5])
    with pytest.raises(GdistillError, match="truncated or damaged"):
        load_dataset(str(root))
    (root / "train-images-idx3-ubyte").write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(GdistillError, match="not an IDX file"):
        load_dataset(str(root))


def test_the_reference_of_idx_data_is_its_test_split(tmp_path):
    root = idx_folder(tmp_path / "fashion", classes=10, n_train=20, n_test=10)
    data = load_dataset(f"fashion-mnist:{root}")
    ref_arg = default_reference(data.spec)
    assert ref_arg == f"fashion-mnist:{root.resolve()}"
    reference = load_reference(ref_arg, (1, 8, 8))
    assert reference.samples.shape == (10, 1, 8, 8) and reference.labels.tolist() == list(range(10))
    assert load_reference(str(root), (1, 16, 16)).samples.shape == (10, 1, 16, 16)  # resized like the samples
    with pytest.raises(GdistillError, match="grey"):
        load_reference(str(root), (3, 8, 8))


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed here")
def test_the_real_fashion_mnist_files():
    data = load_dataset("fashion-mnist")
    assert data.x.shape == (60_000, 1, 28, 28) and data.labels.bincount().tolist() == [6000] * 10
    assert load_reference("fashion-mnist", (1, 28, 28)).samples.shape == (10_000, 1, 28, 28)


class TinyInception(torch.nn.Module):
    """Inception's interface, not its weights: (n, 3, 299, 299) in [-1, 1) -> (n, 2048)."""

    def __init__(self, features=FEATURES):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 13, stride=13)
        self.fc = torch.nn.Linear(8, features)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.fixture
def tiny_inception(tmp_path):
    torch.manual_seed(0)
    module = TinyInception()
    path = tmp_path / "tiny-inception.pt"
    torch.jit.script(module).save(str(path))
    return module, path


def test_torchscript_inception_features_are_the_modules(tiny_inception, tmp_path):
    module, path = tiny_inception
    assert is_torchscript_file(path)
    network = TorchScriptInception(path, batch_size=3)
    samples = torch.rand(7, 1, 28, 28) * 2 - 1
    features = network.features(samples)
    with torch.no_grad():
        expected = module(inception_input(samples))
    assert features.shape == (7, FEATURES) and torch.allclose(features, expected, atol=1e-5)
    # the input: uint8 levels, grey to RGB, 299 x 299, (x - 128) / 128
    x = inception_input(torch.full((1, 1, 4, 4), 1.0))
    assert x.shape == (1, 3, 299, 299) and torch.allclose(x, torch.full_like(x, 127 / 128))
    # TF1-style bilinear: a constant stays constant, an image at 299 is left alone
    assert torch.allclose(tf1_bilinear_resize(torch.full((1, 3, 5, 5), 7.0)), torch.full((1, 3, 299, 299), 7.0))
    assert network.id.startswith("inception-ts-")


def test_torchscript_inception_refuses_other_files(tiny_inception, tmp_path):
    (tmp_path / "state.pt").write_bytes(b"")
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pt")
    assert not is_torchscript_file(tmp_path / "state.pt")
    with pytest.raises(GdistillError, match="not a loadable TorchScript file"):
        TorchScriptInception(tmp_path / "state.pt")
    torch.jit.script(TinyInception(features=10)).save(str(tmp_path / "small.pt"))
    with pytest.raises(GdistillError, match=r"not \(2048,\)"):
        TorchScriptInception(tmp_path / "small.pt")
    with pytest.raises(GdistillError, match="does not exist"):
        TorchScriptInception(tmp_path / "missing.pt")


def test_eval_with_torchscript_inception_reports_kid_and_distance_to_teacher(tiny_inception, tmp_path, cli):
    """KID (and IS as n/a with its reason) from the TorchScript network, against an idx reference
    and against the teacher's own samples."""
    _, path = tiny_inception
    ref = idx_folder(tmp_path / "ref", n_test=60, classes=10)
    code, out, err = cli("eval", "--from", "digits", "--teacher-steps", "2", "--to-teacher", "2", "--w", "1",
                         "--kid", "--isc", "--prc", "--n", 20, "--ref", str(ref), "--inception-weights", path,
                         "--cache-dir", tmp_path / "cache", "--out", tmp_path / "report", "--json")
    assert code == 0, err
    import json
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["is"] is None and "no classifier head" in err
    assert rows[0]["kid"] > 0 and rows[0]["kid_to_teacher"] is not None
    # the teacher against itself (another seed) is closer than to random reference images
    assert rows[0]["kid_to_teacher"] < rows[0]["kid"]
    assert all(0 <= rows[0][c] <= 1 for c in ("precision", "recall", "precision_to_teacher", "recall_to_teacher"))
    assert "is: n/a in every row" in (tmp_path / "report" / "report.md").read_text()


def test_shipped_fashion_classifier_and_its_columns_in_eval(tmp_path, cli):
    """The shipped Fashion-MNIST classifier (recipe and test accuracy in its metadata) gives every row
    of an eval against a Fashion-MNIST reference fashion_fd, its to-teacher twin and class_accuracy."""
    from gdistill.metrics.fashion import RECIPE, FashionClassifier

    classifier = FashionClassifier()
    assert classifier.metadata["recipe"] == RECIPE and classifier.held_out_accuracy > 0.88
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert classifier.accuracy(noise, torch.arange(200) % 10) < 0.3
    ref = idx_folder(tmp_path / "fashion", n_test=200, classes=10)
    code, out, err = cli("eval", "--from", "digits", "--teacher-steps", "4", "--to-teacher", "8", "--w", "1",
                         "--n", 150, "--prc", "--ref", f"fashion-mnist:{ref}", "--cache-dir", tmp_path / "cache",
                         "--out", tmp_path / "report", "--json")
    assert code == 0, err
    import json
    (row,) = json.loads(out)
    assert row["fashion_fd"] > 0 and row["fashion_fd_to_teacher"] >= 0 and 0 <= row["class_accuracy"] <= 1
    assert all(0 <= row[c] <= 1 for c in ("fashion_precision", "fashion_recall", "fashion_recall_to_teacher"))
    assert not any(k.startswith(("fid", "kid", "digits")) for k in row)  # no Inception unless asked


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed here")
def test_shipped_fashion_classifier_on_the_real_test_split():
    from gdistill.metrics.fashion import FashionClassifier

    test = load_reference("fashion-mnist", (1, 28, 28))
    assert FashionClassifier().accuracy(test.samples[:2000], test.labels[:2000]) > 0.88
