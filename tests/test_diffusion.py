"""The paper's formulas, checked against their definitions."""
import math

import pytest
import torch

from gdistill.diffusion import (
    CosineSchedule, DiscreteSchedule, alpha_sigma_like, ddim_step_t, diffuse, eps_from_x, guided,
    halving_target_t, loss_weight, renoise, sampling_grid, stochastic_step, teacher_two_steps, v_from_x_eps,
    x_from_eps, x_from_prediction, x_from_v, weighted_x_loss,
)

SCHEDULES = [CosineSchedule(), DiscreteSchedule()]


def test_cosine_schedule_matches_its_formula():
    sched = CosineSchedule()
    t = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    b = math.atan(math.exp(-10))
    a_ = math.atan(math.exp(10)) - b
    expected = -2 * torch.log(torch.tan(a_ * t + b))
    assert torch.allclose(sched.log_snr(t), expected, atol=1e-9)
    a, s = sched.alpha_sigma(t)
    assert torch.allclose(a**2 + s**2, torch.ones_like(t))
    ends = sched.log_snr(torch.tensor([1e-12, 1.0], dtype=torch.float64))
    assert ends[0] == pytest.approx(20, abs=1e-3) and ends[1] == pytest.approx(-20, abs=1e-6)


def test_sd_discrete_schedule_maps_grid_onto_training_steps():
    sched = DiscreteSchedule()
    assert sched.alphas_cumprod[-1].item() == pytest.approx(0.0047, abs=2e-4)
    t = torch.tensor(sampling_grid(4), dtype=torch.float64)  # 1, 3/4, 1/2, 1/4
    assert sched.step_index(t).tolist() == [999, 749, 499, 249]
    a, s = sched.alpha_sigma(t)
    assert torch.allclose(a**2, sched.alphas_cumprod[[999, 749, 499, 249]])
    assert torch.allclose(a**2 + s**2, torch.ones_like(a))
    assert (sched.sample_t(1000) > 0).all()  # training never draws clean data


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s.name)
def test_clean_end_is_data(sched):
    a, s = sched.alpha_sigma(torch.tensor([0.0]))
    assert a.item() == 1.0 and s.item() == 0.0


def test_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
    a, s = CosineSchedule().alpha_sigma(torch.rand(64, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01)
    z = diffuse(x, e, a, s)
    assert torch.allclose(x_from_eps(z, eps_from_x(z, x, a, s), a, s), x)
    assert torch.allclose(eps_from_x(z, x, a, s), e)
    v = v_from_x_eps(x, e, a, s)
    assert torch.allclose(x_from_v(z, v, a, s), x)
    for param, pred in (("x", x), ("eps", e), ("v", v)):
        assert torch.allclose(x_from_prediction(pred, z, a, s, param), x)


def test_guidance_combination():
    c, u = torch.tensor([2.0]), torch.tensor([0.5])
    assert guided(c, u, 0.0) == c  # w = 0 is the plain conditional model
    assert guided(c, u, 3.0) == pytest.approx((1 + 3) * 2.0 - 3 * 0.5)


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s.name)
def test_ddim_step_with_true_x_keeps_the_noise(sched):
    g = torch.Generator().manual_seed(1)
    x, e = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 4, generator=g, dtype=torch.float64)
    t, s = torch.full((8,), 0.75, dtype=torch.float64), torch.full((8,), 0.25, dtype=torch.float64)
    a_t, s_t = alpha_sigma_like(sched, t, x)
    a_s, s_s = alpha_sigma_like(sched, s, x)
    z_s = ddim_step_t(sched, diffuse(x, e, a_t, s_t), x, t, s)
    assert torch.allclose(z_s, a_s * x + s_s * e)
    assert torch.equal(ddim_step_t(sched, diffuse(x, e, a_t, s_t), x, t, torch.zeros_like(t)), x)


def _nonlinear_teacher(z, t):
    return torch.tanh(1.3 * z + 0.2) * (1 + t.reshape(-1, *[1] * (z.dim() - 1)))


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("steps", [1, 4, 64])
def test_halving_target_lands_on_teachers_two_steps(sched, steps):
    g = torch.Generator().manual_seed(2)
    i = torch.randint(1, steps + 1, (32,), generator=g)
    t = (i.double() / steps)
    z = torch.randn(32, 2, 3, generator=g, dtype=torch.float64)
    target = halving_target_t(sched, _nonlinear_teacher, z, t, 1.0 / steps)
    one_step = ddim_step_t(sched, z, target, t, (t - 1.0 / steps).clamp_min(0))
    two_steps, _ = teacher_two_steps(sched, _nonlinear_teacher, z, t, 1.0 / steps)
    assert torch.allclose(one_step, two_steps, atol=1e-9)


@pytest.mark.parametrize("t_value", [1.0, 0.75, 0.5])
def test_stochastic_step_gives_the_schedules_marginal(t_value):
    """Data at a point x0 (its exact denoiser returns x0): one stochastic step from t on a 4-step grid
    must leave z distributed as the schedule's marginal at t - 1/4: mean a_s x0, variance s_s^2."""
    sched, n, step, x0 = CosineSchedule(), 400_000, 0.25, 0.8
    g = torch.Generator().manual_seed(3)
    t = torch.full((n,), t_value, dtype=torch.float64)
    a, s = sched.alpha_sigma(t)
    z = a * x0 + s * torch.randn(n, generator=g, dtype=torch.float64)
    x_hat = torch.full_like(z, x0)
    z_next = stochastic_step(sched, z, x_hat, t, step, torch.randn(n, generator=g, dtype=torch.float64))
    a_s, s_s = (v[0].item() for v in sched.alpha_sigma(t - step))
    assert z_next.var().item() == pytest.approx(s_s**2, rel=0.01)
    assert z_next.mean().item() == pytest.approx(a_s * x0, abs=0.005)


def test_renoise_moves_any_marginal_up_the_schedule():
    """The stochastic step's noise-adding half: z_k on the marginal at k (data N(0.3, 0.7^2)) becomes
    the marginal at s > k: mean a_s mu, variance a_s^2 d^2 + s_s^2."""
    sched, n, mu, d = CosineSchedule(), 400_000, 0.3, 0.7
    g = torch.Generator().manual_seed(5)
    k, s_ = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.55, dtype=torch.float64)
    (a_k, s_k), (a_s, s_s) = sched.alpha_sigma(k), sched.alpha_sigma(s_)
    x = mu + d * torch.randn(n, generator=g, dtype=torch.float64)
    z_k = a_k * x + s_k * torch.randn(n, generator=g, dtype=torch.float64)
    z_s = renoise(z_k, a_k, s_k, a_s, s_s, torch.randn(n, generator=g, dtype=torch.float64))
    assert z_s.var().item() == pytest.approx((a_s**2 * d**2 + s_s**2).item(), rel=0.01)
    assert z_s.mean().item() == pytest.approx((a_s * mu).item(), abs=0.005)


def test_stochastic_last_step_is_deterministic():
    sched = CosineSchedule()
    z, x = torch.randn(5, 2), torch.randn(5, 2)
    t = torch.full((5,), 0.25)
    out = stochastic_step(sched, z, x, t, 0.25, torch.randn(5, 2))
    assert torch.equal(out, x)


def test_truncated_snr_weight_is_max_of_x_and_eps_errors():
    g = torch.Generator().manual_seed(4)
    x, x_hat = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randn(16, 6, generator=g, dtype=torch.float64)
    t = torch.rand(16, generator=g, dtype=torch.float64) * 0.98 + 0.01
    sched = CosineSchedule()
    a, s = alpha_sigma_like(sched, t, x)
    z = diffuse(x, torch.randn(16, 6, generator=g, dtype=torch.float64), a, s)
    x_err = (x_hat - x).pow(2).mean(1)
    e_err = (eps_from_x(z, x_hat, a, s) - eps_from_x(z, x, a, s)).pow(2).mean(1)
    v_err = (v_from_x_eps(x_hat, eps_from_x(z, x_hat, a, s), a, s) - v_from_x_eps(x, eps_from_x(z, x, a, s), a, s)).pow(2).mean(1)
    logsnr = sched.log_snr(t)
    assert torch.allclose(loss_weight(logsnr, "snr-trunc") * x_err, torch.maximum(x_err, e_err))
    assert torch.allclose(loss_weight(logsnr, "v-mse") * x_err, v_err)
    assert weighted_x_loss(x_hat, x, logsnr, "x-mse").item() == pytest.approx(x_err.mean().item())
    with pytest.raises(ValueError):
        loss_weight(logsnr, "nope")
