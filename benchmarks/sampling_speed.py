"""Sampling speed: a w-conditioned student at N steps against the guided teacher at M steps.

    python benchmarks/sampling_speed.py                 # about 2 minutes on 2 CPU cores
    python benchmarks/sampling_speed.py --device cuda   # on a GPU
    python benchmarks/sampling_speed.py --device cuda --compile reduce-overhead   # torch.compile with CUDA graphs

Uses the shipped digits teacher and a student made from it by `make_student` (the Stage-1
architecture: the teacher plus the w-embedding; its weights do not change its speed). For each
sampler run it also times the bare model forwards the run makes (the network and its x-from-prediction
arithmetic: the same count, batch and input shape, nothing else), so

    overhead = 1 - network-only time / sampling time

is the share of time spent outside the network calls (DDIM arithmetic, conversions, guidance,
noise). The speed-up of the student at N steps over the teacher at M steps is compared with the
ratio of calls, 2M / N. Writes benchmarks/results/sampling_speed.md.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from report import command_line, compile_in_place, device_name, sync, write_report  # benchmarks/report.py (the script's folder is on sys.path)

from gdistill.models import make_student
from gdistill.run_folder import load_model
from gdistill.tasks.sample import cycle_labels, sample

HERE = Path(__file__).resolve().parent


def paired_median_seconds(fn_a, fn_b, device, repeats: int) -> tuple[float, float]:
    """Median times of fn_a and fn_b, timed alternately so that drift in the machine's speed
    (other load, clock changes) affects both alike."""
    fn_a(), fn_b()  # warm-up (allocations, kernels)
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def network_only(model, labels, steps: int, device) -> Callable[[], None]:
    """The sampler's network forwards alone: `steps` calls, at batch B for a student and 2B
    (conditional and unconditional together) for a guided teacher."""
    copies = 1 if model.w_conditioned else 2
    z = torch.randn(copies * len(labels), *model.data_shape, device=device)
    cond = labels.repeat(copies).to(device)
    w = torch.ones(len(cond), device=device) if model.w_conditioned else None

    @torch.no_grad()
    def run():
        for i in range(steps):  # the model's forward: the network and its x-from-prediction arithmetic
            model(z, torch.full((len(cond),), 1 - i / steps, device=device), cond, w)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--student-steps", default="1,2,4,8")
    parser.add_argument("--teacher-steps", default="4,8,16,32")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", default=None, metavar="MODE",
                        help="torch.compile both models' forward first: default, reduce-overhead (CUDA graphs), max-autotune")
    parser.add_argument("--out", default=str(HERE / "results" / "sampling_speed.md"))
    args = parser.parse_args()
    device = torch.device(args.device)

    teacher, _, _ = load_model("digits")
    student = make_student(teacher)
    teacher, student = teacher.to(device), student.to(device)
    if args.compile:  # as `gdistill sample --compile` does; the warm-up call of each run compiles
        compile_in_place((teacher, student), args.compile)
    labels = cycle_labels(args.batch, teacher.num_classes)

    rows = []
    runs = [("student", student, int(n)) for n in args.student_steps.split(",")]
    runs += [("teacher (guided)", teacher, int(m)) for m in args.teacher_steps.split(",")]
    for name, model, steps in runs:
        sampling, network = paired_median_seconds(
            lambda: sample(model, labels, steps, 1.0, data_range=(-1, 1), batch_size=args.batch, device=device),
            network_only(model, labels, steps, device), device, args.repeats)
        calls = steps * (1 if model.w_conditioned else 2)
        rows.append({"model": name, "steps": steps, "calls": calls, "images_per_s": args.batch / sampling,
                     "network_images_per_s": args.batch / network, "overhead": 1 - network / sampling,
                     "seconds": sampling})
        print(rows[-1], flush=True)

    lines = ["# Sampling speed: student against guided teacher", "",
             f"Command: `{command_line(parser, args, 'benchmarks/sampling_speed.py')}`", "",
             f"Device: {device_name(device)}; torch {torch.__version__}; digits UNet (8x8), batch {args.batch}, "
             f"median of {args.repeats} runs, sampling and bare forwards timed alternately"
             + (f"; both models torch.compiled (mode {args.compile})" if args.compile else "; eager") + ".", "",
             "| model | steps | calls / image | images / s | network-only images / s | overhead outside the network |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['steps']} | {r['calls']} | {r['images_per_s']:.0f} | "
              f"{r['network_images_per_s']:.0f} | {100 * r['overhead']:.1f} % |" for r in rows]
    lines += ["", "Speed-up of the student at N steps over the guided teacher at M steps, against the ratio of calls 2M / N:", "",
              "| student N | teacher M | calls ratio 2M / N | measured speed-up | measured / ratio |", "|---|---|---|---|---|"]
    for s in (r for r in rows if r["model"] == "student"):
        for t in (r for r in rows if r["model"] != "student"):
            ratio, speedup = t["calls"] / s["calls"], t["seconds"] / s["seconds"]
            lines.append(f"| {s['steps']} | {t['steps']} | {ratio:g} | {speedup:.1f} | {speedup / ratio:.2f} |")
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
