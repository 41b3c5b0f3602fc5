"""Training throughput: gdistill's shared training loop against a minimal hand-written PyTorch loop.

    python benchmarks/training_throughput.py        # about 5 minutes on 2 CPU cores

On a machine with a GPU both loops run on it (accelerate's default device, taken by the bare loop
too); the batch is drawn on the CPU from a seeded generator and moved, in both loops alike.

For teach, match and halve on the digits UNet (batch 64), runs the real stage (its loss, the shared
loop with accelerate, EMA, rich progress, JSON-lines log) for --steps steps and reads its steps/s
from the run's log.jsonl, then runs a bare loop written here that computes the same loss with the
same formulas on the same model and does the same optimizer work (Adam, gradient clipping at 1.0,
EMA where the stage keeps one) with nothing else. overhead = 1 - loop steps/s / bare steps/s.
Resume checkpoints (every 500 steps by default) are not reached in these short runs.
Writes benchmarks/results/training_throughput.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from report import command_line, device_name, sync, write_report  # benchmarks/report.py (the script's folder is on sys.path)

from gdistill.config import HalveConfig, MatchConfig, TeachConfig
from gdistill.data import load_dataset
from gdistill.diffusion import alpha_sigma_like, diffuse, halving_target_t, weighted_x_loss
from gdistill.models import denoise_fn, guided_predict_x, make_student
from gdistill.run_folder import load_model
from gdistill.stages.halve import halve
from gdistill.stages.match import match
from gdistill.stages.teach import teach
from gdistill.train import ShadowWeights

HERE = Path(__file__).resolve().parent
BATCH = 64


def logged_steps_per_s(run: Path) -> float:
    """Mean steps/s over the run's log lines, the first (warm-up) left out."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()][1:]
    return sum(r["steps_per_s"] for r in records) / len(records)


def bare_steps_per_s(model, loss_of_batch, steps: int, ema_decay: float, device: torch.device,
                     warmup: int = 10) -> float:
    """The minimal loop: draw, loss, backward, clip, Adam, EMA. Nothing else."""
    model.to(device).train().requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    ema = ShadowWeights(model, ema_decay) if ema_decay else None
    generator = torch.Generator().manual_seed(0)
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        loss = loss_of_batch(model, generator, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if ema is not None:
            ema.update(model, step + 1)
    sync(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default=str(HERE / "results" / "training_throughput.md"))
    args = parser.parse_args()
    steps, common = args.steps, dict(train_steps=args.steps, batch_size=BATCH, log_every=25)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what accelerate picks
    data = load_dataset("digits")
    teacher, _, _ = load_model("digits")
    teacher.to(device)
    schedule = teacher.schedule
    rows = []

    def noisy_batch(generator, device):
        x, labels = data.batch(BATCH, generator)
        eps = torch.randn(x.shape, generator=generator)
        t = schedule.sample_t(BATCH, generator)
        a, s = alpha_sigma_like(schedule, t, x)
        w = 4 * torch.rand(BATCH, generator=generator)
        return [v.to(device) for v in (x, labels, t, diffuse(x, eps, a, s), w)]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # teach: v-MSE on the data, labels dropped to the null class with probability 0.1
        run = teach(TeachConfig(dataset="digits", out=str(tmp / "teacher"), **common))

        def teach_loss(model, g, device):
            x, labels, t, z, _ = noisy_batch(g, device)
            drop = (torch.rand(BATCH, generator=g) < 0.1).to(device)
            labels = torch.where(drop, torch.full_like(labels, model.null_label), labels)
            return weighted_x_loss(model(z, t, labels), x, schedule.log_snr(t), "v-mse")

        same_model, _, _ = load_model(run)  # its weights do not change its speed
        rows.append(("teach", logged_steps_per_s(run), bare_steps_per_s(same_model, teach_loss, steps, 0.999, device)))

        # match: the teacher's guided x (one batched 2B forward, no grad) as the target
        run = match(MatchConfig(teacher="digits", out=str(tmp / "stage1"), **common))

        def match_loss(model, g, device):
            _, labels, t, z, w = noisy_batch(g, device)
            with torch.no_grad():
                target = guided_predict_x(teacher, z, t, labels, w)
            return weighted_x_loss(model(z, t, labels, w), target, schedule.log_snr(t), "snr-trunc")

        rows.append(("match", logged_steps_per_s(run), bare_steps_per_s(make_student(teacher), match_loss, steps, 0.999, device)))

        # halve (first round, 256 -> 128): two teacher DDIM steps give the target x~
        stage1 = load_model(run)[0].to(device)
        (round_run,) = halve(HalveConfig(from_run=str(run), out=str(tmp / "pd"), rounds=1, **common))

        def halve_loss(model, g, device):
            x, labels, _, _, w = noisy_batch(g, device)
            eps = torch.randn(x.shape, generator=g).to(device)
            t = (torch.randint(1, 129, (BATCH,), generator=g).float() / 128).to(device)
            a, s = alpha_sigma_like(schedule, t, x)
            z = diffuse(x, eps, a, s)
            with torch.no_grad():
                target = halving_target_t(schedule, denoise_fn(stage1, labels, w), z, t, 1 / 128)
            return weighted_x_loss(model(z, t, labels, w), target, schedule.log_snr(t), "snr-trunc")

        rows.append(("halve", logged_steps_per_s(round_run), bare_steps_per_s(make_student(stage1), halve_loss, steps, 0.0, device)))

    lines = ["# Training throughput: gdistill's loop against a bare PyTorch loop", "",
             f"Command: `{command_line(parser, args, 'benchmarks/training_throughput.py')}`", "",
             f"Device: {device_name(device)}; torch {torch.__version__}; digits UNet (8x8), "
             f"batch {BATCH}, {steps} steps each.", "",
             "| stage | gdistill steps / s | bare loop steps / s | overhead |", "|---|---|---|---|"]
    lines += [f"| {name} | {ours:.2f} | {bare:.2f} | {100 * (1 - ours / bare):.1f} % |" for name, ours, bare in rows]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
