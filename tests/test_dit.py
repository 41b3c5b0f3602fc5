"""DiT, the class-conditional latent teacher of the paper's ImageNet results, on a tiny DiT-shaped
pipeline built offline: gdistill's guided teacher is DiTPipeline's, a fresh student is the
conditional teacher, Stage 1 learns the guided teacher from a class folder encoded by the VAE, a
halving round follows, and `gdistill sample --label` decodes the student's latents to images."""
import pytest
import torch
from PIL import Image

from gdistill.errors import GdistillError
from gdistill.models.sd_encoders import SDEncoders
from gdistill.models.sd_pipeline import load_pipeline_teacher, load_sd_pipeline
from gdistill.run_folder import load_model
from gdistill.stages.common import training_data
from gdistill.tasks.sample import sample
from tests.conftest import run_cli
from tests.sd_tiny import (assert_fresh_student_is_the_conditional_teacher, build_tiny_dit, guided_x_errors,
                           write_class_folder)

RESOLUTION = 16  # the tiny VAE halves: 8x8 latents, DiT's own size


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit")
    return {"teacher": build_tiny_dit(root / "teacher"),
            "classes": write_class_folder(root / "classes", ["0", "1", "207"]), "root": root}


def test_dit_offline_names_what_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GdistillError) as e:
        load_sd_pipeline("dit")
    assert "facebook/DiT-XL-2-256" in str(e.value) and "--teacher DIR" in str(e.value)


def test_guided_teacher_is_dits_pipeline_and_a_fresh_student_the_conditional_teacher(dit):
    from diffusers import DDIMScheduler

    teacher, manifest, _ = load_pipeline_teacher(str(dit["teacher"]))
    assert teacher.num_classes == 1000 and teacher.null_label == 1000 and manifest["model"]["kind"] == "dit-transformer"
    pipe = load_sd_pipeline(str(dit["teacher"]))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True)
    labels = torch.tensor([1, 207])
    encoders = SDEncoders(manifest["pipeline"])
    for w in (0.0, 3.0):
        theirs = pipe(labels.tolist(), guidance_scale=w + 1, num_inference_steps=4, output_type="pt",
                      generator=torch.Generator().manual_seed(7)).images
        ours = encoders.decode(sample(teacher, labels, 4, w, seed=7).samples)
        assert torch.allclose((ours + 1) / 2, theirs, atol=1e-4), (w, ((ours + 1) / 2 - theirs).abs().max())
    assert_fresh_student_is_the_conditional_teacher(teacher, labels)


def test_stage1_learns_the_guided_dit_teacher_then_halves_and_samples(dit, tmp_path, cli):
    assert run_cli("match", "--teacher", dit["teacher"], "--data", dit["classes"], "--resolution", RESOLUTION,
                   "--w-max", 4, "--train-steps", 200, "--batch-size", 8, "--lr", 1e-4, "--out", tmp_path / "stage1") == (0,)
    stage1, manifest, _ = load_model(tmp_path / "stage1")
    assert manifest["dataset"]["name"] == "latent-folder" and manifest["w_range"] == [0.0, 4.0]
    teacher, _, _ = load_model(dit["teacher"])
    data = training_data(None, manifest)
    assert sorted(data.labels.unique().tolist()) == [0, 1, 207]
    error = guided_x_errors(teacher, stage1, data)
    print("weighted x-error to the guided teacher:", error)
    assert error["trained"] < 0.7 * error["fresh"], error

    assert run_cli("halve", "--from", tmp_path / "stage1", "--rounds", 1, "--start-steps", 4, "--train-steps", 10,
                   "--batch-size", 8, "--out", tmp_path / "pd") == (0,)
    code, _, err = cli("sample", "--from", tmp_path / "pd" / "round-1", "--label", 207, "--n", 2, "--w", 2,
                       "--out", tmp_path / "s.png")
    assert code == 0 and "2 steps, 2 network calls" in err, err
    assert RESOLUTION <= Image.open(tmp_path / "s.png").size[1] < 2 * RESOLUTION  # decoded images, not upscaled
    code, _, err = cli("sample", "--from", tmp_path / "pd" / "round-1", "--prompt", "a cat", "--out", tmp_path / "p.png")
    assert code == 2 and "--label, not --prompt" in err
    code, _, err = cli("match", "--teacher", dit["teacher"], "--data", dit["classes"], "--negative-prompt", "blurry",
                       "--out", tmp_path / "neg")
    assert code == 2 and "class-conditional" in err and not (tmp_path / "neg").exists()
    # eval decodes the latents; a class-conditional score against a folder lacking the run's classes is refused
    code, _, err = cli("eval", "--from", tmp_path / "pd", "--w", "0,2", "--n", 6, "--ref", dit["classes"], "--ed",
                       "--out", tmp_path / "report")
    assert code == 2 and "pass a reference with the run's classes" in err and "\n" not in err.strip()
