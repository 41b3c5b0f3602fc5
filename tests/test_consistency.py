"""Consistency distillation (`gdistill consistency`): the formulas against diffusers' LCMScheduler,
and a toy2d run whose few-step samples are measured against the 256-step guided teacher at every w
of the range (class-conditional energy distance, 2,000 samples, as tests/test_distillation.py)."""
import pytest
import torch

from gdistill.diffusion import CosineSchedule, DiscreteSchedule, consistency_grid, consistency_output, consistency_scalings
from gdistill.metrics import class_energy_distance
from gdistill.run_folder import load_model
from gdistill.tasks.sample import cycle_labels, sample


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 6, 8])
def test_the_sampling_grid_and_scalings_are_lcm_schedulers(steps):
    from diffusers import LCMScheduler

    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", original_inference_steps=50)
    scheduler.set_timesteps(steps)
    times = torch.tensor(consistency_grid(steps, 50))
    # our t -> SD's step index (DiscreteSchedule.model_time) is the scheduler's timestep
    assert DiscreteSchedule().model_time(times).long().tolist() == scheduler.timesteps.tolist()
    for timestep in scheduler.timesteps.tolist():
        c_skip, c_out = consistency_scalings(torch.tensor([float(timestep)]))
        expected = scheduler.get_scalings_for_boundary_condition_discrete(timestep)
        assert (c_skip.item(), c_out.item()) == pytest.approx(expected, rel=1e-12)


def test_the_consistency_function_is_the_identity_at_t_zero():
    z, x = torch.randn(4, 2), torch.randn(4, 2)
    for schedule in (CosineSchedule(), DiscreteSchedule()):
        assert torch.equal(consistency_output(schedule, z, x, torch.zeros(4)), z)
        # and is (almost) the prediction itself away from 0
        f = consistency_output(schedule, z, x, torch.full((4,), 0.5))
        assert torch.allclose(f, x, atol=1e-4)


@pytest.mark.slow
def test_a_consistency_student_of_toy2d_samples_in_few_steps(tmp_path, cli):
    # the defaults but 1,500 of the 8,000 steps: the suite's time
    code, _, err = cli("consistency", "--teacher", "toy2d", "--train-steps", 1500, "--out", tmp_path / "cd")
    assert code == 0, err
    student, manifest, _ = load_model(tmp_path / "cd")
    assert manifest["kind"] == "consistency" and manifest["solver_steps"] == 50 and manifest["w_range"] == [0.0, 4.0]
    assert manifest["settings"]["loss"] == "huber"
    assert [e["kind"] for e in manifest["lineage"]] == ["teacher"] and manifest["teacher"] == "toy2d"
    teacher, _, _ = load_model("toy2d")
    labels = cycle_labels(2000, teacher.num_classes)
    for w in (0.0, 1.0, 2.0, 4.0):
        reference = sample(teacher, labels, 256, w, seed=1).samples  # noise floor 0.0014-0.0019 (docs/consistency.md)
        teacher_4 = class_energy_distance(sample(teacher, labels, 4, w, seed=2).samples, reference, labels)
        distance = {k: class_energy_distance(sample(student, labels, k, w, "consistency", seed=2, solver_steps=50).samples,
                                             reference, labels) for k in (1, 4)}
        print(f"w={w}: to the 256-step guided teacher: teacher 4 steps {teacher_4:.4f}, "
              f"consistency 1 step {distance[1]:.4f}, 4 steps {distance[4]:.4f}")
        assert distance[4] < 0.06 and distance[1] < 0.06, (w, distance)
        if w == 4.0:  # where few guided DDIM steps fail worst, one consistency step beats four of them
            assert distance[1] < teacher_4 / 2, (distance, teacher_4)
    # `sample` picks the run's own sampler and 4 steps
    code, _, err = cli("sample", "--from", tmp_path / "cd", "--n", 8, "--out", tmp_path / "s.npz")
    assert code == 0, err
    assert "4 steps, 4 network calls per sample" in err
