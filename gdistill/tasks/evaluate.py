"""`gdistill eval`: sample every (run, sampler, steps, w) of a sweep from the same seeds and score it.

Everything that can be wrong with the input (runs, reference, sample counts, missing optional
packages or weights files) is checked by `plan_sweep` and `Scorer.__init__`, before any sampling,
so bad input never leaves a partial report.

Metrics, by the feature network that the reference calls for:
- images against an image folder: Inception FID / IS / KID through torch-fidelity (columns fid,
  is, kid);
- 8x8 digits against `--ref digits`: the same formulas on the shipped digits classifier (columns
  digits_fd, digits_is, digits_kid, and class_accuracy), offline;
- any data: the energy distance to the reference in data space (--ed; class-conditional, column
  class_ed, where the reference has classes), which is the metric for toy2d's 2-D points;
- CLIP score (--clip) of images against prompts (a file, or the run's class names).

Runs of SD-family teachers are sampled from prompts (--prompts, image k from prompt k mod their
number) and decoded by the teacher pipeline's VAE before scoring, so their metrics are on images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import GdistillError
from ..metrics import class_energy_distance, energy_distance, frechet_distance_of
from ..metrics.reference import FeatureCache, ReferenceSet, load_reference
from ..metrics.scores import inception_score, kernel_distance
from ..models import Denoiser
from ..run import MANIFEST, load_model, prepare_output, publish_dir, resolve_run
from .sample import SampleResult, cycle_labels, sample, sample_prompts, save_samples

METRIC_FLAGS = ("fid", "isc", "kid", "clip", "ed")
DEFAULT_TEACHER_STEPS = 256


@dataclass
class SweepModel:
    label: str  # how the report names the run: its path, or the teacher's name
    kind: str  # teacher, stage1 or round-K
    model: Denoiser
    manifest: dict
    steps: list[int]
    samplers: list[str]


@dataclass
class Row:
    """One line of the report; metric values are None where they could not be computed."""
    run: str
    model: str
    sampler: str
    steps: int
    w: float
    calls_per_image: int
    seconds_per_image: float
    n: int
    seed: int
    metrics: dict[str, float | None]

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "metrics"}
        return {**d, **self.metrics}


def _round_dirs(folder: Path) -> list[Path]:
    rounds = [p for p in folder.iterdir() if p.name.startswith("round-") and (p / MANIFEST).is_file()]
    return sorted(rounds, key=lambda p: int(p.name.split("-", 1)[1]) if p.name.split("-", 1)[1].isdigit() else 0)


def _kind_of(manifest: dict) -> str:
    return f"round-{manifest['round']}" if manifest["kind"] == "round" else manifest["kind"]


def plan_sweep(froms: list[str], steps: list[int] | None, teacher_steps: list[int] | None,
               samplers: list[str]) -> list[SweepModel]:
    """The models of a sweep: each --from run (a folder of round-K runs stands for all of them) at
    --steps (default: the steps it was distilled for), plus the runs' teacher at --teacher-steps
    with guided DDIM when that is given (a teacher passed as --from is sampled the same way)."""
    if not froms:
        raise GdistillError("--from is required: pass a run, a folder of round-K runs, or a built-in teacher")
    runs: list[tuple[str, Path]] = []  # (name in the report, run directory)
    for arg in froms:
        path = Path(arg)
        rounds = _round_dirs(path) if path.is_dir() and not (path / MANIFEST).is_file() else []
        runs += [(str(r), r) for r in rounds] or [(str(arg), resolve_run(arg))]
    models = []
    teachers: dict[Path, tuple[str, Denoiser, dict]] = {}  # by resolved path: one entry per teacher
    for name, run in runs:
        model, manifest, _ = load_model(run)
        if manifest["kind"] == "teacher":
            teachers.setdefault(run.resolve(), (name, model, manifest))
            continue
        run_steps = steps or [manifest.get("steps") or DEFAULT_TEACHER_STEPS]
        models.append(SweepModel(name, _kind_of(manifest), model, manifest, run_steps, samplers))
        if teacher_steps and manifest.get("teacher") and manifest["teacher"] not in {t[0] for t in teachers.values()}:
            try:
                teacher, teacher_manifest, teacher_path = load_model(manifest["teacher"])
            except GdistillError as e:
                raise GdistillError(f"--teacher-steps: cannot load {run}'s teacher: {e}") from None
            if teacher_manifest.get("pipeline"):  # a diffusers teacher, at the run's resolution
                teacher.with_latent_size(model.data_shape[-1])
            teachers.setdefault(Path(teacher_path).resolve(), (manifest["teacher"], teacher, teacher_manifest))
    sweep = [SweepModel(name, "teacher", model, manifest, teacher_steps or steps or [DEFAULT_TEACHER_STEPS],
                        ["deterministic"]) for name, model, manifest in teachers.values()]
    sweep += models
    if any(getattr(m.model, "inpainting", False) for m in sweep):
        raise GdistillError("eval samples from prompts alone, and an inpainting model also needs images and masks: "
                            "score it with your own `gdistill inpaint` outputs")
    shapes = {sample_shape(m) for m in sweep}
    if len(shapes) > 1:
        raise GdistillError(f"the runs make samples of different shapes {sorted(shapes)}: evaluate them separately")
    return sweep


def is_text_model(entry: SweepModel) -> bool:
    return bool(entry.manifest.get("pipeline"))


def sample_shape(entry: SweepModel) -> tuple[int, ...]:
    """What is scored: the model's samples, or for SD-family runs the VAE's decoded images."""
    if not is_text_model(entry):
        return tuple(entry.model.data_shape)
    from ..models.latent import pipeline_for

    pipe = pipeline_for(entry.manifest["pipeline"])
    size = entry.model.data_shape[-1] * pipe.vae_scale_factor
    return (pipe.vae.config.out_channels, size, size)


class Scorer:
    """Scores a sample set with the metrics asked for, against one reference. The reference's
    features (digits classifier) or statistics (torch-fidelity) are cached by content hash."""

    def __init__(self, metrics: set[str], ref: str, sample_shape: tuple[int, ...], n: int, cache_dir: Path,
                 device: torch.device, inception_weights: Path | None = None, clip_model: str | None = None,
                 prompts: list[str] | None = None, num_classes: int | None = None,
                 log: Callable[[str], None] = print):
        unknown = set(metrics) - set(METRIC_FLAGS)
        if unknown:
            raise GdistillError(f"unknown metric {', '.join(sorted(unknown))}: use {', '.join(METRIC_FLAGS)}")
        if n < 2:
            raise GdistillError(f"--n must be at least 2, got {n}")
        self.asked, self.device = set(metrics), torch.device(device)
        self.reference: ReferenceSet = load_reference(ref, sample_shape)
        self.columns: list[str] = []
        self.network = self.clip = None
        self.inception_weights: str | None = None
        self.cache_dir = Path(cache_dir)
        feature_metrics = self.asked & {"fid", "isc", "kid"}
        is_image = len(sample_shape) == 3

        if feature_metrics and not is_image:
            raise GdistillError(f"--{'/--'.join(sorted(feature_metrics))} score images, and these samples are "
                                f"{tuple(sample_shape)}-shaped points: use --ed (energy distance to --ref toy2d)")
        if feature_metrics and self.reference.name == "digits":
            from ..metrics.digits import FEATURES, DigitsClassifier

            if tuple(sample_shape) != (1, 8, 8):
                raise GdistillError(f"--ref digits scores 8x8 grey digits, and these samples are {tuple(sample_shape)}: "
                                    "pass an image folder as --ref")
            if "fid" in self.asked and n <= FEATURES:
                raise GdistillError(f"--n {n} is too small for digits-FD: its features are {FEATURES}-dimensional; "
                                    f"use --n {FEATURES + 1} or more (500 or more for stable figures)")
            self.network = DigitsClassifier()
            features, hit = FeatureCache(self.cache_dir).features(self.network.id, self.reference, self.network.features)
            log(f"reference digits: {len(features)} images, features {'from the cache' if hit else 'computed and cached'}")
            self.reference_features = features
            self.columns += [c for flag, c in (("fid", "digits_fd"), ("isc", "digits_is"), ("kid", "digits_kid"))
                             if flag in self.asked]
            self.columns.append("class_accuracy")
        elif feature_metrics:
            from ..metrics.fidelity import INCEPTION_FEATURES, ensure_inception_weights, import_torch_fidelity

            import_torch_fidelity()
            if "fid" in self.asked and min(n, len(self.reference.samples)) <= INCEPTION_FEATURES:
                raise GdistillError(
                    f"FID needs more than {INCEPTION_FEATURES} samples in each set (Inception features are "
                    f"{INCEPTION_FEATURES}-dimensional): --n is {n} and --ref holds {len(self.reference.samples)}; "
                    "use more (10,000 is usual)")
            self.inception_weights = ensure_inception_weights(inception_weights)
            self.columns += [c for flag, c in (("fid", "fid"), ("isc", "is"), ("kid", "kid")) if flag in self.asked]
        if "clip" in self.asked:
            from ..metrics.clip import DEFAULT_CLIP_MODEL, ClipScorer

            if not is_image:
                raise GdistillError("--clip scores images against prompts, and these samples are points")
            if prompts is None:
                raise GdistillError("--clip needs prompts: pass --prompts FILE (one per line, line k for class k), "
                                    "or a run whose manifest lists its class names")
            if num_classes is not None and len(prompts) != num_classes:
                raise GdistillError(f"--prompts has {len(prompts)} lines, and the run has {num_classes} classes: "
                                    "write one prompt per class, line k for class k")
            self.prompts = prompts
            self.clip = ClipScorer(clip_model or DEFAULT_CLIP_MODEL, self.device)
            self.columns.append("clip_score")
        if "ed" in self.asked:
            labels = self.reference.labels
            if labels is not None and num_classes is not None and set(labels.tolist()) != set(range(num_classes)):
                raise GdistillError(f"--ref {ref} has classes {sorted(set(labels.tolist()))}, and the run has "
                                    f"0..{num_classes - 1}: pass a reference with the run's classes")
            self.columns.append("class_ed" if labels is not None else "ed")

    def score(self, result: SampleResult) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        samples, labels = result.samples, result.labels
        finite = bool(torch.isfinite(samples).all())
        if self.network is not None and finite:
            features = self.network.features(samples)
            if "digits_fd" in self.columns:
                values["digits_fd"] = _or_none(lambda: frechet_distance_of(features, self.reference_features))
            if "digits_is" in self.columns:
                values["digits_is"] = _or_none(lambda: inception_score(self.network.logits(samples))[0])
            if "digits_kid" in self.columns:
                values["digits_kid"] = _or_none(lambda: kernel_distance(features, self.reference_features)[0])
            values["class_accuracy"] = self.network.accuracy(samples, labels)
        inception_columns = set(self.columns) & {"fid", "is", "kid"}
        if inception_columns and finite:
            from ..metrics.fidelity import inception_metrics

            values.update(inception_metrics(samples, self.reference, inception_columns, self.inception_weights,
                                            self.cache_dir, self.device))
        if self.clip is not None and finite:
            values["clip_score"] = self.clip.score(samples, [self.prompts[k] for k in labels.tolist()])
        if "class_ed" in self.columns and finite:
            values["class_ed"] = _or_none(lambda: _class_ed_to_reference(samples, labels, self.reference))
        if "ed" in self.columns and finite:
            values["ed"] = _or_none(lambda: energy_distance(samples, self.reference.samples))
        return {c: values.get(c) for c in self.columns}


def _or_none(compute: Callable[[], float]) -> float | None:
    """A metric that fails or comes out non-finite on degenerate input (a singular covariance, a
    reference class with one image) is reported as missing."""
    try:
        value = compute()
    except (GdistillError, ValueError, FloatingPointError, torch.linalg.LinAlgError):
        return None
    return value if math.isfinite(value) else None


def _class_ed_to_reference(samples, labels, reference: ReferenceSet) -> float:
    """Class-conditional energy distance of the samples to the reference, each class's reference
    images subsampled to that class's sample count (so the cost stays O(n^2))."""
    generator = torch.Generator().manual_seed(0)
    picked = []
    for c in labels.unique():
        pool = (reference.labels == c).nonzero().flatten()
        picked.append(pool[torch.randperm(len(pool), generator=generator)[:int((labels == c).sum())]])
    index = torch.cat(picked)
    return class_energy_distance(samples, reference.samples[index], labels, reference.labels[index])


def run_sweep(sweep: list[SweepModel], ws: list[float], scorer: Scorer, n: int, seed: int, device,
              on_row: Callable[[Row, SampleResult], None], prompts: list[str] | None = None) -> list[Row]:
    """Sample and score every (model, sampler, steps, w). Every row draws the same labels (or
    prompts) and the same starting noise (the seed), so differences between rows are the models'."""
    rows = []
    for entry in sweep:
        labels = None if is_text_model(entry) else cycle_labels(n, entry.model.num_classes)
        data_range = entry.manifest.get("data_range")
        for sampler in entry.samplers:
            for steps in entry.steps:
                for w in ws:
                    if labels is None:
                        result = sample_prompts(entry.model, entry.manifest, prompts, n, steps, w, sampler, seed, device)
                    else:
                        result = sample(entry.model, labels, steps, w, sampler, seed,
                                        tuple(data_range) if data_range else None, device=device)
                    row = Row(entry.label, entry.kind, sampler, steps, w, result.calls_per_image,
                              result.seconds / n, n, seed, scorer.score(result))
                    rows.append(row)
                    on_row(row, result)
    return rows


def evaluate_into(out: Path, overwrite: bool, sweep: list[SweepModel], ws: list[float], scorer: Scorer, n: int,
                  seed: int, device, settings: dict, on_row: Callable[[Row], None],
                  prompts: list[str] | None = None) -> list[dict]:
    """Run the sweep and write the report folder (see metrics/report.py): built in `.NAME.partial/`
    and renamed into place when complete, like a run. Returns the rows as dicts."""
    from ..metrics.report import write_plots, write_tables

    work = prepare_output(Path(out), overwrite, resumable=False)
    (work / "grids").mkdir(parents=True)
    entries = {e.label: e for e in sweep}

    def save_grid(row: Row, result: SampleResult) -> None:
        data_range = entries[row.run].manifest.get("data_range")
        first = SampleResult(result.samples[:100], result.labels[:100], result.calls_per_image, result.seconds)
        num_classes = entries[row.run].model.num_classes
        name = f"{Path(row.run).name}-{row.model}-{row.sampler}-{row.steps}steps-w{row.w:g}.png"
        text = is_text_model(entries[row.run])
        save_samples(first, work / "grids" / name, tuple(data_range) if data_range else None,
                     num_classes if 0 < num_classes <= 16 else None, prompts=prompts if text else None)
        on_row(row)

    rows = [r.as_dict() for r in run_sweep(sweep, ws, scorer, n, seed, device, save_grid, prompts)]
    write_tables(rows, work, settings)
    write_plots(rows, work)
    publish_dir(work, Path(out))
    return rows
