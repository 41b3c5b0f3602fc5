"""The model adapters: one interface, the zero-initialised w-embedding, batched guidance."""
import pytest
import torch

from gdistill.diffusion import guided
from gdistill.models import build_denoiser, calls_per_step, denoise_fn, guided_predict_x, make_student

SCHEDULE = {"name": "cosine", "logsnr_min": -20.0, "logsnr_max": 20.0}
CONFIGS = {
    "pixel": {"kind": "pixel-unet", "image_size": 8, "channels": 1, "num_classes": 10,
              "block_out_channels": [32, 64], "layers_per_block": 1, "schedule": SCHEDULE},
    "toy": {"kind": "toy-mlp", "dim": 2, "num_classes": 4, "hidden": 32, "depth": 2, "schedule": SCHEDULE},
}


def _inputs(model, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, *model.data_shape, generator=g)
    t = torch.rand(n, generator=g) * 0.9 + 0.05
    labels = torch.randint(0, model.num_classes, (n,), generator=g)
    w = torch.rand(n, generator=g) * 4
    return z, t, labels, w


def _trained_looking(model):
    """Perturb every weight so that no zero-initialised output layer hides a bug."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("param", ["x", "eps", "v"])
def test_fresh_student_equals_teachers_conditional_model(name, param):
    torch.manual_seed(0)
    teacher = _trained_looking(build_denoiser({**CONFIGS[name], "parameterization": param})).eval()
    student = make_student(teacher).eval()
    assert student.w_conditioned and not teacher.w_conditioned
    z, t, labels, w = _inputs(teacher)
    with torch.no_grad():
        assert torch.equal(student.predict_x(z, t, labels, w), teacher.predict_x(z, t, labels))
    # and the w-input is live once its projection moves off zero
    with torch.no_grad():
        student.w_embedding.mlp.linear_2.weight.add_(0.1)
        assert not torch.allclose(student.predict_x(z, t, labels, w), teacher.predict_x(z, t, labels))


@pytest.mark.parametrize("name", CONFIGS)
def test_guided_prediction_is_one_batched_forward_of_cond_and_null(name):
    torch.manual_seed(1)
    teacher = _trained_looking(build_denoiser(CONFIGS[name])).eval()
    z, t, labels, w = _inputs(teacher)
    calls = []
    teacher.register_forward_pre_hook(lambda mod, args: calls.append(len(args[0])))
    null = torch.full_like(labels, teacher.null_label)
    with torch.no_grad():
        x_w = guided_predict_x(teacher, z, t, labels, w)
        assert calls == [2 * len(z)]
        expected = guided(teacher.predict_x(z, t, labels), teacher.predict_x(z, t, null), w.reshape(-1, *[1] * (z.dim() - 1)))
    assert torch.allclose(x_w, expected, atol=1e-5)
    assert calls_per_step(teacher) == 2 and calls_per_step(make_student(teacher)) == 1


def test_denoise_fn_binds_condition_for_students_and_teachers():
    torch.manual_seed(2)
    teacher = _trained_looking(build_denoiser(CONFIGS["toy"])).eval()
    student = _trained_looking(make_student(teacher)).eval()
    z, t, labels, w = _inputs(teacher)
    with torch.no_grad():
        assert torch.equal(denoise_fn(student, labels, w)(z, t), student.predict_x(z, t, labels, w))
        assert torch.equal(denoise_fn(teacher, labels, w)(z, t), guided_predict_x(teacher, z, t, labels, w))


def test_w_conditioned_model_demands_w_and_unknown_kind_is_refused():
    student = make_student(build_denoiser(CONFIGS["toy"]))
    z, t, labels, _ = _inputs(student)
    with pytest.raises(ValueError, match="pass w"):
        student.predict_x(z, t, labels)
    with pytest.raises(ValueError, match="unknown model kind"):
        build_denoiser({**CONFIGS["toy"], "kind": "nope"})


def test_to_device_moves_only_a_model_whose_weights_are_elsewhere():
    model = build_denoiser(CONFIGS["pixel"])

    def no_walk(*args, **kwargs):
        raise AssertionError("Module.to walked a model that was already on the device")

    model._apply = no_walk  # sampling calls to_device on every call: no walk when nothing moves
    assert model.to_device("cpu") is model and model.to_device(torch.device("cpu")) is model
    del model._apply
    moved = model.to_device("meta")
    assert {p.device.type for p in moved.parameters()} == {"meta"}
