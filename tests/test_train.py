"""The shared training loop: resume after a crash is bit-identical, a NaN stops with a clear message."""
import dataclasses
import json

import pytest
import torch
import yaml

from gdistill.data import Toy2D
from gdistill.diffusion import alpha_sigma_like, diffuse, weighted_x_loss
from gdistill.errors import GdistillError, TrainingDiverged
from gdistill.models import build_denoiser
from gdistill.train import LoopSettings, train

CONFIG = {"kind": "toy-mlp", "dim": 2, "num_classes": 4, "hidden": 32, "depth": 2,
          "schedule": {"name": "cosine"}, "parameterization": "v"}
SETTINGS = LoopSettings(steps=60, lr=1e-3, ema_decay=0.9, grad_clip=1.0, seed=3, log_every=10,
                        checkpoint_every=20, lr_decay=True)


def _loss_fn(crash_at=None, nan_at=None):
    data, calls = Toy2D(), [0]

    def loss_fn(model, generator, device):
        calls[0] += 1
        if calls[0] == crash_at:
            raise RuntimeError("simulated crash")
        x, labels = data.batch(32, generator)
        eps = torch.randn(x.shape, generator=generator)
        t = model.schedule.sample_t(32, generator)
        x, labels, eps, t = x.to(device), labels.to(device), eps.to(device), t.to(device)  # a GPU where accelerate picks one
        a, s = alpha_sigma_like(model.schedule, t, x)
        loss = weighted_x_loss(model(diffuse(x, eps, a, s), t, labels), x, model.schedule.log_snr(t), "v-mse")
        if calls[0] == nan_at:
            loss = loss * float("nan")
        return loss, {"loss": loss.item()}

    return loss_fn


def _fresh_model():
    torch.manual_seed(0)
    return build_denoiser(CONFIG)


def test_resume_after_crash_is_bit_identical(tmp_path):
    model, ema = train(_fresh_model(), _loss_fn(), SETTINGS, tmp_path / "a", "a", {"run": "fp"})
    work = tmp_path / "b"
    with pytest.raises(RuntimeError, match="simulated"):
        train(_fresh_model(), _loss_fn(crash_at=47), SETTINGS, work, "b", {"run": "fp"})
    assert (work / "resume" / "state.pt").is_file()
    resumed, resumed_ema = train(_fresh_model(), _loss_fn(), SETTINGS, work, "b", {"run": "fp"})
    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(ema.state_dict().values(), resumed_ema.state_dict().values()):
        assert torch.equal(a, b)
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (work / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 60


def test_an_objectives_scratch_folder_is_kept_for_the_same_recipe_only(tmp_path):
    """What an objective makes once per run (DMD's teacher samples) goes in `scratch`: a second
    attempt of the same recipe finds it, one of another recipe starts with an empty folder (here
    no checkpoint is written, as when a run stops before its first)."""
    from gdistill.train import Objective

    class KeepsAFile(Objective):
        def __init__(self):
            self.loss_fn, self.found = _loss_fn(), None

        def prepare(self, device, model, ema):
            made = self.scratch / "made.txt"
            self.found = made.read_text() if made.exists() else None
            made.write_text("made once")

        def __call__(self, model, generator, device):
            return self.loss_fn(model, generator, device)

    settings = dataclasses.replace(SETTINGS, steps=3, checkpoint_every=100)
    found = []
    for recipe in ({"lr": 1e-3}, {"lr": 1e-3}, {"lr": 3e-4}):
        objective = KeepsAFile()
        train(_fresh_model(), objective, settings, tmp_path, "x", recipe)
        found.append(objective.found)
    assert found == [None, "made once", None]


def test_checkpoint_of_another_command_is_refused_naming_the_difference(tmp_path):
    with pytest.raises(RuntimeError):
        train(_fresh_model(), _loss_fn(crash_at=30), SETTINGS, tmp_path, "x", {"lr": 1e-3, "seed": 3})
    with pytest.raises(GdistillError, match=r"checkpoint \(step 20\) of another command \(lr: 0.001 then, 0.0003 now\).*--overwrite"):
        train(_fresh_model(), _loss_fn(), SETTINGS, tmp_path, "x", {"lr": 3e-4, "seed": 3})


def test_checkpoint_of_another_lr_schedule_is_refused(tmp_path):
    constant = dataclasses.replace(SETTINGS, lr_decay=False)
    with pytest.raises(RuntimeError):
        train(_fresh_model(), _loss_fn(crash_at=30), constant, tmp_path, "x", {"run": "fp"})
    with pytest.raises(GdistillError, match=r"lr_decay: False then, True now"):
        train(_fresh_model(), _loss_fn(), SETTINGS, tmp_path, "x", {"run": "fp"})


def test_a_crash_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """Fault injection: the second checkpoint dies after its weights were written, before its state
    file; the first checkpoint still loads (its files match their recorded sha256), and the resumed
    run ends bit-identical. Then a crash
    between the two renames that swap a checkpoint in (the old one moved aside, the new one not yet
    in place) is survived too."""
    import gdistill.train as loop

    reference, _ = train(_fresh_model(), _loss_fn(), SETTINGS, tmp_path / "ref", "r", {"run": "fp"})
    work = tmp_path / "faulty"
    real_save, saves = loop._atomic_torch_save, [0]

    def dying_save(obj, path):
        saves[0] += 1
        if saves[0] == 2:
            raise KeyboardInterrupt("killed while saving")
        real_save(obj, path)

    monkeypatch.setattr(loop, "_atomic_torch_save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(_fresh_model(), _loss_fn(), SETTINGS, work, "f", {"run": "fp"})
    monkeypatch.setattr(loop, "_atomic_torch_save", real_save)
    assert torch.load(work / "resume" / "state.pt", weights_only=False)["step"] == 20
    (work / "resume").rename(work / ".resume.old")  # as if killed between publish_dir's renames
    resumed, _ = train(_fresh_model(), _loss_fn(), SETTINGS, work, "f", {"run": "fp"})
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_a_damaged_checkpoint_is_refused_not_loaded(tmp_path):
    """Checkpoint files are checked against the sha256 recorded in the state file before resuming."""
    with pytest.raises(RuntimeError, match="simulated"):
        train(_fresh_model(), _loss_fn(crash_at=30), SETTINGS, tmp_path, "d", {"run": "fp"})
    weights = tmp_path / "resume" / "ema.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(GdistillError, match=r"damaged \(ema.safetensors is missing or does not match its recorded sha256\).*--overwrite"):
        train(_fresh_model(), _loss_fn(), SETTINGS, tmp_path, "d", {"run": "fp"})
    (tmp_path / "resume" / "state.pt").write_bytes(b"truncated")
    with pytest.raises(GdistillError, match=r"damaged \(state.pt does not load"):
        train(_fresh_model(), _loss_fn(), SETTINGS, tmp_path, "d", {"run": "fp"})


def test_nan_loss_stops_with_step_and_terms(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 5 .*seed 3"):
        train(_fresh_model(), _loss_fn(nan_at=5), SETTINGS, tmp_path, "n", {"run": "fp"})


def _tensorboard_scalars(folder) -> dict[str, dict[int, float]]:
    """tag -> step -> value, read from the TensorBoard event files under `folder` (TFRecord frames:
    length, its CRC, an Event protobuf, its CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    for path in folder.rglob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_report_to_tensorboard_gets_the_logs_records(tmp_path, cli):
    """--report-to tensorboard writes the log.jsonl records (loss, lr, steps/s, the objective's terms)
    as TensorBoard scalars under RUN/trackers/, at the same steps; an unknown tracker is one line."""
    import json

    code, _, err = cli("match", "--teacher", "toy2d", "--train-steps", 20, "--log-every", 10,
                       "--report-to", "tensorboard", "--out", tmp_path / "m")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    scalars = _tensorboard_scalars(tmp_path / "m" / "trackers")
    for name in ("loss", "lr", "match_loss"):
        assert scalars[name] == pytest.approx({r["step"]: r[name] for r in records}, rel=1e-6), name
    code, _, err = cli("match", "--teacher", "toy2d", "--report-to", "tensorboard,mlflow", "--out", tmp_path / "x")
    assert code == 2 and "--report-to takes tensorboard, wandb" in err and not (tmp_path / "x").exists()


def test_compile_trains_as_eager_does(tmp_path, cli):
    """--compile (torch.compile of the student's and the frozen teacher's forward, in place) trains as
    the eager run does, up to float rounding: the same logged losses and weights (Adam turns rounding
    noise in near-zero gradients into steps of up to lr, 3e-4 here), and a run folder of the same keys."""
    import json

    from safetensors.torch import load_file

    common = ["match", "--teacher", "toy2d", "--train-steps", 30, "--batch-size", 128, "--log-every", 10]
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        code, _, err = cli(*common, *extra, "--out", tmp_path / name)
        assert code == 0, err
    losses = {name: [json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
              for name in ("eager", "compiled")}
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-3)
    eager, compiled = (load_file(tmp_path / name / "raw.safetensors") for name in ("eager", "compiled"))
    assert eager.keys() == compiled.keys()
    for key in eager:
        assert torch.allclose(compiled[key], eager[key], atol=1e-4), (key, (compiled[key] - eager[key]).abs().max())


def test_compiled_sampling_gives_the_eager_samples(tmp_path, cli):
    """`sample --compile` (the model's forward compiled in place, mode reduce-overhead: CUDA graphs on
    a GPU, the default compile on this CPU) draws the eager run's samples."""
    import numpy as np

    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        code, _, err = cli("sample", "--from", "toy2d", "--steps", 8, "--w", 2, "--n", 256, *extra,
                           "--out", tmp_path / f"{name}.npz")
        assert code == 0, err
    eager, compiled = (np.load(tmp_path / f"{name}.npz")["samples"] for name in ("eager", "compiled"))
    assert np.allclose(compiled, eager, atol=1e-5), np.abs(compiled - eager).max()


def test_lr_warms_up_then_decays_and_the_run_records_it(tmp_path, cli):
    code, _, err = cli("match", "--teacher", "toy2d", "--train-steps", 4, "--batch-size", 32, "--warmup-steps", 2,
                       "--log-every", 1, "--lr", 1e-3, "--out", tmp_path / "m")
    assert code == 0, err
    logged = [json.loads(line)["lr"] for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    # after step k the lr is lr min(1, (k + 1) / warmup) (1 - k / steps): warm-up and Stage 1's decay
    assert logged == pytest.approx([7.5e-4, 5e-4, 2.5e-4, 0.0])
    assert yaml.safe_load((tmp_path / "m" / "manifest.yaml").read_text())["settings"]["warmup_steps"] == 2
