"""Distribution-matching distillation (`gdistill dmd`): the generator's update is DMD's gradient, the
two networks train in turns (fake score, then generator), a k-step generator trains on the states
its own sampling reaches, and on toy2d (4 classes, each two opposite modes) a 1-step generator
covers every mode of every class at w = 0 and w = 4, measured against the guided teacher (at w = 4
it is also more spread than the teacher: docs/dmd.md); with DMD2's GAN head (the fake score also a
discriminator) it sits on the teacher's modes at w = 4 too, and the head reads every model family's
features."""
import dataclasses
import math

import pytest
import torch

from gdistill.config import DMDConfig, apply_preset
from gdistill.data import Toy2D
from gdistill.diffusion import (alpha_sigma_like, discriminator_loss, distribution_matching_target, generator_gan_loss,
                                sampling_grid)
from gdistill.diffusion.samplers import SAMPLERS, run_grid
from gdistill.metrics import class_energy_distance
from gdistill.models import denoise_fn, make_student
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


def test_the_gan_terms_are_the_non_saturating_losses():
    real, fake = torch.randn(16), torch.randn(16)
    expected = -(torch.sigmoid(real).log().mean() + (1 - torch.sigmoid(fake)).log().mean())
    assert torch.allclose(discriminator_loss(real, fake), expected, atol=1e-6)
    assert torch.allclose(generator_gan_loss(fake), -torch.sigmoid(fake).log().mean(), atol=1e-6)


def objective_and_networks(generator_steps=1, fake_updates=3, gan_weight=0.0, batch_size=64, **settings):
    teacher, _, _ = load_model("toy2d")
    config = apply_preset(DMDConfig(teacher="toy2d", batch_size=batch_size, generator_steps=generator_steps,
                                    fake_updates=fake_updates, gan_weight=gan_weight, **settings), "toy-mlp", "dmd")
    torch.manual_seed(0)
    generator = make_student(teacher)
    networks = GeneratorAndFakeScore(generator, make_student(teacher), gan_head=gan_weight > 0)
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


def test_with_a_gan_head_each_turn_still_reaches_one_side():
    """The fake score's turn trains it and the head (denoising + classifier loss); the generator's
    turn adds the GAN term, whose gradient goes through the frozen critic to the generator only,
    and leaves every critic weight's requires_grad as it was (a LoRA run freezes some)."""
    objective, networks = objective_and_networks(fake_updates=1, gan_weight=0.5)
    networks.fake_score.time_embedding.requires_grad_(False)  # as a frozen base weight would be
    torch.nn.init.normal_(networks.gan_head[-1].weight, std=0.1)  # past its zero start, as after some training
    flags = {name: p.requires_grad for name, p in networks.named_parameters()}
    critic = [*networks.fake_score.parameters(), *networks.gan_head.parameters()]
    for step, side in ((0, "critic"), (1, "generator")):
        networks.zero_grad(set_to_none=True)
        objective.at_step(step)
        loss, terms = objective(networks, torch.Generator().manual_seed(step), torch.device("cpu"))
        loss.backward()
        reached_generator = any(p.grad is not None for p in networks.generator.parameters())
        reached_critic = [p.grad is not None for p in critic if p.requires_grad]
        if side == "critic":
            assert set(terms) == {"fake_score_loss", "discriminator_loss"}
            assert not reached_generator and all(reached_critic)
        else:
            assert set(terms) == {"dmd_loss", "generator_gan_loss"}
            assert reached_generator and not any(reached_critic)
        assert {name: p.requires_grad for name, p in networks.named_parameters()} == flags
    # the GAN term changes the generator's gradient: the same draw without it differs
    plain = {n: p.grad.clone() for n, p in networks.generator.named_parameters()}
    objective.config = objective.config.__class__(**{**objective.config.__dict__, "gan_weight": 1e-9})
    networks.zero_grad(set_to_none=True)
    objective(networks, torch.Generator().manual_seed(1), torch.device("cpu"))[0].backward()
    assert any(not torch.allclose(plain[n], p.grad) for n, p in networks.generator.named_parameters())


def test_the_gan_head_learns_to_tell_the_data_from_the_generators_samples():
    """Critic turns only: the classifier loss falls from log 4 (a coin) as the head learns that the
    fresh generator's 1-step samples (near each class's mean, between its two modes) are not data."""
    objective, networks = objective_and_networks(fake_updates=1000, gan_weight=0.01, batch_size=256)
    critic = [*networks.fake_score.parameters(), *networks.gan_head.parameters()]
    optimizer = torch.optim.Adam(critic, lr=1e-3)
    losses = []
    for step in range(300):
        objective.at_step(step)
        loss, terms = objective(networks, torch.Generator().manual_seed(step), torch.device("cpu"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(terms["discriminator_loss"])
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    print(f"classifier loss {first:.3f} -> {last:.3f} (log 4 = {math.log(4):.3f})")
    assert abs(first - math.log(4)) < 0.1 and last < 0.8 * math.log(4), (first, last)


def test_with_gan_real_teacher_the_heads_real_images_are_the_guided_teachers_samples():
    """--gan-real teacher: the real class is a batch of the pairs (the guided teacher's DDIM samples)
    at their own labels and w, not the data at the batch's; at high w they lie where the guided
    teacher's do, outside the data's circle (toy2d's modes sit on the unit circle; the 256-step
    teacher's radius at w = 4 is 1.17, docs/dmd.md), and the critic's turn reads them."""
    objective, networks = objective_and_networks(fake_updates=1, gan_weight=0.5, gan_real="teacher",
                                                 regression_pairs=512, regression_steps=16)
    noise, pair_labels, pair_w, samples = objective.pairs
    assert len(noise) == 512 and pair_w.min() >= 0 and pair_w.max() <= 4
    x_data, labels = Toy2D().batch(256, torch.Generator().manual_seed(1))
    w = torch.zeros(256)
    x, real_labels, real_w = objective.gan_real_batch(x_data, labels, w, 256, torch.Generator().manual_seed(2))
    # every row is one pair's (sample, label, w)
    match = (x[:, None] == samples[None]).all(-1) & (real_labels[:, None] == pair_labels[None]) & (real_w[:, None] == pair_w[None])
    assert match.any(1).all()
    high, data_radius = real_w > 3, x_data.norm(dim=1).mean()
    assert high.sum() > 10 and x[high].norm(dim=1).mean() > data_radius + 0.08, (x[high].norm(dim=1).mean(), data_radius)
    # the default keeps DMD2's: the data at the batch's own conditions
    plain, _ = objective_and_networks(fake_updates=1, gan_weight=0.5)
    assert plain.pairs is None
    assert all(a is b for a, b in zip(plain.gan_real_batch(x_data, labels, w, 256, torch.Generator()), (x_data, labels, w)))
    objective.at_step(0)
    loss, terms = objective(networks, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert set(terms) == {"fake_score_loss", "discriminator_loss"} and torch.isfinite(loss)


def test_a_multi_step_generator_trains_on_the_states_its_sampling_reaches():
    objective, networks = objective_and_networks(generator_steps=2)
    generator = torch.Generator().manual_seed(0)
    noise, labels = torch.randn(512, 2), torch.randint(0, 4, (512,))
    w = torch.full((512,), 2.0)
    objective.config = objective.config.__class__(**{**objective.config.__dict__, "batch_size": 512})
    z, t = objective.generator_input(networks, 512, noise, labels, w, generator)
    assert set(t.tolist()) == {0.5}  # the last grid time: its output is the sample
    # the input there is the generator's own first step from the noise, re-noised: a x + s n, n ~ N(0, I)
    with torch.no_grad():
        x = networks.generator(noise, torch.ones(512), labels, w)
    a, s = alpha_sigma_like(networks.generator.schedule, torch.full((512,), 0.5), x)
    n = (z - a * x) / s
    assert abs(n.mean().item()) < 0.1 and abs(n.std().item() - 1) < 0.1
    # a 1-step generator starts from the noise itself
    objective.config = objective.config.__class__(**{**objective.config.__dict__, "generator_steps": 1})
    z, t = objective.generator_input(networks, 512, noise, labels, w, generator)
    assert torch.equal(z, noise) and set(t.tolist()) == {1.0}


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


@pytest.mark.slow
def test_the_gan_head_brings_a_one_step_generator_onto_the_guided_teacher(tmp_path, cli):
    """With --gan-weight 1 (toy2d's best, docs/dmd.md) the over-guiding at w = 4 is gone: samples on
    the modes, none dropped, and several times closer to the 256-step teacher than without the head
    (0.15 at the full 6,000 steps)."""
    code, _, err = cli("dmd", "--teacher", "toy2d", "--train-steps", 3000, "--gan-weight", 1, "--out", tmp_path / "dmd")
    assert code == 0, err
    student, manifest, _ = load_model(tmp_path / "dmd")
    assert manifest["settings"]["gan_weight"] == 1.0
    assert not any(k.startswith(("gan_head.", "fake_score.")) for k in student.state_dict())  # the generator only
    teacher, _, _ = load_model("toy2d")
    labels = cycle_labels(2000, teacher.num_classes)
    for w in (0.0, 4.0):
        one_step = sample(student, labels, 1, w, "renoise", seed=2).samples
        least, near = mode_coverage(one_step, labels)
        distance = class_energy_distance(one_step, sample(teacher, labels, 256, w, seed=1).samples, labels)
        print(f"w={w}: least-covered mode {least:.2f}, within 4 std {near:.2f}; to the 256-step teacher {distance:.4f}")
        # at 3,000 steps (the suite's time): 0.019 and 0.049 to the teacher; no head, 6,000 steps: 0.0002 and 0.15
        assert least > 0.3 and near > 0.75 and distance < 0.08, (w, least, near, distance)


def test_dmd_trains_under_bf16_autocast_with_finite_terms(tmp_path, cli):
    """`dmd --mixed-precision bf16` (accelerate's autocast of both networks' forward passes; the
    weights stay float32): both turns run and log finite terms, the regression term's too."""
    import json
    import math

    code, _, err = cli("dmd", "--teacher", "toy2d", "--train-steps", 9, "--fake-updates", 2, "--batch-size", 64,
                       "--log-every", 3, "--mixed-precision", "bf16", "--regression-weight", 1,
                       "--regression-pairs", 32, "--regression-steps", 4, "--out", tmp_path / "d")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "d" / "log.jsonl").read_text().splitlines()]
    names = ("fake_score_loss", "dmd_loss", "regression_loss")
    terms = {k: v for r in records for k, v in r.items() if k in names}
    assert set(terms) == set(names) and all(math.isfinite(v) for v in terms.values())
    assert not (tmp_path / "d" / "scratch").exists()  # the teacher samples are kept in the run itself


def test_init_starts_the_generator_from_a_student_and_the_fake_score_from_the_teacher(tmp_path, cli):
    """--init RUN (a halving round of the same teacher): the generator starts as that run, the fake
    score from the teacher as without --init (a few-step student does not denoise at every t), and
    the manifest names the run."""
    from gdistill.stages.common import start_from_teacher_or_stage1
    from gdistill.stages.dmd import dmd_networks

    small = ("--batch-size", 16, "--train-steps", 3)
    assert cli("match", "--teacher", "toy2d", *small, "--out", tmp_path / "stage1")[0] == 0
    assert cli("halve", "--from", tmp_path / "stage1", "--rounds", 1, "--start-steps", 2, "--lr", 1e-2, *small,
               "--out", tmp_path / "pd")[0] == 0
    init, init_manifest, _ = load_model(tmp_path / "pd" / "round-1")
    config = DMDConfig(teacher="toy2d", init=str(tmp_path / "pd" / "round-1"), out=str(tmp_path / "dmd"))
    networks, fields = dmd_networks(start_from_teacher_or_stage1(config, "dmd", "distribution matching"))
    teacher = load_model("toy2d")[0].state_dict()  # the w-input's weights are new in either network
    assert all(torch.equal(v, init.state_dict()[k]) for k, v in networks.generator.state_dict().items())
    fake_score = networks.fake_score.state_dict()
    assert all(torch.equal(fake_score[k], v) for k, v in teacher.items())
    assert max((init.state_dict()[k] - v).abs().max().item() for k, v in teacher.items()) > 1e-2  # they differ
    assert fields["init"]["sha256"] == init_manifest["files"]["model.safetensors"]

    code, _, err = cli("dmd", "--teacher", "toy2d", "--init", tmp_path / "pd" / "round-1", "--batch-size", 16,
                       "--train-steps", 6, "--out", tmp_path / "dmd")
    assert code == 0, err
    assert load_model(tmp_path / "dmd")[1]["init"] == fields["init"]


def test_the_teacher_samples_are_made_once_and_kept_for_a_resume(tmp_path):
    """With a scratch folder (the training loop gives one, kept across resumes of the same recipe)
    the pairs are written there, and a later prepare reads the file instead of sampling the teacher
    again: samples changed in the file come back changed."""
    from safetensors.torch import load_file, save_file

    objective, networks = objective_and_networks(regression_weight=1.0, regression_pairs=64, regression_steps=4)
    config = objective.config
    first = DistributionMatching(Toy2D(), objective.teacher, config, 0.0, 4.0)
    first.scratch = tmp_path
    first.prepare(torch.device("cpu"), networks, None)
    kept = load_file(str(tmp_path / DistributionMatching.PAIRS_FILE))
    assert all(torch.equal(kept[name], part) for name, part in zip(DistributionMatching.PAIR_PARTS, first.pairs))
    assert all(torch.equal(a, b) for a, b in zip(first.pairs, objective.pairs))  # the same as made without a folder
    save_file({**kept, "sample": kept["sample"] + 1.0}, str(tmp_path / DistributionMatching.PAIRS_FILE))
    resumed = DistributionMatching(Toy2D(), objective.teacher, config, 0.0, 4.0)
    resumed.scratch = tmp_path
    resumed.prepare(torch.device("cpu"), networks, None)
    assert torch.equal(resumed.pairs[3], first.pairs[3] + 1.0) and torch.equal(resumed.pairs[1], first.pairs[1])


def test_a_run_keeps_its_teacher_pairs_and_a_later_run_takes_them(tmp_path, cli):
    """A dmd run that made teacher pairs keeps them (their sha256 in its manifest); --pairs-from
    gives a later run of the same teacher those very pairs, whatever its seed, with their count and
    steps in its settings, and records the run they came from. Pairs of a run without them, of
    another start, for another w range, or changed on disk are refused with one line, and no run is
    left behind."""
    from safetensors.torch import load_file, save_file

    from gdistill.files import sha256_file

    pairs = DistributionMatching.PAIRS_FILE
    small = ("--train-steps", 4, "--fake-updates", 1, "--batch-size", 16)
    assert cli("dmd", "--teacher", "toy2d", *small, "--regression-weight", 1, "--regression-pairs", 24,
               "--regression-steps", 3, "--out", tmp_path / "first")[0] == 0
    first = load_model(tmp_path / "first")[1]
    assert first["files"][pairs] == sha256_file(tmp_path / "first" / pairs)
    made = load_file(str(tmp_path / "first" / pairs))
    assert len(made["noise"]) == 24

    code, _, err = cli("dmd", "--teacher", "toy2d", *small, "--gan-weight", 1, "--gan-real", "teacher", "--seed", 5,
                       "--pairs-from", tmp_path / "first", "--out", tmp_path / "second")
    assert code == 0, err
    second = load_model(tmp_path / "second")[1]
    taken = load_file(str(tmp_path / "second" / pairs))
    assert all(torch.equal(taken[name], made[name]) for name in DistributionMatching.PAIR_PARTS)
    assert (second["settings"]["regression_pairs"], second["settings"]["regression_steps"]) == (24, 3)
    assert second["pairs_from"]["sha256"] == first["files"]["model.safetensors"]

    assert cli("dmd", "--teacher", "toy2d", *small, "--out", tmp_path / "no-pairs")[0] == 0
    assert cli("match", "--teacher", "toy2d", *small[:2], "--batch-size", 16, "--out", tmp_path / "stage1")[0] == 0
    refusals = [(("--teacher", "toy2d", "--pairs-from", tmp_path / "no-pairs"), "keeps no teacher pairs"),
                (("--teacher", tmp_path / "stage1", "--pairs-from", tmp_path / "first"), "pass a dmd run of this teacher"),
                (("--teacher", "toy2d", "--w-max", 2, "--pairs-from", tmp_path / "first"), "pass --w-min 0.0 --w-max 4.0")]
    save_file({**made, "sample": made["sample"] + 1}, str(tmp_path / "second" / pairs))
    refusals.append((("--teacher", "toy2d", "--pairs-from", tmp_path / "second"), "does not match its recorded sha256"))
    for args, message in refusals:
        code, _, err = cli("dmd", *args, *small, "--regression-weight", 1, "--out", tmp_path / "refused")
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not (tmp_path / "refused").exists() and not (tmp_path / ".refused.partial").exists()


def test_the_regression_term_pulls_the_generator_onto_the_teachers_ode_map():
    """DMD's regression term: the pairs are the guided teacher's own deterministic DDIM samples from
    their noise (the teacher sampled at the pair's w gives the same), and generator turns with it
    bring the 1-step generator's output from fresh noise (not a pair's) onto the teacher's sample
    from that noise: the fresh generator's output (near each class's mean, between its two modes) is
    far from it."""
    teacher, _, _ = load_model("toy2d")
    objective, networks = objective_and_networks(fake_updates=1, batch_size=128)
    objective.config = dataclasses.replace(objective.config, regression_weight=10.0, regression_pairs=256,
                                           regression_steps=16)
    objective.prepare(torch.device("cpu"), networks, None)
    noise, labels, w, target = objective.pairs
    assert len(noise) == 256 and set(w.unique().tolist()) >= {0.0, 4.0}  # the ends of the range too
    end = w == 4.0
    ddim = run_grid(denoise_fn(teacher, labels[end], w[end]), noise[end], teacher.schedule, sampling_grid(16), 1 / 16,
                    SAMPLERS["deterministic"])
    assert torch.allclose(target[end], ddim, atol=1e-5)

    fresh = torch.Generator().manual_seed(1234)
    noise, labels = torch.randn(512, 2, generator=fresh), torch.randint(0, 4, (512,), generator=fresh)
    w = 4 * torch.rand(512, generator=fresh)
    with torch.no_grad():
        ddim = run_grid(denoise_fn(teacher, labels, w), noise, teacher.schedule, sampling_grid(16), 1 / 16,
                        SAMPLERS["deterministic"])

    def distance():
        with torch.no_grad():
            return (networks.generator(noise, torch.ones(512), labels, w) - ddim).pow(2).sum(1).mean().item()

    before = distance()
    optimizer = torch.optim.Adam(networks.generator.parameters(), lr=1e-3)
    for step in range(150):
        objective.updates_generator = True  # generator turns only
        loss, terms = objective(networks, torch.Generator().manual_seed(step), torch.device("cpu"))
        assert set(terms) == {"dmd_loss", "regression_loss"}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    after = distance()
    print(f"mean squared distance to the teacher's ODE sample from the same noise: {before:.3f} -> {after:.3f}")
    assert before > 0.5 and after < 0.3 * before, (before, after)


def tiny_teacher(family: str, folder):
    """A teacher of each model family, and a batch of its conditions."""
    from gdistill.models.sd_pipeline import load_pipeline_teacher
    from tests.sd_tiny import build_tiny_dit, build_tiny_sd, build_tiny_sd3

    if family in ("toy2d", "digits"):
        teacher, _, _ = load_model(family)
        return teacher, torch.tensor([0, 1, 2])
    build = {"sd": build_tiny_sd, "sd3": build_tiny_sd3, "dit": build_tiny_dit}[family]
    teacher, _, _ = load_pipeline_teacher(str(build(folder)))
    teacher.with_latent_size(8)
    if family == "dit":
        return teacher, torch.tensor([0, 1, 207])
    return teacher, teacher.null_embedding.expand(3, *teacher.null_embedding.shape)


@pytest.mark.parametrize("family", ["toy2d", "digits", "sd", "sd3", "dit"])
def test_every_model_family_gives_the_gan_head_its_features(family, tmp_path):
    """The head reads each family's feature layer (toy MLP's last residual stream, the UNets' mid
    block, the transformers' middle block): one forward gives x and a logit per example, and the
    logit depends on each example's own input. Frozen, the critic passes gradients to the input only."""
    teacher, condition = tiny_teacher(family, tmp_path)
    torch.manual_seed(0)
    networks = GeneratorAndFakeScore(make_student(teacher), make_student(teacher), gan_head=True)
    torch.nn.init.normal_(networks.gan_head[-1].weight)  # past its zero start
    z = torch.randn(3, *teacher.data_shape, requires_grad=True)
    t, w = torch.tensor([0.3, 0.5, 0.9]), torch.tensor([0.0, 1.0, 4.0])
    with networks.critic_frozen():
        x, logit = networks("critic", z, t, condition, w)
    assert x.shape == z.shape and logit.shape == (3,) and torch.isfinite(logit).all()
    logit[1].backward()
    per_example = z.grad.flatten(1).abs().sum(1)
    assert per_example[1] > 0 and per_example[0] == 0 and per_example[2] == 0
    assert all(p.grad is None for p in [*networks.fake_score.parameters(), *networks.gan_head.parameters()])
