"""Run directories: atomic writes, checksums, clear errors, built-in teachers."""
import pytest
import torch
import yaml

from gdistill.errors import GdistillError
from gdistill.files import prepare_output, work_dir_for
from gdistill.models import build_denoiser
from gdistill.run_folder import MANIFEST, WEIGHTS, commit_run, load_model, read_manifest, resolve_run

CONFIG = {"kind": "toy-mlp", "dim": 2, "num_classes": 4, "hidden": 16, "depth": 1,
          "schedule": {"name": "cosine"}, "parameterization": "v"}


def _write_run(out, overwrite=False):
    model = build_denoiser(CONFIG)
    work = prepare_output(out, overwrite)
    commit_run(work, out, {"kind": "teacher", "model": CONFIG, "steps": None}, {WEIGHTS: model.state_dict()})
    return model


def test_commit_is_complete_and_loads_the_same_weights(tmp_path):
    out = tmp_path / "run"
    model = _write_run(out)
    assert not work_dir_for(out).exists()
    manifest = read_manifest(out)
    assert manifest["kind"] == "teacher" and len(manifest["files"][WEIGHTS]) == 64
    loaded, _, _ = load_model(out)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_existing_run_needs_overwrite(tmp_path):
    out = tmp_path / "run"
    _write_run(out)
    with pytest.raises(GdistillError, match="--overwrite"):
        prepare_output(out, overwrite=False)
    _write_run(out, overwrite=True)
    assert read_manifest(out)["kind"] == "teacher"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no .old or .partial left


def test_corrupted_weights_are_detected(tmp_path):
    out = tmp_path / "run"
    _write_run(out)
    data = bytearray((out / WEIGHTS).read_bytes())
    data[-5] ^= 0xFF
    (out / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(GdistillError, match="sha256"):
        load_model(out)


def test_truncated_weights_without_checksum_give_a_clear_error(tmp_path):
    out = tmp_path / "run"
    _write_run(out)
    manifest = yaml.safe_load((out / MANIFEST).read_text())
    manifest["files"][WEIGHTS] = None
    (out / MANIFEST).write_text(yaml.safe_dump(manifest))
    (out / WEIGHTS).write_bytes((out / WEIGHTS).read_bytes()[:100])
    with pytest.raises(GdistillError, match="cannot read"):
        load_model(out)


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.pop("model"), "lacks model"),
    (lambda m: m.update(kind="banana"), "unknown kind"),
    (lambda m: m["model"].update(kind="nope"), "cannot build"),
])
def test_damaged_manifest_is_named(tmp_path, damage, message):
    out = tmp_path / "run"
    _write_run(out)
    manifest = yaml.safe_load((out / MANIFEST).read_text())
    damage(manifest)
    (out / MANIFEST).write_text(yaml.safe_dump(manifest))
    with pytest.raises(GdistillError, match=message):
        load_model(out)


def test_missing_and_non_runs(tmp_path):
    with pytest.raises(GdistillError, match="does not exist"):
        resolve_run(tmp_path / "nothing")
    (tmp_path / "pd" / "round-1").mkdir(parents=True)
    with pytest.raises(GdistillError, match="round-1"):
        resolve_run(tmp_path / "pd")


@pytest.mark.parametrize("name", ["digits", "toy2d"])
def test_builtin_teachers_load(name):
    model, manifest, path = load_model(name)
    assert manifest["kind"] == "teacher" and not model.w_conditioned
    assert path.name == name
    assert all((path / f).is_file() for f in manifest["files"])  # nothing listed that is not shipped
