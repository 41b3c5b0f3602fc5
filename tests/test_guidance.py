"""Effective guidance w_eff (the formula, the diagnostic, `gdistill info --w-eff`), and the Stage-1
training choices that keep the w range whole: the EMA warm-up, the end-anchored w draws and the
loss weight over w."""
import json

import pytest
import torch

from gdistill.config import ConsistencyConfig, DMDConfig, apply_preset, build_config
from gdistill.diffusion import effective_guidance, guidance_loss_weight, guided, weighted_x_loss
from gdistill.errors import GdistillError
from gdistill.stages.common import draw_w
from gdistill.train import ShadowWeights, ema_decay_at


def test_the_teachers_own_guided_prediction_has_w_eff_equal_to_w():
    generator = torch.Generator().manual_seed(0)
    x_c, x_u = torch.randn(64, 1, 8, 8, generator=generator), torch.randn(64, 1, 8, 8, generator=generator)
    for w in (0.0, 0.5, 3.0, 14.0):
        assert effective_guidance(guided(x_c, x_u, w), x_c, x_u) == pytest.approx(w, abs=1e-6)  # float32 inputs
    # a prediction squeezed halfway between conditional and guided reads as w / 2
    assert effective_guidance(guided(x_c, x_u, 2.0) * 0.5 + x_c * 0.5, x_c, x_u) == pytest.approx(1.0, abs=1e-6)


def test_ema_warm_up_forgets_the_starting_weights():
    # the decay grows as (1 + n) / (10 + n) up to the asked-for decay
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 100) == pytest.approx(101 / 110)
    assert ema_decay_at(0.999, 100_000) == 0.999
    # with a weight that jumps from 0 to 1 after the first step, 2,000 warmed-up updates keep
    # well under 1 % on the start, where a fixed 0.999 keeps 0.999^2000 = 13.5 %
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ShadowWeights(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for n in range(1, 2001):
        ema.update(model, n)
    assert 1 - ema.shadow["weight"].item() < 0.01


def test_end_anchored_w_draws():
    generator = torch.Generator().manual_seed(0)
    w = draw_w(20_000, 0.0, 4.0, generator, end_fraction=0.2)
    assert (w >= 0).all() and (w <= 4).all()
    assert (w == 0).float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert (w == 4).float().mean().item() == pytest.approx(0.1, abs=0.01)
    middle = w[(w > 0) & (w < 4)]
    assert middle.mean().item() == pytest.approx(2.0, abs=0.05)  # the rest uniform
    plain = draw_w(1000, 0.0, 4.0, torch.Generator().manual_seed(0))
    assert ((plain == 0) | (plain == 4)).sum() == 0


def test_info_w_eff_prints_a_table_per_t_range(tmp_path, cli):
    code, _, err = cli("match", "--teacher", "toy2d", "--train-steps", 5, "--batch-size", 32, "--out", tmp_path / "s1")
    assert code == 0, err
    code, out, err = cli("info", tmp_path / "s1", "--w-eff", "--w", "0,2", "--n", 64, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["w"] for r in rows] == [0.0, 2.0]
    assert set(rows[0]) == {"w", "w_eff t 0-0.25", "w_eff t 0.25-0.5", "w_eff t 0.5-0.75", "w_eff t 0.75-1", "w_eff t all"}
    # 5 steps from a zero-initialised w-input: still close to the conditional teacher (w_eff near 0 at both w)
    assert all(abs(v) < 0.5 for r in rows for k, v in r.items() if k != "w")
    assert "effective guidance" in err  # the table goes to stderr with --json


def test_w_loss_power_2_weighs_every_w_s_relative_error_alike():
    # A guided prediction (1 + w) x_c - w x_u whose x_c is off by e errs by (1 + w) e. Unweighted,
    # w = 4 then takes 25 times the loss of w = 0; at power 1 5 times; at power 2 all weigh alike.
    g = torch.Generator().manual_seed(0)
    target, e = torch.randn(3, 1, 8, 8, generator=g), torch.randn(1, 1, 8, 8, generator=g)
    w = torch.tensor([0.0, 1.0, 4.0])
    prediction = target + (1 + w).view(-1, 1, 1, 1) * e
    log_snr = torch.zeros(3)

    def per_w(power):
        return torch.stack([weighted_x_loss(prediction[i:i + 1], target[i:i + 1], log_snr[i:i + 1], "x-mse",
                                            guidance_loss_weight(w[i:i + 1], power)) for i in range(3)])

    assert per_w(0.0) / per_w(0.0)[0] == pytest.approx(torch.tensor([1.0, 4.0, 25.0]), rel=1e-5)
    assert per_w(1.0) / per_w(1.0)[0] == pytest.approx(torch.tensor([1.0, 2.0, 5.0]), rel=1e-5)
    assert per_w(2.0) / per_w(2.0)[0] == pytest.approx(torch.ones(3), rel=1e-5)


@pytest.mark.parametrize("cls", [ConsistencyConfig, DMDConfig])
def test_w_loss_power_is_for_match_and_halve_only(cls):
    config = build_config(cls, None, {"w_loss_power": 1.0})
    with pytest.raises(GdistillError, match="x-loss of match and halve"):
        apply_preset(config, "pixel-unet", "consistency" if cls is ConsistencyConfig else "dmd")
    assert apply_preset(build_config(cls, None, {}), "pixel-unet", "dmd" if cls is DMDConfig else "consistency").w_loss_power == 0
