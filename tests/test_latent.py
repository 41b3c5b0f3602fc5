"""SD-family teachers through diffusers, on a tiny SD-shaped pipeline built offline: teacher
resolution and its offline errors, and the w-conditioned student UNet in the stock pipeline."""
import pytest
import torch

from gdistill.errors import GdistillError
from gdistill.models.latent import guidance_scale_embedding, load_sd_pipeline, make_sd_student
from tests.sd_tiny import build_tiny_sd


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd"))


def test_sd15_offline_names_what_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GdistillError) as e:
        load_sd_pipeline("sd15")
    message = str(e.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "--teacher DIR" in message
    assert "\n" not in message


def test_teacher_paths(tiny_sd, tmp_path):
    pipe = load_sd_pipeline(str(tiny_sd))
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.unet.config.time_cond_proj_dim is None
    with pytest.raises(GdistillError, match="does not exist"):
        load_sd_pipeline(str(tmp_path / "nothing"))
    with pytest.raises(GdistillError, match="model_index.json is missing"):
        load_sd_pipeline(str(tmp_path))


def test_fresh_student_equals_the_teachers_conditional_unet(tiny_sd):
    unet = load_sd_pipeline(str(tiny_sd)).unet
    student = make_sd_student(unet)
    assert student.config.time_cond_proj_dim == 256 and student.time_embedding.cond_proj.bias is None
    g = torch.Generator().manual_seed(0)
    z, text = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 16, 32, generator=g)
    t = torch.tensor([999, 500, 1])
    with torch.no_grad():
        expected = unet(z, t, text).sample
        for w in (0.0, 2.0, 7.5):
            got = student(z, t, text, timestep_cond=guidance_scale_embedding(torch.full((3,), w))).sample
            assert torch.equal(got, expected)


def test_student_runs_in_the_stock_pipeline_reading_w_from_guidance_scale(tiny_sd):
    """StableDiffusionPipeline with the student: one batch-1 call a step (no guidance pass), and the
    timestep_cond it passes is gdistill's embedding of w = guidance_scale - 1."""
    pipe = load_sd_pipeline(str(tiny_sd))
    pipe.unet = make_sd_student(pipe.unet)
    torch.manual_seed(1)
    torch.nn.init.normal_(pipe.unet.time_embedding.cond_proj.weight, std=0.5)  # as if trained: w matters
    calls = []
    pipe.unet.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args[0].shape[0], kwargs["timestep_cond"])),
                                        with_kwargs=True)

    def generate(w):
        calls.clear()
        return pipe("a red fox", num_inference_steps=3, guidance_scale=w + 1, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    low, high = generate(1.0), generate(4.0)
    assert [batch for batch, _ in calls] == [1, 1, 1]
    assert torch.allclose(calls[0][1], guidance_scale_embedding(torch.tensor([4.0])))
    assert abs(low - high).max() > 1e-4  # the student reads w
    assert (generate(4.0) == high).all()  # and the same seed gives the same image
