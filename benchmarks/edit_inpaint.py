"""Editing and inpainting quality on digits: distilled students at 8, 4, 2 and 1 steps against the
guided teacher at 64 steps, judged by the shipped digits classifier.

    python benchmarks/edit_inpaint.py            # about 5 minutes on 2 CPU cores
    python benchmarks/edit_inpaint.py --device cuda

Needs the digits rounds of `python benchmarks/digits_pipeline.py` (runs/bench-digits/pd/round-5..8:
8, 4, 2, 1 steps). Inputs: the real digits of the classifier's held-out 25 % split (450 images; the
teacher itself was trained on all 1,797 digits, so they are held out from the classifier only).

- inpaint: the lower half (rows 4-7) of every digit is masked and regenerated given its true class,
  by `gdistill inpaint`'s replacement sampler; reported: the classifier's accuracy on the results,
  against the real digits (upper bound) and the digits with the lower half blanked (lower bound).
- edit: every digit is edited into class (y + 5) mod 10 by `gdistill edit`'s SDEdit at strengths
  0.25, 0.5, 0.75 and 1 (snapped to each grid); reported: the fraction the classifier reads as the
  target class, and the mean squared distance to the input (how much of it is kept).

Both go through the same `tasks.sample.sample(..., input_image=InputImage(...))` call as the commands.
Writes benchmarks/results/edit_inpaint_DEVICE.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from report import command_line, device_name, write_report  # benchmarks/report.py

from gdistill.diffusion import snap_strength
from gdistill.metrics.digits import DigitsClassifier, classifier_split
from gdistill.run_folder import load_model
from gdistill.tasks.sample import InputImage, sample

HERE = Path(__file__).resolve().parent
STRENGTHS = (0.25, 0.5, 0.75, 1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bench-digits")
    parser.add_argument("--w", type=float, default=1.0)
    parser.add_argument("--teacher-steps", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rounds = [Path(args.work) / "pd" / f"round-{k}" for k in (5, 6, 7, 8)]
    missing = [str(r) for r in rounds if not (r / "manifest.yaml").is_file()]
    if missing:
        raise SystemExit(f"missing {missing[0]}: run `python benchmarks/digits_pipeline.py` first (it makes the rounds)")

    digits, labels, _, held_out = classifier_split()
    x, y = digits[held_out], labels[held_out]
    classifier = DigitsClassifier()
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, :] = 1  # repaint the lower half
    masks = mask.expand(len(x), 1, 8, 8)
    target = (y + 5) % 10

    models = [("teacher", load_model("digits")[0], args.teacher_steps)]
    models += [(f"round-{r.name.split('-')[1]}", *load_model(r)[:1], load_model(r)[1]["steps"]) for r in rounds]
    inpaint_rows, edit_rows = [], []
    for name, model, steps in models:
        calls = 1 if model.w_conditioned else 2
        start = time.perf_counter()
        filled = sample(model, y, steps, args.w, seed=args.seed, data_range=(-1.0, 1.0), device=args.device,
                        input_image=InputImage(x, 0, masks)).samples
        seconds = time.perf_counter() - start
        inpaint_rows.append(f"| {name} | {steps} | {steps * calls} | {classifier.accuracy(filled, y):.3f} | "
                            f"{seconds / len(x) * 1000:.2f} |")
        cells = []
        for strength in STRENGTHS:
            k = snap_strength(strength, steps)
            edited = sample(model, target, steps, args.w, seed=args.seed, data_range=(-1.0, 1.0), device=args.device,
                            input_image=InputImage(x, steps - k)).samples
            cells.append(f"{classifier.accuracy(edited, target):.3f} / {(edited - x).pow(2).mean():.3f} ({k * calls})")
        edit_rows.append(f"| {name} | {steps} | " + " | ".join(cells) + " |")
        print(inpaint_rows[-1], edit_rows[-1], flush=True)

    blanked = x.clone()
    blanked[..., 4:, :] = -1.0
    lines = [
        f"# Edit and inpaint on digits ({device_name(torch.device(args.device))})", "",
        f"`{command_line(parser, args, 'benchmarks/edit_inpaint.py')}`: {len(x)} real digits (the digits "
        f"classifier's held-out split), w = {args.w:g}, seed {args.seed}; students of "
        f"`{args.work}/pd`, the shipped teacher with guided DDIM (2 calls a step).", "",
        "## Inpainting the lower half, given the class (replacement)", "",
        f"Classifier accuracy of the real digits: {classifier.accuracy(x, y):.3f}; with the lower half blanked: "
        f"{classifier.accuracy(blanked, y):.3f}.", "",
        "| model | steps | calls per image | class accuracy | ms per image |", "|---|---|---|---|---|",
        *inpaint_rows, "",
        "## Editing into class (y + 5) mod 10 (SDEdit)", "",
        "Each cell: target-class accuracy / mean squared distance to the input in [-1, 1] units "
        "(calls per image). Strength is snapped to each grid, so a 1-step student has only 0 or 1.", "",
        "| model | steps | " + " | ".join(f"strength {s:g}" for s in STRENGTHS) + " |",
        "|---|---|" + "---|" * len(STRENGTHS),
        *edit_rows,
    ]
    out = args.out or HERE / "results" / f"edit_inpaint_{torch.device(args.device).type}.md"
    write_report(out, lines)


if __name__ == "__main__":
    main()
