"""SD-family teachers through diffusers, on a tiny SD-shaped pipeline built offline: teacher
resolution and its offline errors, the latent Denoiser against diffusers' own guided DDIM, and the
w-conditioned student in the stock pipeline."""
import pytest
import torch

from gdistill.errors import GdistillError
from gdistill.models import build_denoiser, make_student
from gdistill.models.latent import LatentUNetDenoiser, guidance_scale_embedding
from gdistill.models.sd_pipeline import load_sd_pipeline
from gdistill.run_folder import OWN_SAMPLERS
from gdistill.tasks.sample import sample
from tests.sd_tiny import build_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd"))


def prompt_embeddings(pipe, prompts):
    with torch.no_grad():
        return pipe.encode_prompt(prompts, "cpu", 1, False)[0]


def test_sd15_offline_names_what_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GdistillError) as e:
        load_sd_pipeline("sd15")
    message = str(e.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "--teacher DIR" in message
    assert "\n" not in message


def test_guidance_embedding_is_diffusers_own():
    """gdistill's on-device guidance embedding equals diffusers' get_guidance_scale_embedding (the
    stock pipelines' features of w), bit for bit on the CPU, for the dims students use."""
    from diffusers import StableDiffusionPipeline

    w = torch.tensor([0.0, 0.5, 2.0, 6.5, 14.0])
    for dim in (256, 255, 32):
        theirs = StableDiffusionPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)
        assert torch.equal(guidance_scale_embedding(w, dim), theirs), dim


def test_teacher_paths(tiny_sd, tmp_path):
    pipe = load_sd_pipeline(str(tiny_sd))
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.unet.config.time_cond_proj_dim is None
    with pytest.raises(GdistillError, match="does not exist"):
        load_sd_pipeline(str(tmp_path / "nothing"))
    with pytest.raises(GdistillError, match="model_index.json is missing"):
        load_sd_pipeline(str(tmp_path))


def test_fresh_student_equals_the_teachers_conditional_unet_and_rebuilds_from_its_config(tiny_sd):
    pipe = load_sd_pipeline(str(tiny_sd))
    teacher = LatentUNetDenoiser.from_pipeline(pipe).eval()
    student = make_student(teacher).eval()
    assert student.unet.config.time_cond_proj_dim == 256 and student.unet.time_embedding.cond_proj.bias is None
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 8, 8, generator=g)
    text = prompt_embeddings(pipe, ["a", "red fox", "snow"])
    t = torch.tensor([1.0, 0.5, 0.002])
    with torch.no_grad():
        expected = teacher(z, t, text)
        for w in (0.0, 2.0, 7.5):
            assert torch.equal(student(z, t, text, torch.full((3,), w)), expected)
        rebuilt = build_denoiser(student.config)
        rebuilt.load_state_dict(student.state_dict())
        assert torch.equal(rebuilt(z, t, text, torch.full((3,), 2.0)), expected)
        assert torch.equal(teacher.null_condition(text)[0], prompt_embeddings(pipe, [""])[0])


def test_guided_ddim_matches_diffusers_pipeline(tiny_sd):
    """gdistill's guided DDIM on SD's discrete schedule (the N-step grid on training steps
    round(1000 k / N) - 1, ending at alpha = 1) gives the latents of diffusers' own
    StableDiffusionPipeline with DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=True)."""
    from diffusers import DDIMScheduler

    pipe = load_sd_pipeline(str(tiny_sd))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True)
    teacher = LatentUNetDenoiser.from_pipeline(pipe).eval()
    text = prompt_embeddings(pipe, ["a red fox in snow"])
    w, steps = 2.0, 4
    ours = sample(teacher, text, steps, w, seed=7).samples
    z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(7))  # sample()'s first draw
    theirs = pipe(prompt_embeds=text, negative_prompt_embeds=teacher.null_condition(text), latents=z,
                  num_inference_steps=steps, guidance_scale=w + 1, output_type="latent").images
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_student_runs_in_the_stock_pipeline_reading_w_from_guidance_scale(tiny_sd):
    """StableDiffusionPipeline with the student's UNet: one batch-1 call a step (no guidance pass),
    the timestep_cond it passes is gdistill's embedding of w = guidance_scale - 1, and its latents
    are gdistill's sampler's."""
    from diffusers import DDIMScheduler

    pipe = load_sd_pipeline(str(tiny_sd))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True)
    student = make_student(LatentUNetDenoiser.from_pipeline(pipe)).eval()
    torch.manual_seed(1)
    torch.nn.init.normal_(student.unet.time_embedding.cond_proj.weight, std=0.5)  # as if trained: w matters
    pipe.unet = student.unet
    calls = []
    pipe.unet.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args[0].shape[0], kwargs["timestep_cond"])),
                                        with_kwargs=True)
    text = prompt_embeddings(pipe, ["a red fox"])
    z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))

    def generate(w):
        calls.clear()
        return pipe(prompt_embeds=text, latents=z, num_inference_steps=4, guidance_scale=w + 1,
                    output_type="latent").images

    low, high = generate(1.0), generate(4.0)
    assert [batch for batch, _ in calls] == [1, 1, 1, 1]
    assert torch.allclose(calls[0][1], guidance_scale_embedding(torch.tensor([4.0])))
    assert (low - high).abs().max() > 1e-4  # the student reads w
    # 4 steps: diffusers' DDIM steps back by 1000 // N, which lands on the grid when N divides 1000
    ours = sample(student, text, 4, 4.0, seed=0).samples
    assert torch.allclose(ours, high, atol=1e-4), (ours - high).abs().max()


@pytest.mark.parametrize("kind", ["consistency", "dmd"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_and_dmd_sampling_is_the_stock_pipeline_with_the_exported_scheduler(tiny_sd, kind, steps):
    """A w-conditioned UNet sampled by gdistill's own sampler for its run kind gives the latents of
    StableDiffusionPipeline with the scheduler `gdistill export` writes for that kind: a consistency
    student with diffusers' LCMScheduler (50-step solver grid, LCM's boundary scalings), a k-step DMD
    generator with LCMScheduler on its k-step grid, boundary scalings off; both re-noise with fresh
    noise from the same generator between steps."""
    from gdistill.tasks.export import student_scheduler_for

    pipe = load_sd_pipeline(str(tiny_sd))
    manifest = {"kind": kind, "solver_steps": 50, "steps": steps}
    pipe.scheduler = student_scheduler_for(manifest, pipe.scheduler.config)
    student = make_student(LatentUNetDenoiser.from_pipeline(pipe)).eval()
    torch.manual_seed(2)
    torch.nn.init.normal_(student.unet.time_embedding.cond_proj.weight, std=0.5)  # as if trained: w matters
    pipe.unet = student.unet
    text = prompt_embeddings(pipe, ["a red fox"])
    theirs = pipe(prompt_embeds=text, num_inference_steps=steps, guidance_scale=3.0, output_type="latent",
                  generator=torch.Generator().manual_seed(5)).images
    sampler = OWN_SAMPLERS[kind]
    ours = sample(student, text, steps, 2.0, sampler, seed=5, solver_steps=50).samples
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    if steps > 1:  # the re-noising matters: the deterministic sampler lands elsewhere
        assert (sample(student, text, steps, 2.0, seed=5).samples - theirs).abs().max() > 1e-3
