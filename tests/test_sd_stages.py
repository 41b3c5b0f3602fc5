"""The latent-space pipeline end to end on a tiny SD-shaped pipeline built offline: match on image-
caption pairs, two halving rounds, sampling with prompts, export to a diffusers folder that the stock
StableDiffusionPipeline reloads and samples identically; the latent cache, LoRA, negative prompts,
mixed precision. Distillation is judged by numbers: the Stage-1 student's distance to the guided
teacher, and the 2-step student's distance to the 8-step sampler it was distilled from."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gdistill.data.captions import CaptionDataset
from gdistill.data.latents import LatentCaptionData
from gdistill.diffusion import alpha_sigma_like, diffuse, weighted_x_loss
from gdistill.models import guided_predict_x, make_student
from gdistill.models.sd_encoders import SDEncoders
from gdistill.models.sd_pipeline import pipeline_record
from gdistill.run_folder import load_model, read_manifest
from gdistill.stages.common import training_data
from gdistill.tasks.sample import sample
from tests.conftest import run_cli
from tests.sd_tiny import build_tiny_sd, write_caption_folder

CAPTIONS = ["red fox", "blue sky", "green tree", "snow", "a cat", "yellow sun", "dark sea", "white bird"]
RESOLUTION = 16  # the tiny VAE halves: 8x8 latents


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """The tiny teacher, 8 image-caption pairs, a stage-1 run and two halving rounds (8 -> 4 -> 2)."""
    root = tmp_path_factory.mktemp("sd-stages")
    teacher = build_tiny_sd(root / "teacher")
    captions = write_caption_folder(root / "captions", CAPTIONS)
    cache = root / "cache"
    assert run_cli("match", "--teacher", teacher, "--data", captions, "--resolution", RESOLUTION, "--w-max", 4,
                   "--train-steps", 150, "--batch-size", 8, "--lr", 1e-4, "--cache", cache,
                   "--out", root / "stage1") == (0,)
    assert run_cli("halve", "--from", root / "stage1", "--rounds", 2, "--start-steps", 8, "--train-steps", 200,
                   "--batch-size", 8, "--lr", 1e-4, "--cache", cache, "--out", root / "pd") == (0,)
    return {"root": root, "teacher": teacher, "captions": captions, "cache": cache}


def _fixed_batch(data, n=64, seed=123):
    g = torch.Generator().manual_seed(seed)
    x, text = data.batch(n, g)
    eps = torch.randn(x.shape, generator=g)
    return x, text, eps, g


def test_stage1_student_learns_the_guided_teacher(sd):
    """On held-out noise, times and w in [0, 4], the trained student's weighted x-error to the teacher's
    guided prediction (1 + w) x_c - w x_u is well below the fresh student's (= the conditional teacher)."""
    teacher, teacher_manifest, _ = load_model(sd["teacher"])
    teacher.with_latent_size(RESOLUTION // 2)
    student, manifest, _ = load_model(sd["root"] / "stage1")
    fresh = make_student(teacher).eval()
    x, text, eps, g = _fixed_batch(training_data(None, manifest, sd["cache"]))
    t = teacher.schedule.sample_t(len(x), g)
    w = 4 * torch.rand(len(x), generator=g)
    a, s = alpha_sigma_like(teacher.schedule, t, x)
    z = diffuse(x, eps, a, s)
    with torch.no_grad():
        target = guided_predict_x(teacher, z, t, text, w)
        error = {name: weighted_x_loss(m(z, t, text, w), target, teacher.schedule.log_snr(t), "snr-trunc").item()
                 for name, m in (("fresh", fresh), ("trained", student))}
    assert error["trained"] < 0.8 * error["fresh"], error


def test_two_halving_rounds_beat_sampling_the_stage1_model_in_fewer_steps(sd):
    """The 2-step round-2 student lands much closer to the 8-step stage-1 sampler it was distilled
    from than the stage-1 model does when simply sampled in 2 steps (same prompts, same noise)."""
    stage1, manifest, _ = load_model(sd["root"] / "stage1")
    round2, round_manifest, _ = load_model(sd["root"] / "pd" / "round-2")
    _, text, _, _ = _fixed_batch(training_data(None, manifest, sd["cache"]), n=32)
    reference = sample(stage1, text, 8, 2.0, seed=5).samples
    naive = sample(stage1, text, 2, 2.0, seed=5).samples
    distilled = sample(round2, text, 2, 2.0, seed=5).samples
    naive_error, distilled_error = ((naive - reference) ** 2).mean(), ((distilled - reference) ** 2).mean()
    assert distilled_error < 0.5 * naive_error, (distilled_error, naive_error)
    assert round_manifest["steps"] == 2 and round_manifest["round"] == 2
    assert round_manifest["pipeline"] == manifest["pipeline"] == pipeline_record(str(sd["teacher"]))
    assert [e["kind"] for e in round_manifest["lineage"]] == ["teacher", "stage1", "round"]


def test_sample_with_prompts_then_export_reloads_in_diffusers_with_the_same_image(sd, tmp_path, cli):
    from diffusers import StableDiffusionPipeline

    run = sd["root"] / "pd" / "round-2"
    code, _, err = cli("sample", "--from", run, "--w", 3.5, "--prompt", "a red fox in snow", "--seed", 11,
                       "--out", tmp_path / "fox.png")
    assert code == 0, err
    code, _, err = cli("export", run, "--out", tmp_path / "fox-2step")
    assert code == 0, err
    folder = tmp_path / "fox-2step"
    card = (folder / "README.md").read_text()
    assert "num_inference_steps=2" in card and "`guidance_scale` ∈ [1, 5]" in card and "round 2 (2 steps)" in card
    assert json.loads((folder / "unet" / "config.json").read_text())["time_cond_proj_dim"] == 256
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    image = pipe("a red fox in snow", num_inference_steps=2, guidance_scale=4.5,
                 generator=torch.Generator().manual_seed(11)).images[0]
    ours = np.asarray(Image.open(tmp_path / "fox.png"))
    assert ours.shape == (RESOLUTION, RESOLUTION, 3)
    assert np.array_equal(np.asarray(image), ours)
    # docs/latent.md's recipe for speed in plain diffusers (channels-last, fused QKV projections; its
    # torch.compile step is left out for the suite's time): the same image up to float rounding
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.unet.fuse_qkv_projections()
    fast = pipe("a red fox in snow", num_inference_steps=2, guidance_scale=4.5,
                generator=torch.Generator().manual_seed(11)).images[0]
    assert np.abs(np.asarray(fast).astype(int) - ours.astype(int)).max() <= 2
    # several prompts: a grid, or arrays with the prompts their labels index
    code, _, err = cli("sample", "--from", run, "--w", 2, "--prompt", "snow", "--prompt", "a cat", "--n", 4,
                       "--out", tmp_path / "two.npz")
    assert code == 0, err
    arrays = np.load(tmp_path / "two.npz")
    assert arrays["samples"].shape == (4, 3, RESOLUTION, RESOLUTION) and list(arrays["labels"]) == [0, 1, 0, 1]
    assert list(arrays["prompts"]) == ["snow", "a cat"]
    code, _, err = cli("export", run, "--out", folder)
    assert code == 2 and "--overwrite" in err
    code, _, err = cli("sample", "--from", run, "--prompt", "snow", "--steps", 3, "--allow-any-steps", "--out", tmp_path / "off.png")
    assert code == 0 and "distilled for 2 steps; sampling with 3" in err


def test_consistency_student_samples_and_exports_with_lcm_scheduler(sd, tmp_path, cli):
    """`gdistill consistency` on the tiny SD teacher (with LoRA) and from its Stage-1 run: the student
    samples in any step count, and its export (LCMScheduler) gives gdistill's image in the stock pipeline."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    code, _, err = cli("consistency", "--teacher", sd["teacher"], "--data", sd["captions"], "--resolution", RESOLUTION,
                       "--w-max", 4, "--lora-rank", 4, "--train-steps", 20, "--batch-size", 8, "--lr", 1e-3,
                       "--cache", sd["cache"], "--out", tmp_path / "cd")
    assert code == 0, err
    _, manifest, _ = load_model(tmp_path / "cd")
    assert manifest["kind"] == "consistency" and manifest["pipeline"]["source"] and manifest["w_range"] == [0.0, 4.0]
    for steps in (1, 3):
        code, _, err = cli("sample", "--from", tmp_path / "cd", "--steps", steps, "--w", 3.5, "--prompt", "a red fox",
                           "--seed", 11, "--out", tmp_path / f"fox{steps}.png")
        assert code == 0 and f"{steps} steps, {steps} network calls" in err, err
    code, _, err = cli("export", tmp_path / "cd", "--out", tmp_path / "cd-pipe")
    assert code == 0, err
    assert "LCMScheduler" in (tmp_path / "cd-pipe" / "README.md").read_text()
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "cd-pipe")
    assert isinstance(pipe.scheduler, LCMScheduler)
    image = pipe("a red fox", num_inference_steps=3, guidance_scale=4.5, generator=torch.Generator().manual_seed(11)).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(tmp_path / "fox3.png")))
    # from the Stage-1 run: one call a solver step, its w range kept, lineage teacher -> stage1 -> consistency
    code, _, err = cli("consistency", "--teacher", sd["root"] / "stage1", "--train-steps", 5, "--batch-size", 8,
                       "--cache", sd["cache"], "--out", tmp_path / "cd1")
    assert code == 0, err
    _, manifest, _ = load_model(tmp_path / "cd1")
    assert [e["kind"] for e in manifest["lineage"]] == ["teacher", "stage1"]
    assert manifest["teacher"] == read_manifest(sd["root"] / "stage1")["teacher"] and manifest["w_range"] == [0.0, 4.0]


def test_latent_cache_gives_the_same_batches_and_recovers_from_damage(sd, tmp_path):
    def data(cache=None, resolution=RESOLUTION):
        return LatentCaptionData(CaptionDataset(str(sd["captions"]), resolution),
                                 SDEncoders(pipeline_record(str(sd["teacher"]))), cache)

    plain = data().batch(6, torch.Generator().manual_seed(0))
    cold = data(tmp_path / "c")
    first = cold.batch(6, torch.Generator().manual_seed(0))
    warm = data(tmp_path / "c")
    second = warm.batch(6, torch.Generator().manual_seed(0))
    for a, b, c in zip(plain, first, second):
        assert torch.equal(a, b) and torch.equal(b, c)
    assert cold.cache_hits == 0 and warm.cache_misses == 0 and warm.cache_hits == 6
    entries = sorted((tmp_path / "c").rglob("*.safetensors"))
    entries[0].write_bytes(b"damaged")
    again = data(tmp_path / "c")
    third = again.batch(6, torch.Generator().manual_seed(0))
    # re-encoded alone rather than in a batch of 6: equal up to the convolutions' batch-size rounding
    assert torch.allclose(third[0], plain[0], atol=1e-5)
    assert again.cache_misses >= 1 and again.cache_hits + again.cache_misses == 6
    assert entries[0].read_bytes() != b"damaged"  # rewritten whole
    other = data(tmp_path / "c", resolution=2 * RESOLUTION)  # another resolution: other entries
    other.batch(2, torch.Generator().manual_seed(0))
    assert other.cache_hits == 0


def test_dmd_generator_with_lora_samples_and_exports_with_the_same_image(sd, tmp_path, cli):
    """`gdistill dmd --lora-rank` on the tiny SD teacher: a 2-step generator whose adapter is merged
    into a plain UNet, sampled by re-noising; its export gives gdistill's image in the stock pipeline."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    code, _, err = cli("dmd", "--teacher", sd["teacher"], "--data", sd["captions"], "--resolution", RESOLUTION,
                       "--w-max", 4, "--lora-rank", 4, "--generator-steps", 2, "--fake-updates", 2, "--train-steps", 9,
                       "--batch-size", 4, "--lr", 1e-3, "--cache", sd["cache"], "--out", tmp_path / "dmd")
    assert code == 0, err
    generator, manifest, _ = load_model(tmp_path / "dmd")
    assert manifest["kind"] == "dmd" and manifest["steps"] == 2 and manifest["settings"]["lora_rank"] == 4
    assert not any("lora" in k for k in generator.state_dict())
    teacher_state, state = load_model(sd["teacher"])[0].state_dict(), generator.state_dict()
    adapted = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(state["unet.conv_in.weight"], teacher_state["unet.conv_in.weight"])  # frozen under LoRA
    assert not torch.equal(state[adapted], teacher_state[adapted])
    code, _, err = cli("sample", "--from", tmp_path / "dmd", "--w", 2.5, "--prompt", "a red fox", "--seed", 4,
                       "--out", tmp_path / "fox.png")
    assert code == 0 and "2 steps, 2 network calls" in err, err
    code, _, err = cli("export", tmp_path / "dmd", "--out", tmp_path / "dmd-pipe")
    assert code == 0, err
    assert "original_inference_steps=2" in (tmp_path / "dmd-pipe" / "README.md").read_text()
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "dmd-pipe")
    assert isinstance(pipe.scheduler, LCMScheduler)
    image = pipe("a red fox", num_inference_steps=2, guidance_scale=3.5, generator=torch.Generator().manual_seed(4)).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(tmp_path / "fox.png")))


def test_lora_trains_an_adapter_and_writes_a_plain_unet(sd, tmp_path, cli):
    teacher, _, _ = load_model(sd["teacher"])
    teacher.with_latent_size(RESOLUTION // 2)
    student = make_student(teacher)
    student.add_lora(4)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "cond_proj" in n for n in trainable)
    torch.manual_seed(0)
    for name, p in student.named_parameters():
        if "lora_B" in name or "cond_proj" in name:
            torch.nn.init.normal_(p, std=0.05)  # as if trained
    g = torch.Generator().manual_seed(0)
    z, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 16, 32, generator=g)
    t, w = torch.tensor([0.9, 0.3]), torch.tensor([1.0, 3.0])
    with torch.no_grad():
        before = student(z, t, text, w)
        student.merge_lora()
        after = student(z, t, text, w)
    assert not any("lora" in k for k in student.state_dict())
    assert torch.allclose(before, after, atol=1e-5)

    code, _, err = cli("match", "--teacher", sd["teacher"], "--data", sd["captions"], "--resolution", RESOLUTION,
                       "--lora-rank", 4, "--train-steps", 5, "--batch-size", 2, "--lr", 1e-2, "--cache", sd["cache"],
                       "--out", tmp_path / "lora")
    assert code == 0, err
    run, manifest, _ = load_model(tmp_path / "lora")
    assert manifest["settings"]["lora_rank"] == 4
    frozen, adapted = "unet.conv_in.weight", "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    teacher_state, run_state = teacher.state_dict(), run.state_dict()
    assert torch.equal(run_state[frozen], teacher_state[frozen])
    assert not torch.equal(run_state[adapted], teacher_state[adapted])


def test_negative_prompt_replaces_the_unconditional_branch(sd, tmp_path, cli):
    """A teacher sampled with a negative prompt is diffusers' own negative_prompt guidance; a student
    bakes its negative prompt in at Stage 1 and refuses one at sampling time."""
    from diffusers import DDIMScheduler

    from gdistill.models.sd_pipeline import load_sd_pipeline
    from gdistill.tasks.sample import sample_prompts

    teacher, manifest, _ = load_model(sd["teacher"])
    ours = sample_prompts(teacher, manifest, ["red fox"], 1, 4, 3.0, seed=2, negative_prompt="snow").samples
    plain = sample_prompts(teacher, manifest, ["red fox"], 1, 4, 3.0, seed=2).samples
    pipe = load_sd_pipeline(str(sd["teacher"]))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True)
    theirs = pipe("red fox", negative_prompt="snow", num_inference_steps=4, guidance_scale=4.0,
                  generator=torch.Generator().manual_seed(2), output_type="pt").images
    assert torch.allclose(ours, theirs * 2 - 1, atol=1e-4)
    assert (ours - plain).abs().max() > 1e-3

    code, _, err = cli("match", "--teacher", sd["teacher"], "--data", sd["captions"], "--resolution", RESOLUTION,
                       "--negative-prompt", "blurry", "--train-steps", 2, "--batch-size", 2, "--out", tmp_path / "neg")
    assert code == 0, err
    assert read_manifest(tmp_path / "neg")["negative_prompt"] == "blurry"
    code, _, err = cli("sample", "--from", tmp_path / "neg", "--prompt", "a", "--negative-prompt", "b", "--out", tmp_path / "x.png")
    assert code == 2 and "'blurry'" in err and not (tmp_path / "x.png").exists()


def test_mixed_precision_and_gradient_checkpointing_train(sd, tmp_path, cli):
    code, _, err = cli("match", "--teacher", sd["teacher"], "--data", sd["captions"], "--resolution", RESOLUTION,
                       "--mixed-precision", "bf16", "--gradient-checkpointing", "--detect-anomaly", "--train-steps", 3, "--batch-size", 2,
                       "--out", tmp_path / "bf16")
    assert code == 0, err
    log = [json.loads(line) for line in (tmp_path / "bf16" / "log.jsonl").read_text().splitlines()]
    assert np.isfinite(log[-1]["loss"])
    if not torch.cuda.is_available():
        code, _, err = cli("match", "--teacher", sd["teacher"], "--data", sd["captions"], "--mixed-precision", "fp16",
                           "--out", tmp_path / "fp16")
        assert code == 2 and "CUDA" in err and not (tmp_path / "fp16").exists()


@pytest.mark.parametrize("args, message", [
    (["sample", "--from", "{run}", "--out", "{tmp}/x.png"], "pass --prompt"),
    (["sample", "--from", "{run}", "--prompt", "a", "--steps", "3", "--out", "{tmp}/x.png"], "was distilled for 2 steps, not 3"),
    (["sample", "--from", "digits", "--prompt", "a cat", "--out", "{tmp}/x.png"], "--label, not --prompt"),
    (["export", "digits", "--out", "{tmp}/e"], "export writes diffusers"),
    (["export", "{teacher}", "--out", "{tmp}/e"], "not a student"),
    (["match", "--teacher", "digits", "--lora-rank", "4", "--out", "{tmp}/m"], "LoRA is for SD-family"),
    (["match", "--teacher", "digits", "--cache", "{tmp}/c", "--out", "{tmp}/m"], "--cache holds"),
    (["match", "--teacher", "{teacher}", "--out", "{tmp}/m"], "needs --data"),
    (["match", "--teacher", "{teacher}", "--data", "{captions}", "--resolution", "15", "--out", "{tmp}/m"], "multiple of"),
])
def test_bad_input_is_one_line_and_writes_nothing(sd, tmp_path, cli, args, message):
    names = {"run": sd["root"] / "pd" / "round-2", "tmp": tmp_path, "teacher": sd["teacher"], "captions": sd["captions"]}
    code, _, err = cli(*[a.format(**names) for a in args])
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not any(p.name in ("x.png", "e", "m") for p in tmp_path.iterdir())


def test_eval_scores_text_runs_from_prompts_against_their_teacher(sd, tmp_path, cli):
    (tmp_path / "prompts.txt").write_text("red fox\nsnow\n")
    code, out, err = cli("eval", "--from", sd["root"] / "pd", "--teacher-steps", 4, "--to-teacher", 8, "--w", 2, "--n", 8, "--ed",
                         "--prompts", tmp_path / "prompts.txt", "--ref", sd["captions"], "--json",
                         "--out", tmp_path / "report")
    assert code == 0, err
    rows = json.loads(out[out.index("["):])
    assert [(r["model"], r["steps"], r["calls_per_image"]) for r in rows] == \
        [("teacher", 4, 8), ("round-1", 4, 4), ("round-2", 2, 2)]
    assert all(np.isfinite(r["ed"]) and r["ed"] >= 0 and np.isfinite(r["ed_to_teacher"]) for r in rows)
    assert len(list((tmp_path / "report" / "grids").glob("*.png"))) == 3
    code, _, err = cli("eval", "--from", sd["root"] / "pd", "--ed", "--ref", sd["captions"], "--out", tmp_path / "r2")
    assert code == 2 and "--prompts FILE" in err and not (tmp_path / "r2").exists()
