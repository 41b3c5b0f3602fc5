"""Digits benchmark: the full built-in pipeline, then guided-teacher DDIM against distilled students.

    python benchmarks/digits_pipeline.py            # about 35 minutes on 2 CPU cores

Runs, through the real CLI, `gdistill match --teacher digits`, `gdistill halve --rounds 6` (256 -> 4
steps) and 2 more rounds (-> 2, 1 steps), timing each. Then for each w it samples the shipped teacher
with guided DDIM at 256/64/16/8/4 steps (2 calls a step) and the students at 8/4/2/1 steps (1 call a
step), all from the same seeds and labels, and reports:
  - accuracy: the fraction of samples that the shipped digits classifier (a small CNN trained on the
    real digits, gdistill.metrics.digits; held-out accuracy printed with the table) labels as the
    requested class;
  - digits-FD to T256: Fréchet distance between the classifier's 64-dim penultimate features of the
    samples and of the 256-step guided teacher's samples at the same w, from other seeds (not
    Inception FID); the teacher-256 row is its noise floor;
  - ED to T256: class-conditional energy distance (64-dim pixel space, averaged over the 10 classes)
    to the 256-step guided teacher's samples at the same w, from other seeds; the teacher-256 row
    is the noise floor (it scatters around zero).
Writes benchmarks/results/digits_pipeline.md (the table and the command) and sample grids.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from report import write_report  # benchmarks/report.py (the script's folder is on sys.path)

from gdistill.metrics import class_energy_distance
from gdistill.metrics.digits import DigitsClassifier
from gdistill.run import load_model
from gdistill.tasks.sample import cycle_labels, image_grid, sample

HERE = Path(__file__).resolve().parent


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def training_seconds(run_dir: Path) -> float:
    """A run's training time, from its log.jsonl (so reused runs report it too)."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    first = records[0]
    return records[-1]["time"] - first["time"] + first["step"] / first["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/bench-digits", help="where the runs go (reused if complete)")
    parser.add_argument("--out", default=str(HERE / "results"), help="where the table and grids go")
    parser.add_argument("--n", type=int, default=500, help="samples per (model, steps, w)")
    parser.add_argument("--w", default="0,1,2,4", help="guidance strengths (paper's w)")
    parser.add_argument("--teacher-steps", default="256,64,16,8,4")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    grids = out / "digits"
    grids.mkdir(parents=True, exist_ok=True)
    ws = [float(w) for w in args.w.split(",")]
    gd = [sys.executable, "-m", "gdistill"]

    if not (work / "stage1").exists():
        run(gd + ["match", "--teacher", "digits", "--out", str(work / "stage1")])
    if not (work / "pd" / "round-6").exists():
        run(gd + ["halve", "--from", str(work / "stage1"), "--rounds", "6", "--out", str(work / "pd")])
    if not (work / "pd" / "round-8").exists():
        run(gd + ["halve", "--from", str(work / "pd" / "round-6"), "--rounds", "2", "--out", str(work / "pd")])
    timings = {"match (stage 1)": training_seconds(work / "stage1")}
    for k in range(1, 9):
        timings[f"halve round {k} ({512 >> k} -> {256 >> k} steps)"] = training_seconds(work / "pd" / f"round-{k}")
    stage1_and_6_rounds = sum(list(timings.values())[:7])

    classifier = DigitsClassifier()
    teacher, _, _ = load_model("digits")
    models = [("teacher (guided DDIM)", teacher, int(s)) for s in args.teacher_steps.split(",")]
    for round_no in (5, 6, 7, 8):
        student, manifest, _ = load_model(work / "pd" / f"round-{round_no}")
        models.append((f"student round {round_no}", student, manifest["steps"]))
    labels = cycle_labels(args.n, 10)
    rows = []
    for w in ws:
        reference = sample(teacher, labels, 256, w, seed=10_000, data_range=(-1, 1)).samples
        for name, model, steps in models:
            result = sample(model, labels, steps, w, seed=1, data_range=(-1, 1))
            rows.append({"model": name, "steps": steps, "w": w, "calls": result.calls_per_image,
                         "accuracy": classifier.accuracy(result.samples, labels),
                         "fd": classifier.digits_fd(result.samples, reference),
                         "ed": class_energy_distance(result.samples, reference, labels),
                         "ms": result.seconds / args.n * 1000})
            slug = f"{name.split()[0]}-{steps}steps-w{w:g}"
            image_grid(result.samples[:100], 10).save(grids / f"{slug}.png")
            print(rows[-1], flush=True)

    lines = ["# Digits pipeline benchmark", "",
             "Command: `python benchmarks/digits_pipeline.py" + (f" --n {args.n}" if args.n != 500 else "") + "`", "",
             f"Machine: {torch.get_num_threads()} CPU threads, torch {torch.__version__}. "
             f"Samples per row: {args.n} (labels cycling 0-9, same seeds in every row). "
             f"Classifier held-out accuracy on real digits: {classifier.held_out_accuracy:.3f}.", ""]
    lines += ["| stage (default settings) | training minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in timings.items()]
    lines += [f"| **stage 1 + 6 rounds (256 -> 4 steps)** | **{stage1_and_6_rounds / 60:.1f}** |", ""]
    lines += ["| model | steps | w | calls / image | class accuracy | digits-FD to T256 | ED to T256 | ms / image |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['steps']} | {r['w']:g} | {r['calls']} | {r['accuracy']:.3f} | "
              f"{r['fd']:.3f} | {r['ed']:.4f} | {r['ms']:.2f} |" for r in rows]
    write_report(out / "digits_pipeline.md", lines)


if __name__ == "__main__":
    main()
