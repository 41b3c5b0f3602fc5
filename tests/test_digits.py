"""The built-in digits default: the shipped teacher draws the requested digits, and the whole
digits pipeline (UNet teacher -> match -> halve -> sample) runs through the CLI; class folders too."""
import numpy as np
import pytest
import torch
from PIL import Image

from gdistill.data import digits
from gdistill.metrics.digits import DigitsClassifier
from gdistill.run_folder import read_manifest
from gdistill.tasks.sample import cycle_labels, sample

TINY = ["--batch-size", "8", "--log-every", "5"]


@pytest.fixture(scope="module")
def classifier():
    return DigitsClassifier()


def test_shipped_classifier_tells_digits_from_noise(classifier):
    real = digits()
    assert classifier.held_out_accuracy > 0.97 and classifier.metadata["recipe"] == "python -m gdistill.metrics.digits"
    assert classifier.accuracy(real.x[:500], real.labels[:500]) > 0.97
    noise = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert classifier.accuracy(noise, cycle_labels(500, 10)) < 0.3


def test_digits_fd_separates_real_digits_from_noise_and_blur(classifier):
    real = digits()
    order = torch.randperm(len(real.x), generator=torch.Generator().manual_seed(0))
    half_a, half_b = real.x[order[:800]], real.x[order[800:1600]]
    same = classifier.digits_fd(half_a, half_b)
    blurred = classifier.digits_fd(torch.nn.functional.avg_pool2d(half_a, 3, 1, 1), half_b)
    noise = classifier.digits_fd(torch.rand(800, 1, 8, 8) * 2 - 1, half_b)
    assert same < 0.2 * blurred and blurred < noise


def test_shipped_classifier_is_what_its_recipe_makes(classifier):
    """Retrain by the recorded recipe: the same accuracy and the same answers (bit-identical weights on
    this machine; other CPUs may round differently, so the test compares behaviour)."""
    from gdistill.metrics.digits import train_digits_net

    net, accuracy = train_digits_net()
    assert abs(accuracy - classifier.held_out_accuracy) < 0.01
    real = digits()
    with torch.no_grad():
        agree = (net(real.x).argmax(1) == classifier.predict(real.x)).float().mean().item()
    assert agree > 0.98


def test_shipped_teacher_draws_the_requested_digit(classifier):
    from gdistill.run_folder import load_model

    teacher, manifest, _ = load_model("digits")
    labels = cycle_labels(200, 10)
    result = sample(teacher, labels, 32, 1.0, seed=0, data_range=tuple(manifest["data_range"]))
    assert result.calls_per_image == 64
    # Measured: 0.99 at 32 guided steps, w = 1.
    assert classifier.accuracy(result.samples, labels) > 0.9


def test_digits_pipeline_through_the_cli(cli, tmp_path):
    code, _, err = cli("match", "--teacher", "digits", "--out", tmp_path / "s1", "--train-steps", 6, *TINY)
    assert code == 0, err
    code, _, err = cli("halve", "--from", tmp_path / "s1", "--rounds", 2, "--start-steps", 8,
                       "--out", tmp_path / "pd", "--train-steps", 4, *TINY)
    assert code == 0, err
    r2 = read_manifest(tmp_path / "pd" / "round-2")
    assert (r2["steps"], r2["model"]["kind"], r2["dataset"]) == (2, "pixel-unet", {"name": "digits"})
    code, _, err = cli("sample", "--from", tmp_path / "pd" / "round-2", "--w", 1, "--n", 20, "--out", tmp_path / "g.png")
    assert code == 0 and "2 network calls per sample" in err
    grid = Image.open(tmp_path / "g.png")
    assert grid.size[0] > grid.size[1]  # 10 columns, 2 rows
    code, _, err = cli("sample", "--from", "digits", "--steps", 4, "--n", 10, "--out", tmp_path / "t.npz")
    assert code == 0 and "8 network calls per sample" in err
    arrays = np.load(tmp_path / "t.npz")
    assert arrays["samples"].shape == (10, 1, 8, 8) and arrays["samples"].min() >= -1 and arrays["samples"].max() <= 1


def test_teach_on_a_class_folder(cli, tmp_path):
    real = digits()
    folder = tmp_path / "data"
    for k, name in enumerate(["zero", "one", "two"]):
        (folder / name).mkdir(parents=True)
        for i in np.flatnonzero(real.labels.numpy() == k)[:6]:
            pixels = ((real.x[i, 0].numpy() + 1) * 127.5).astype(np.uint8)
            image = Image.fromarray(pixels).resize((12, 12))
            (image.convert("RGB") if i % 2 else image).save(folder / name / f"{i}.png")
    code, _, err = cli("teach", "--dataset", folder, "--image-size", 8, "--out", tmp_path / "t",
                       "--train-steps", 5, *TINY)
    assert code == 0, err
    manifest = read_manifest(tmp_path / "t")
    assert manifest["class_names"] == ["one", "two", "zero"] and manifest["model"]["channels"] == 3
    assert manifest["model"]["image_size"] == 8
    code, _, err = cli("sample", "--from", tmp_path / "t", "--steps", 2, "--n", 6, "--out", tmp_path / "s.npz")
    assert code == 0 and np.load(tmp_path / "s.npz")["samples"].shape == (6, 3, 8, 8)
