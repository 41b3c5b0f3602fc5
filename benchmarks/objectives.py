"""One teacher, every objective: halving rounds, consistency distillation and distribution matching
(DMD) at 1/2/4/8 steps.

    python benchmarks/objectives.py --teacher toy2d                                    # about 15 minutes on 2 CPU cores
    python benchmarks/objectives.py --teacher digits --n 300 --work runs/bench-digits --teacher-steps 64,8,4  # about 3 hours (less reusing runs)

Trains through the real CLI, on one teacher (a built-in, or a teacher run such as a Fashion-MNIST one),
every route gdistill offers to a few-step w-conditioned student, timing each run:

- halving: `gdistill match` (Stage 1), then `gdistill halve --rounds 8` (256 -> 1 steps); the rounds
  with 8, 4, 2 and 1 steps are the students;
- consistency from the teacher: `gdistill consistency --teacher TEACHER` (one run, any step count);
- consistency from Stage 1: `gdistill consistency --teacher STAGE1` (one call a solver step; its
  training time counts Stage 1's too);
- distribution matching from the teacher: `gdistill dmd --teacher TEACHER` (a 1-step generator), and
  the same with DMD2's GAN head (`--gan-weight`, --dmd-gan-weight: 1 for toy2d, 0.1 for image teachers).

Then one `gdistill eval` of all of them, and of the guided teacher at --teacher-steps, over the w of
--w, from the same seed and labels: distance to the data and to the teacher's own --to-teacher-step
guided samples at the same w (the teacher's row at that step count, another seed, is the noise floor),
and the recall of the teacher's samples (eval --prc: the share of them the student's samples cover,
which falls where a student drops modes).
toy2d: class-conditional energy distance (--ed); digits: digits-FD from the shipped classifier;
Fashion-MNIST teachers: fashion-FD (and Inception FID/KID with --inception-weights).
Runs in --work are reused when complete (an interrupted one resumes). Writes
benchmarks/results/objectives_<teacher>[_<device>].md and the eval report folder beside it.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from gdistill.run_folder import WEIGHTS

from report import (command_line, device_name, fmt, run, training_peak_memory_gib, training_seconds,  # benchmarks/report.py
                    write_report)  # (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROUNDS = 8  # 256 -> 1 steps
STUDENT_ROUNDS = {5: 8, 6: 4, 7: 2, 8: 1}  # round -> its sampling steps
# The headline distance of a report, in order of preference (eval's column names).
DISTANCES = ("fid", "fashion_fd", "digits_fd", "class_ed", "ed")
# eval --prc's recall in the same features as each distance
RECALLS = {"fid": "recall", "fashion_fd": "fashion_recall", "digits_fd": "digits_recall", "class_ed": "recall", "ed": "recall"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="toy2d", help="toy2d, digits, or a teacher run (e.g. runs/bench-fashion-gpu/teacher)")
    parser.add_argument("--work", default=None, help="where the runs go (default runs/bench-objectives-TEACHER; reused if complete)")
    parser.add_argument("--out", default=str(HERE / "results"), help="where the results go")
    parser.add_argument("--n", type=int, default=1000, help="samples per (model, steps, w)")
    parser.add_argument("--w", default="0,1,2,4", help="guidance strengths (paper's w)")
    parser.add_argument("--teacher-steps", default="256,8,4", help="guided teacher rows (the first is also the to-teacher reference)")
    parser.add_argument("--to-teacher", type=int, default=None, help="steps of the teacher samples the to-teacher columns compare with (default: the first --teacher-steps)")
    parser.add_argument("--match-args", default="", help="extra `gdistill match` options, e.g. \"--train-steps 8000\"")
    parser.add_argument("--halve-args", default="", help="extra `gdistill halve` options")
    parser.add_argument("--consistency-args", default="", help="extra `gdistill consistency` options (both consistency runs)")
    parser.add_argument("--dmd-args", default="", help="extra `gdistill dmd` options (both DMD runs)")
    parser.add_argument("--dmd-gan-weight", type=float, default=None, help="--gan-weight of the DMD run with the GAN head (default: 1 for toy2d, 0.1 for image teachers; docs/dmd.md)")
    parser.add_argument("--inception-weights", default=None, help="image teachers: TorchScript Inception (default_1.pt) for Inception FID")
    parser.add_argument("--device", default="cpu", help="where eval samples (training runs on accelerate's default)")
    parser.add_argument("--reuse-report", action="store_true", help="write the results from an existing eval report instead of re-running it")
    args = parser.parse_args()
    command = command_line(parser, args, "benchmarks/objectives.py")
    name = Path(args.teacher).parent.name if Path(args.teacher).is_dir() else args.teacher
    work = Path(args.work or f"runs/bench-objectives-{name}")
    to_teacher = args.to_teacher or int(args.teacher_steps.split(",")[0])
    suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    gd = [sys.executable, "-m", "gdistill"]
    stage1, pd = work / "stage1", work / "pd"
    cd_teacher, cd_stage1, dmd_teacher, dmd_gan = work / "cd-teacher", work / "cd-stage1", work / "dmd-teacher", work / "dmd-gan"
    gan_weight = args.dmd_gan_weight if args.dmd_gan_weight is not None else (1.0 if args.teacher == "toy2d" else 0.1)

    # every step resumes an interrupted run of its own (a half-trained run holds no weights file yet)
    if not (stage1 / WEIGHTS).exists():
        run(gd + ["match", "--teacher", args.teacher, "--out", str(stage1)] + shlex.split(args.match_args))
    last = max([k for k in range(1, ROUNDS + 1) if (pd / f"round-{k}" / WEIGHTS).exists()], default=0)
    if last < ROUNDS:
        start = stage1 if last == 0 else pd / f"round-{last}"
        run(gd + ["halve", "--from", str(start), "--rounds", str(ROUNDS - last), "--out", str(pd)] + shlex.split(args.halve_args))
    for out_dir, source in ((cd_teacher, args.teacher), (cd_stage1, str(stage1))):
        if not (out_dir / WEIGHTS).exists():
            run(gd + ["consistency", "--teacher", source, "--out", str(out_dir)] + shlex.split(args.consistency_args))
    for out_dir, extra in ((dmd_teacher, []), (dmd_gan, ["--gan-weight", str(gan_weight)])):
        if not (out_dir / WEIGHTS).exists():
            run(gd + ["dmd", "--teacher", args.teacher, "--out", str(out_dir)] + extra + shlex.split(args.dmd_args))

    # training minutes to reach each student, everything it depends on included
    seconds_stage1 = training_seconds(stage1)
    rounds = [training_seconds(pd / f"round-{k}") for k in range(1, ROUNDS + 1)]
    train_minutes = {f"round-{k}": (seconds_stage1 + sum(rounds[:k])) / 60 for k in STUDENT_ROUNDS}
    train_minutes["cd-teacher"] = training_seconds(cd_teacher) / 60
    train_minutes["cd-stage1"] = (seconds_stage1 + training_seconds(cd_stage1)) / 60
    train_minutes["dmd-teacher"] = training_seconds(dmd_teacher) / 60
    train_minutes["dmd-gan"] = training_seconds(dmd_gan) / 60
    # peak memory of the hungriest run a student needs (n/a for logs from before gdistill recorded it)
    memory = {run_dir.name: training_peak_memory_gib(run_dir) for run_dir in
              (stage1, cd_teacher, cd_stage1, dmd_teacher, dmd_gan, *(pd / f"round-{k}" for k in range(1, ROUNDS + 1)))}

    def peak(*names: str) -> float | None:
        values = [memory[name] for name in names]
        return None if None in values else max(values)

    train_memory = {f"round-{k}": peak(stage1.name, *(f"round-{j}" for j in range(1, k + 1))) for k in STUDENT_ROUNDS}
    train_memory.update({"cd-teacher": peak(cd_teacher.name), "cd-stage1": peak(stage1.name, cd_stage1.name),
                         "dmd-teacher": peak(dmd_teacher.name), "dmd-gan": peak(dmd_gan.name)})

    report = Path(args.out) / f"objectives_{name}_eval{suffix}"
    if report.is_absolute() and report.is_relative_to(Path.cwd()):
        report = report.relative_to(Path.cwd())  # the command in the result reads as one to type
    metrics = {"toy2d": ["--ed"], "digits": ["--fid"]}.get(args.teacher, []) + ["--prc"]
    if args.inception_weights:
        metrics += ["--fid", "--inception-weights", args.inception_weights]
    students = [str(pd / f"round-{k}") for k in STUDENT_ROUNDS] + [str(cd_teacher), str(cd_stage1), str(dmd_teacher), str(dmd_gan)]
    eval_cmd = ["eval", *[a for s in students for a in ("--from", s)], "--teacher-steps", args.teacher_steps,
                "--w", args.w, "--n", str(args.n), "--to-teacher", str(to_teacher), "--device", args.device,
                *metrics, "--out", str(report), "--overwrite"]
    if not (args.reuse_report and (report / "report.json").is_file()):
        run(gd + eval_cmd)
    rows = json.loads((report / "report.json").read_text())["rows"]
    distance = next(c for c in DISTANCES if c in rows[0])
    digits = 4 if "ed" in distance else 2
    ws = sorted({r["w"] for r in rows})

    def student(row) -> str | None:
        """The run folder's name (round-K, cd-teacher, cd-stage1); None for the teacher."""
        return None if row["model"] == "teacher" else Path(row["run"]).name

    labels = {None: "teacher (guided DDIM)", "cd-teacher": "consistency from the teacher",
              "cd-stage1": "consistency from Stage 1", "dmd-teacher": "DMD from the teacher",
              "dmd-gan": f"DMD from the teacher, GAN head ({gan_weight:g})", **{f"round-{k}": f"halving round {k}" for k in STUDENT_ROUNDS}}

    def table(column: str, digits: int = digits) -> list[str]:
        lines = ["| model | steps | calls / image | training minutes | peak memory (GiB) | "
                 + " | ".join(f"w = {w:g}" for w in ws) + " |", "|---|---|---|---|---|" + "---|" * len(ws)]
        keys = sorted({(student(r), r["steps"]) for r in rows},
                      key=lambda k: (k[0] is not None, -k[1] if k[0] is None else k[1], k[0] or ""))
        for name, steps in keys:
            by_w = {r["w"]: r for r in rows if (student(r), r["steps"]) == (name, steps)}
            first = next(iter(by_w.values()))
            minutes = "-" if name is None else fmt(train_minutes[name], 1)
            gib = "-" if name is None else fmt(train_memory[name], 2)
            lines.append(f"| {labels[name]} | {steps} | {first['calls_per_image']} | {minutes} | {gib} | "
                         + " | ".join(fmt(by_w[w].get(column), digits) if w in by_w else "" for w in ws) + " |")
        return lines

    lines = ["# Halving, consistency and distribution matching, one teacher", "",
             f"Command: `{command}`; training on accelerate's default device "
             f"({device_name('cuda' if torch.cuda.is_available() else 'cpu')}), eval on {device_name(args.device)}; "
             f"torch {torch.__version__}. It runs", ""]
    lines += [f"    gdistill match --teacher {args.teacher} {args.match_args}".rstrip(),
              f"    gdistill halve --rounds {ROUNDS} {args.halve_args}".rstrip(),
              f"    gdistill consistency --teacher {args.teacher} {args.consistency_args}".rstrip(),
              f"    gdistill consistency --teacher {stage1} {args.consistency_args}".rstrip(),
              f"    gdistill dmd --teacher {args.teacher} {args.dmd_args}".rstrip(),
              f"    gdistill dmd --teacher {args.teacher} --gan-weight {gan_weight:g} {args.dmd_args}".rstrip(),
              f"    gdistill {' '.join(eval_cmd)}", ""]
    lines += [f"Training minutes: everything a student needs (a halving round: Stage 1 and every round up to "
              f"it; consistency from Stage 1: Stage 1 and its own run), from the runs' logs; peak memory: the "
              f"largest of those runs' (on a GPU torch's peak allocated memory, on a CPU the process's peak "
              f"resident set). {args.n} samples a row, "
              f"the same seed and labels in every row.", "",
              f"## {distance} to the teacher's own {to_teacher}-step guided samples at the same w (the distillation error)", "",
              f"The teacher's {to_teacher}-step row (another seed) is the noise floor: the distance between two sample sets "
              "of one distribution.", ""]
    lines += table(f"{distance}_to_teacher")
    lines += ["", f"## {distance} to the data", ""]
    lines += table(distance)
    recall = RECALLS[distance]
    lines += ["", f"## Recall of the teacher's samples ({recall}_to_teacher, in the same features)", "",
              f"The share of the teacher's {to_teacher}-step samples that fall inside the student's sample manifold "
              "(k = 3 nearest neighbours, Kynkäänniemi et al. 2019): a student that drops modes loses it, where a "
              "distance mixes that with fidelity. The teacher's row is its own floor.", ""]
    lines += table(f"{recall}_to_teacher", 2)
    lines += ["", f"Every column, plots and sample grids: {report.name}/ (report.md, report.csv, grids/)."]
    write_report(Path(args.out) / f"objectives_{name}{suffix}.md", lines)


if __name__ == "__main__":
    main()
