"""SD3-family (rectified-flow transformer) teachers on a tiny SD3-shaped pipeline built offline:
the flow schedule's grid is the stock scheduler's, gdistill's guided teacher is the stock
StableDiffusion3Pipeline's, a fresh student (SD3TransformerWithGuidance) is the conditional
teacher, Stage 1 learns the guided teacher, and the students run and export to a folder that
diffusers loads and samples with gdistill's image."""
import numpy as np
import pytest
import torch
from PIL import Image

from gdistill.diffusion import FlowMatchSchedule, sampling_grid
from gdistill.errors import GdistillError
from gdistill.models import make_student
from gdistill.models.latent import encode_prompts
from gdistill.models.sd_pipeline import load_pipeline_teacher, load_sd_pipeline
from gdistill.run_folder import load_model
from gdistill.stages.common import training_data
from gdistill.tasks.sample import sample
from tests.conftest import run_cli
from tests.sd_tiny import (assert_fresh_student_is_the_conditional_teacher, build_tiny_sd3, guided_x_errors,
                           write_caption_folder)

RESOLUTION = 16  # the tiny VAE halves: 8x8 latents
CAPTIONS = ["red fox", "blue sky", "green tree", "snow", "a cat", "yellow sun", "dark sea", "white bird"]


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3")
    return {"teacher": build_tiny_sd3(root / "teacher"), "captions": write_caption_folder(root / "captions", CAPTIONS),
            "cache": root / "cache", "root": root}


def test_sd3_offline_names_what_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GdistillError) as e:
        load_sd_pipeline("sd3")
    assert "stabilityai/stable-diffusion-3.5-medium" in str(e.value) and "--teacher DIR" in str(e.value)


def test_flow_schedule_grid_is_the_stock_schedulers_with_our_sigmas():
    """FlowMatchEulerDiscreteScheduler given sigmas = gdistill's uniform grid shifts them as
    FlowMatchSchedule does (timesteps 1000 s), and ends at s = 0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    schedule = FlowMatchSchedule(shift=3.0)
    scheduler.set_timesteps(sigmas=sampling_grid(4))
    t = torch.tensor(sampling_grid(4))
    a, s = schedule.alpha_sigma(t)
    assert torch.allclose(scheduler.sigmas[:-1], s.float()) and scheduler.sigmas[-1] == 0
    assert torch.allclose(scheduler.timesteps, schedule.model_time(t).float()) and torch.allclose(a + s, torch.ones(4))


def test_guided_teacher_is_the_stock_sd3_pipeline_and_a_fresh_student_the_conditional_teacher(sd3):
    teacher, _, _ = load_pipeline_teacher(str(sd3["teacher"]))
    teacher.with_latent_size(RESOLUTION // 2)
    pipe = load_sd_pipeline(str(sd3["teacher"]))
    text = encode_prompts(pipe, ["red fox", "snow"], "cpu")
    for w in (0.0, 3.0):
        theirs = pipe(["red fox", "snow"], num_inference_steps=4, sigmas=sampling_grid(4), guidance_scale=w + 1,
                      height=RESOLUTION, width=RESOLUTION, generator=torch.Generator().manual_seed(7),
                      output_type="latent").images
        ours = sample(teacher, text, 4, w, seed=7).samples
        assert torch.allclose(ours, theirs, atol=1e-4), (w, (ours - theirs).abs().max())
    assert type(make_student(teacher).transformer).__name__ == "SD3TransformerWithGuidance"
    assert_fresh_student_is_the_conditional_teacher(teacher, text)


def test_stage1_learns_the_guided_sd3_teacher_and_its_students_export(sd3, tmp_path, cli):
    """match (Stage 1) moves the student toward the guided flow teacher; a halving round, a consistency
    run and a DMD run follow; the round and the DMD generator export to a StableDiffusion3Pipeline
    folder (the student's transformer class shipped inside) that gives gdistill's image."""
    from diffusers import StableDiffusion3Pipeline

    common = ["--data", sd3["captions"], "--resolution", RESOLUTION, "--batch-size", 8, "--cache", sd3["cache"]]
    assert run_cli("match", "--teacher", sd3["teacher"], *common, "--w-max", 4, "--train-steps", 200, "--lr", 5e-5,
                   "--out", tmp_path / "stage1") == (0,)
    stage1, manifest, _ = load_model(tmp_path / "stage1")
    assert manifest["model"]["kind"] == "sd3-transformer" and manifest["schedule"]["name"] == "flow-match"
    teacher, _, _ = load_model(sd3["teacher"])
    teacher.with_latent_size(RESOLUTION // 2)
    error = guided_x_errors(teacher, stage1, training_data(None, manifest, sd3["cache"]))
    print("weighted x-error to the guided teacher:", error)
    assert error["trained"] < 0.7 * error["fresh"], error

    assert run_cli("halve", "--from", tmp_path / "stage1", "--rounds", 1, "--start-steps", 4, "--train-steps", 10,
                   "--batch-size", 8, "--cache", sd3["cache"], "--out", tmp_path / "pd") == (0,)
    assert run_cli("consistency", "--teacher", sd3["teacher"], *common, "--w-max", 4, "--train-steps", 6,
                   "--solver-steps", 10, "--out", tmp_path / "cd") == (0,)
    assert run_cli("dmd", "--teacher", tmp_path / "stage1", *common, "--generator-steps", 2, "--fake-updates", 1,
                   "--train-steps", 4, "--out", tmp_path / "dmd") == (0,)
    code, _, err = cli("sample", "--from", tmp_path / "cd", "--steps", 2, "--prompt", "a cat", "--out", tmp_path / "cd.png")
    assert code == 0, err
    code, _, err = cli("export", tmp_path / "cd", "--out", tmp_path / "cd-pipe")
    assert code == 2 and "not built yet" in err and not (tmp_path / "cd-pipe").exists()
    for run in (tmp_path / "pd" / "round-1", tmp_path / "dmd"):
        code, _, err = cli("sample", "--from", run, "--w", 2.5, "--prompt", "a red fox", "--seed", 9,
                           "--out", tmp_path / f"{run.name}.png")
        assert code == 0 and "2 steps, 2 network calls" in err, err
        code, _, err = cli("export", run, "--out", tmp_path / f"{run.name}-pipe")
        assert code == 0, err
        card = (tmp_path / f"{run.name}-pipe" / "README.md").read_text()
        assert "trust_remote_code=True" in card and "sigmas=[1.0, 0.5]" in card
        exported = StableDiffusion3Pipeline.from_pretrained(tmp_path / f"{run.name}-pipe", trust_remote_code=True,
                                                            text_encoder_3=None, tokenizer_3=None)
        assert type(exported.transformer).__name__ == "SD3TransformerWithGuidance"
        # the SD3 pipeline hands no generator to the scheduler's step, so the DMD generator's re-noising
        # comes from torch's global one: seeding it (and passing none) draws gdistill's noises in order
        torch.manual_seed(9)
        image = exported("a red fox", num_inference_steps=2, sigmas=[1.0, 0.5], guidance_scale=1.0,
                         joint_attention_kwargs={"guidance": 2.5}).images[0]
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(tmp_path / f"{run.name}.png"))), run.name
