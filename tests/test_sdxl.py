"""SDXL teachers on a tiny SDXL-shaped pipeline built offline (two text encoders, pooled embedding,
size/crop ids): gdistill's guided teacher is the stock StableDiffusionXLPipeline's, a fresh student
is the conditional teacher, Stage 1 learns the guided teacher, and match + halve, consistency and
dmd runs export to a StableDiffusionXLPipeline folder that gives `gdistill sample`'s image."""
import numpy as np
import pytest
import torch
from PIL import Image

from gdistill.errors import GdistillError
from gdistill.models.latent import LatentUNetDenoiser, encode_prompts
from gdistill.models.sd_pipeline import load_pipeline_teacher, load_sd_pipeline
from gdistill.run_folder import load_model
from gdistill.stages.common import training_data
from gdistill.tasks.sample import sample
from tests.conftest import run_cli
from tests.sd_tiny import (assert_fresh_student_is_the_conditional_teacher, build_tiny_sdxl, guided_x_errors,
                           write_caption_folder)

RESOLUTION = 16  # the tiny VAE halves: 8x8 latents
CAPTIONS = ["red fox", "blue sky", "green tree", "snow", "a cat", "yellow sun", "dark sea", "white bird"]


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl")
    return {"teacher": build_tiny_sdxl(root / "teacher"), "captions": write_caption_folder(root / "captions", CAPTIONS),
            "cache": root / "cache", "root": root}


def ddim_trailing(pipe):
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True,
                                     clip_sample=False)


def test_sdxl_offline_names_what_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GdistillError) as e:
        load_sd_pipeline("sdxl")
    message = str(e.value)
    assert "stabilityai/stable-diffusion-xl-base-1.0" in message and "--teacher DIR" in message
    assert "\n" not in message


@pytest.mark.parametrize("force_zeros", [True, False])
def test_guided_teacher_is_the_stock_sdxl_pipeline(tmp_path, force_zeros):
    """gdistill's guided DDIM of an SDXL teacher (pooled text and size ids packed into the condition;
    the unconditional branch zeros or the empty prompt, as the pipeline's force_zeros_for_empty_prompt
    says) gives the stock pipeline's latents, and a fresh student is the conditional teacher."""
    folder = build_tiny_sdxl(tmp_path / "t", force_zeros_for_empty_prompt=force_zeros)
    teacher, _, _ = load_pipeline_teacher(str(folder))
    teacher.with_latent_size(RESOLUTION // 2)
    pipe = load_sd_pipeline(str(folder))
    pipe.scheduler = ddim_trailing(pipe)
    text = encode_prompts(pipe, ["red fox", "snow"], "cpu")
    assert torch.equal(teacher.null_embedding == 0, torch.full_like(teacher.null_embedding, force_zeros, dtype=torch.bool))
    for w in (0.0, 3.0):
        theirs = pipe(["red fox", "snow"], num_inference_steps=4, guidance_scale=w + 1, height=RESOLUTION, width=RESOLUTION,
                      generator=torch.Generator().manual_seed(7), output_type="latent").images
        ours = sample(teacher, text, 4, w, seed=7).samples
        assert torch.allclose(ours, theirs, atol=1e-4), (w, (ours - theirs).abs().max())
    assert_fresh_student_is_the_conditional_teacher(teacher, text)


def test_stage1_learns_the_guided_sdxl_teacher_and_every_objective_exports(sdxl, tmp_path, cli):
    """match (Stage 1) moves the student toward the guided teacher at w = 4; one halving round, a
    consistency run and a DMD run follow; every student exports to a StableDiffusionXLPipeline that
    gives gdistill's image for the same seed."""
    from diffusers import StableDiffusionXLPipeline

    common = ["--data", sdxl["captions"], "--resolution", RESOLUTION, "--batch-size", 8, "--cache", sdxl["cache"]]
    assert run_cli("match", "--teacher", sdxl["teacher"], *common, "--w-max", 4, "--train-steps", 200, "--lr", 5e-5,
                   "--out", tmp_path / "stage1") == (0,)
    stage1, manifest, _ = load_model(tmp_path / "stage1")
    teacher, _, _ = load_model(sdxl["teacher"])
    teacher.with_latent_size(RESOLUTION // 2)
    assert manifest["pipeline"]["source"] == str(sdxl["teacher"].resolve())
    error = guided_x_errors(teacher, stage1, training_data(None, manifest, sdxl["cache"]))
    print("weighted x-error to the guided teacher:", error)
    assert error["trained"] < 0.7 * error["fresh"], error

    assert run_cli("halve", "--from", tmp_path / "stage1", "--rounds", 1, "--start-steps", 4, "--train-steps", 10,
                   "--batch-size", 8, "--cache", sdxl["cache"], "--out", tmp_path / "pd") == (0,)
    assert run_cli("consistency", "--teacher", sdxl["teacher"], *common, "--w-max", 4, "--train-steps", 6,
                   "--solver-steps", 10, "--out", tmp_path / "cd") == (0,)
    assert run_cli("dmd", "--teacher", tmp_path / "stage1", *common, "--generator-steps", 2, "--fake-updates", 1,
                   "--train-steps", 4, "--out", tmp_path / "dmd") == (0,)
    for run, steps in ((tmp_path / "pd" / "round-1", 2), (tmp_path / "cd", 2), (tmp_path / "dmd", 2)):
        code, _, err = cli("sample", "--from", run, "--steps", steps, "--w", 2.5, "--prompt", "a red fox", "--seed", 9,
                           "--out", tmp_path / f"{run.name}.png")
        assert code == 0, err
        code, _, err = cli("export", run, "--out", tmp_path / f"{run.name}-pipe")
        assert code == 0, err
        assert "StableDiffusionXLPipeline" in (tmp_path / f"{run.name}-pipe" / "README.md").read_text()
        exported = StableDiffusionXLPipeline.from_pretrained(tmp_path / f"{run.name}-pipe", add_watermarker=False)
        image = exported("a red fox", num_inference_steps=steps, guidance_scale=3.5,
                         generator=torch.Generator().manual_seed(9)).images[0]
        assert image.size == (RESOLUTION, RESOLUTION)
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(tmp_path / f"{run.name}.png"))), run.name


def test_sdxl_condition_round_trips(sdxl):
    pipe = load_sd_pipeline(str(sdxl["teacher"]))
    embeds, _, pooled, _ = pipe.encode_prompt(["a cat"], device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    teacher = LatentUNetDenoiser.from_pipeline(pipe)
    packed = encode_prompts(pipe, ["a cat"], "cpu")
    assert packed.shape == (1, 16 * 64 + 32) and teacher.config["sdxl"]["text_shape"] == [16, 64]
    assert torch.equal(packed[:, :16 * 64].reshape(1, 16, 64), embeds) and torch.equal(packed[:, 16 * 64:], pooled)


def test_a_single_sdxl_checkpoint_file_loads_as_sdxl(tmp_path):
    """An SDXL single-file checkpoint is told apart by its second text encoder's keys, read from the
    .safetensors header; anything else loads as SD 1.5."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors.torch import save_file

    from gdistill.models.sd_pipeline import single_file_pipeline_class

    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.ones(2)}, str(tmp_path / "xl.safetensors"))
    save_file({"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(2)}, str(tmp_path / "v1.safetensors"))
    assert single_file_pipeline_class(tmp_path / "xl.safetensors") is StableDiffusionXLPipeline
    assert single_file_pipeline_class(tmp_path / "v1.safetensors") is StableDiffusionPipeline
