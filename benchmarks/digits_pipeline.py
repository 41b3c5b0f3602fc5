"""Digits benchmark: the full built-in pipeline, then `gdistill eval` of the teacher and every round.

    python benchmarks/digits_pipeline.py                 # about 50 minutes on 2 CPU cores (25 reusing runs)
    python benchmarks/digits_pipeline.py --device cuda   # the evaluation on a GPU

Runs, through the real CLI, `gdistill match --teacher digits`, `gdistill halve --rounds 6` (256 -> 4
steps) and 2 more rounds (-> 2, 1 steps; `--rounds 6` leaves them out), timing each (runs in --work
are reused when complete).
Then one `gdistill eval` sweep: the shipped teacher with guided DDIM at 256/64/16/8/4 steps (2 calls
a step) and the student of every round at its own steps (1 call a step), w in 0, 1, 2, 4, all from
the same seed and labels, scored offline against the 1,797 real digits with the shipped digits
classifier (gdistill.metrics.digits; not Inception): digits-FD (Fréchet distance of its 64-dim
penultimate features) to the real digits and to the teacher's own 256-step samples (eval --to-teacher),
digits-IS, class accuracy, and calls and milliseconds per image; and the Stage-1 model's effective
guidance (`gdistill info --w-eff`).
Writes benchmarks/results/digits_pipeline.md (training times, the table, the commands) and the eval
report folder benchmarks/results/digits_eval/ (CSV, JSON, plots, sample grids).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from report import command_line, device_name, run, training_seconds, write_report  # benchmarks/report.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/bench-digits", help="where the runs go (reused if complete)")
    parser.add_argument("--out", default=str(HERE / "results"), help="where the results go")
    parser.add_argument("--n", type=int, default=1000, help="samples per (model, steps, w)")
    parser.add_argument("--w", default="0,1,2,4", help="guidance strengths (paper's w)")
    parser.add_argument("--teacher-steps", default="256,64,16,8,4")
    parser.add_argument("--device", default="cpu", help="where eval samples (training runs on accelerate's default)")
    parser.add_argument("--rounds", type=int, choices=(6, 8), default=8, help="halving rounds: 6 (256 -> 4 steps) or 8 (-> 1 step)")
    parser.add_argument("--reuse-report", action="store_true", help="write the results from an existing eval report instead of re-running it")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    gd = [sys.executable, "-m", "gdistill"]

    if not (work / "stage1").exists():
        run(gd + ["match", "--teacher", "digits", "--out", str(work / "stage1")])
    if not (work / "pd" / "round-6").exists():
        run(gd + ["halve", "--from", str(work / "stage1"), "--rounds", "6", "--out", str(work / "pd")])
    if args.rounds == 8 and not (work / "pd" / "round-8").exists():
        run(gd + ["halve", "--from", str(work / "pd" / "round-6"), "--rounds", "2", "--out", str(work / "pd")])
    timings = {"match (stage 1)": training_seconds(work / "stage1")}
    for k in range(1, args.rounds + 1):
        timings[f"halve round {k} ({512 >> k} -> {256 >> k} steps)"] = training_seconds(work / "pd" / f"round-{k}")
    stage1_and_6_rounds = sum(list(timings.values())[:7])

    report = out / f"digits_eval{suffix}"
    if report.is_absolute() and report.is_relative_to(Path.cwd()):
        report = report.relative_to(Path.cwd())  # the command in the result reads as one to type
    eval_cmd = ["eval", "--from", str(work / "pd"), "--teacher-steps", args.teacher_steps, "--w", args.w,
                "--fid", "--isc", "--n", str(args.n), "--device", args.device, "--out", str(report), "--overwrite"]
    if not (args.reuse_report and (report / "report.json").is_file()):
        run(gd + eval_cmd)
    rows = json.loads((report / "report.json").read_text())["rows"]
    weff_cmd = ["info", str(work / "stage1"), "--w-eff", "--w", args.w, "--n", "1024", "--json"]
    print("+", " ".join(gd + weff_cmd), flush=True)
    weff = json.loads(subprocess.run(gd + weff_cmd, check=True, capture_output=True, text=True).stdout)

    command = command_line(parser, args, "benchmarks/digits_pipeline.py")
    lines = ["# Digits pipeline benchmark", "", f"Command: `{command}`, which runs", "",
             f"    gdistill {' '.join(eval_cmd)}", "",
             f"Device for eval: {device_name(args.device)}; torch {torch.__version__}. Samples per row: {args.n} (labels cycling "
             "0-9, the same seed in every row), scored against the 1,797 real digits with the shipped digits "
             "classifier (digits-FD / digits-IS: the FID / IS formulas on its features, not Inception's).", ""]
    lines += ["| stage (default settings, 2 CPU cores) | training minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in timings.items()]
    lines += [f"| **stage 1 + 6 rounds (256 -> 4 steps)** | **{stage1_and_6_rounds / 60:.1f}** |", ""]
    lines += ["Effective guidance of the Stage-1 model against the teacher (`gdistill " + " ".join(weff_cmd) +
              "`; the teacher's own guided prediction gives exactly w):", "",
              "| w | " + " | ".join(k.replace("w_eff ", "") for k in weff[0] if k != "w") + " |",
              "|---|" + "---|" * (len(weff[0]) - 1)]
    lines += ["| " + " | ".join(f"{v:g}" if k == "w" else f"{v:.3f}" for k, v in r.items()) + " |" for r in weff]
    lines += ["", "digits-FD to teacher: to the teacher's own 256-step guided samples at the same w (seed 1): the "
              "distillation error, apart from the teacher's own quality (a teacher row shows the noise floor).", ""]
    lines += ["| model | steps | w | calls / image | digits-FD | digits-FD to teacher | digits-IS | class accuracy | ms / image |",
              "|---|---|---|---|---|---|---|---|---|"]
    for w in sorted({r["w"] for r in rows}):
        lines += [f"| {r['model']} | {r['steps']} | {r['w']:g} | {r['calls_per_image']} | {r['digits_fd']:.2f} | "
                  f"{r['digits_fd_to_teacher']:.2f} | {r['digits_is']:.3f} | {r['class_accuracy']:.3f} | "
                  f"{r['seconds_per_image'] * 1000:.2f} |" for r in rows if r["w"] == w]
    lines += ["", f"Plots and sample grids: {report.name}/ (fd_vs_w.png, fd_is_tradeoff.png, "
              "fd_vs_calls.png, grids/)."]
    write_report(out / f"digits_pipeline{suffix}.md", lines)


if __name__ == "__main__":
    main()
