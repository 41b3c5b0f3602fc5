"""Distribution-matching distillation (`gdistill dmd`): the generator's update is DMD's gradient, the
two networks train in turns (fake score, then generator), a k-step generator trains on the states
its own sampling reaches, and on toy2d (4 classes, each two opposite modes) a 1-step generator
covers every mode of every class at w = 0 and w = 4, measured against the guided teacher (at w = 4
it is also more spread than the teacher: docs/dmd.md)."""
import pytest
import torch

from gdistill.config import DMDConfig, apply_preset
from gdistill.data import Toy2D
from gdistill.diffusion import alpha_sigma_like, distribution_matching_target
from gdistill.metrics import class_energy_distance
from gdistill.models import make_student
from gdistill.run_folder import load_model
from gdistill.stages.objectives import DistributionMatching, GeneratorAndFakeScore
from gdistill.tasks.sample import cycle_labels, sample


def test_the_generator_target_gives_dmds_gradient():
    x, x_real, x_fake = torch.randn(3, 1, 4, 4, requires_grad=True), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    target = distribution_matching_target(x.detach(), x_real, x_fake)
    (0.5 * (x - target).pow(2).sum()).backward()
    # (x_fake - x_real) / mean |x - x_real| per example: the reverse-KL direction with DMD's weight
    scale = (x.detach() - x_real).abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(x.grad, (x_fake - x_real) / scale, atol=1e-6)


def objective_and_networks(generator_steps=1, fake_updates=3):
    teacher, _, _ = load_model("toy2d")
    config = apply_preset(DMDConfig(teacher="toy2d", batch_size=64, generator_steps=generator_steps,
                                    fake_updates=fake_updates), "toy-mlp", "dmd")
    torch.manual_seed(0)
    generator = make_student(teacher)
    networks = GeneratorAndFakeScore(generator, make_student(teacher))
    objective = DistributionMatching(Toy2D(), teacher, config, 0.0, 4.0)
    objective.prepare(torch.device("cpu"), networks, None)
    return objective, networks


def test_fake_score_and_generator_train_in_turns():
    objective, networks = objective_and_networks(fake_updates=3)
    trained = []
    for step in range(8):
        networks.zero_grad(set_to_none=True)
        objective.at_step(step)
        loss, terms = objective(networks, torch.Generator().manual_seed(step), torch.device("cpu"))
        loss.backward()
        reached = {part for part in ("generator", "fake_score")
                   if any(p.grad is not None for p in getattr(networks, part).parameters())}
        assert len(reached) == 1, reached  # each step's loss reaches one network only
        trained.append(reached.pop())
        assert set(terms) == {"dmd_loss" if trained[-1] == "generator" else "fake_score_loss"}
    assert trained == ["fake_score"] * 3 + ["generator"] + ["fake_score"] * 3 + ["generator"]


def test_a_multi_step_generator_trains_on_the_states_its_sampling_reaches():
    objective, networks = objective_and_networks(generator_steps=2)
    generator = torch.Generator().manual_seed(0)
    noise, labels = torch.randn(512, 2), torch.randint(0, 4, (512,))
    w = torch.full((512,), 2.0)
    objective.config = objective.config.__class__(**{**objective.config.__dict__, "batch_size": 512})
    z, t = objective.generator_input(networks, 512, noise, labels, w, generator)
    assert set(t.tolist()) == {1.0, 0.5}
    first = t == 1.0
    assert torch.equal(z[first], noise[first])  # the first grid time starts from noise
    # at t = 1/2 the input is the generator's own 1-step sample re-noised: a x + s n, n ~ N(0, I)
    with torch.no_grad():
        x = networks.generator(noise, torch.ones(512), labels, w)
    a, s = alpha_sigma_like(networks.generator.schedule, torch.full((512,), 0.5), x)
    n = (z[~first] - a[~first] * x[~first]) / s[~first]
    assert abs(n.mean().item()) < 0.1 and abs(n.std().item() - 1) < 0.1


def mode_coverage(samples: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(the smallest share of a class's samples whose nearest mode is one of its own two, taken
    over the 8 (class, mode) pairs; the share of all samples within 4 std of their nearest mode)."""
    data = Toy2D()
    distance = torch.cdist(samples, data.means)
    nearest = distance.argmin(1)
    least = min((nearest[labels == k] == m).float().mean().item()
                for k in range(data.num_classes) for m in (k, k + data.num_classes))
    return least, (distance.min(1).values < 4 * data.std).float().mean().item()


@pytest.mark.slow
def test_a_one_step_dmd_generator_covers_every_mode_of_every_class(tmp_path, cli):
    # the defaults but half the steps (6,000): the suite's time
    code, _, err = cli("dmd", "--teacher", "toy2d", "--train-steps", 3000, "--out", tmp_path / "dmd")
    assert code == 0, err
    student, manifest, _ = load_model(tmp_path / "dmd")
    assert manifest["kind"] == "dmd" and manifest["steps"] == 1 and manifest["w_range"] == [0.0, 4.0]
    assert [e["kind"] for e in manifest["lineage"]] == ["teacher"]
    teacher, _, _ = load_model("toy2d")
    labels = cycle_labels(2000, teacher.num_classes)
    for w in (0.0, 4.0):
        one_step = sample(student, labels, 1, w, "renoise", seed=2).samples
        least, near = mode_coverage(one_step, labels)  # the 256-step teacher: 0.45-0.46 and 0.98-1.00
        reference = sample(teacher, labels, 256, w, seed=1).samples
        distance = class_energy_distance(one_step, reference, labels)
        teacher_1 = class_energy_distance(sample(teacher, labels, 1, w, seed=2).samples, reference, labels)
        print(f"w={w}: least-covered mode {least:.2f}, within 4 std {near:.2f}; to the 256-step teacher "
              f"{distance:.4f} (its 1 step {teacher_1:.4f})")
        # every mode of every class keeps at least 30 % of the class's samples (a dropped mode: 0)
        assert least > 0.3, (w, least)
        assert distance < teacher_1 / 4, (w, distance, teacher_1)
        if w == 0.0:  # where the real score is a true score, the samples sit on the modes
            assert near > 0.75 and distance < teacher_1 / 20, (near, distance, teacher_1)
    # `sample` picks the run's own sampler and steps
    code, _, err = cli("sample", "--from", tmp_path / "dmd", "--n", 8, "--out", tmp_path / "s.npz")
    assert code == 0, err
    assert "1 steps, 1 network calls per sample" in err


def test_dmd_trains_under_bf16_autocast_with_finite_terms(tmp_path, cli):
    """`dmd --mixed-precision bf16` (accelerate's autocast of both networks' forward passes; the
    weights stay float32): both turns run and log finite terms."""
    import json
    import math

    code, _, err = cli("dmd", "--teacher", "toy2d", "--train-steps", 9, "--fake-updates", 2, "--batch-size", 64,
                       "--log-every", 3, "--mixed-precision", "bf16", "--out", tmp_path / "d")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "d" / "log.jsonl").read_text().splitlines()]
    terms = {k: v for r in records for k, v in r.items() if k in ("fake_score_loss", "dmd_loss")}
    assert set(terms) == {"fake_score_loss", "dmd_loss"} and all(math.isfinite(v) for v in terms.values())
