"""`gdistill eval`: sample every (run, sampler, steps, w) of a sweep from the same seeds and score it.

Everything that can be wrong with the input (runs, reference, sample counts, missing optional
packages or weights files) is checked by `plan_eval` (its rules: the sweep, the reference, the default
metric, the prompts), `plan_sweep` and `Scorer.__init__`, before any sampling, so bad input never
leaves a partial report.

Metrics, by the feature network that the reference calls for:
- images against an image folder: Inception FID / IS / KID through torch-fidelity (columns fid,
  is, kid);
- 8x8 digits against `--ref digits`: the same formulas on the shipped digits classifier (columns
  digits_fd, digits_is, digits_kid, and class_accuracy), offline;
- images against Fashion-MNIST's test split (`--ref fashion-mnist`): the shipped Fashion-MNIST
  classifier's fashion_fd and class_accuracy in every row, offline, beside Inception's when asked
  (with --inception-weights, a TorchScript Inception file, they need no torch-fidelity);
- any data: the energy distance to the reference in data space (--ed; class-conditional, column
  class_ed, where the reference has classes), which is the metric for toy2d's 2-D points;
- CLIP score (--clip) of images against prompts (a file, or the run's class names);
- precision and recall (--prc) in the same feature space as the Fréchet distance (the 2-D points
  themselves for toy2d): columns digits_/fashion_precision and _recall, or precision and recall
  for a TorchScript Inception file and for points. Recall is what falls when a generator drops
  modes (DMD's risk), where a Fréchet distance mixes fidelity and coverage.

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
from ..files import prepare_output, publish_dir
from ..metrics import class_energy_distance, energy_distance, frechet_distance_of, precision_recall
from ..metrics.reference import FeatureCache, ReferenceSet, load_reference, tensor_hash
from ..metrics.scores import inception_score, kernel_distance
from ..models import Denoiser
from ..run_folder import MANIFEST, OWN_SAMPLERS, data_range_of, is_latent_run, is_text_run, load_model, resolve_run
from .sample import SampleResult, cycle_labels, decode_latent_samples, sample, sample_prompts, save_samples

METRIC_FLAGS = ("fid", "isc", "kid", "clip", "ed", "prc")
# Columns that compare two sample sets: each gets a twin against the teacher's samples.
DISTANCE_COLUMNS = ("digits_fd", "digits_kid", "fashion_fd", "fid", "kid", "class_ed", "ed")
PRC_COLUMNS = ("digits_precision", "digits_recall", "fashion_precision", "fashion_recall", "precision", "recall")
PRC_NEIGHBOURS = 3  # Kynkäänniemi et al.'s k
TO_TEACHER = "_to_teacher"
DEFAULT_TEACHER_STEPS = 256
CONSISTENCY_EVAL_STEPS = (1, 2, 4, 8)  # a consistency run is scored at these steps unless --steps says otherwise


@dataclass
class SweepModel:
    label: str  # how the report names the run: its path, or the teacher's name
    kind: str  # teacher, stage1 or round-K
    model: Denoiser
    manifest: dict
    steps: list[int]
    samplers: list[str]
    teacher: SweepModel | None = None  # the guided teacher whose samples the to-teacher columns compare with


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
               samplers: list[str], with_teachers: bool = False) -> list[SweepModel]:
    """The models of a sweep: each --from run (a folder of round-K runs stands for all of them) at
    --steps (default: the steps it was distilled for), plus the runs' teacher at --teacher-steps
    with guided DDIM when that is given (a teacher passed as --from is sampled the same way).
    With `with_teachers` (or --teacher-steps) every entry knows its guided teacher (a teacher is
    its own), whose samples are the reference of the to-teacher columns."""
    if not froms:
        raise GdistillError("--from is required: pass a run, a folder of round-K runs, or a built-in teacher")
    runs: list[tuple[str, Path]] = []  # (name in the report, run directory)
    for arg in froms:
        path = Path(arg)
        rounds = _round_dirs(path) if path.is_dir() and not (path / MANIFEST).is_file() else []
        runs += [(str(r), r) for r in rounds] or [(str(arg), resolve_run(arg))]
    teacher_steps_or_default = teacher_steps or steps or [DEFAULT_TEACHER_STEPS]
    teachers: dict[str, SweepModel] = {}  # by resolved path (or pipeline source): one entry per teacher
    rows: dict[str, SweepModel] = {}  # the teachers that are rows of the report
    models = []

    def teacher_entry(name: str, model: Denoiser, manifest: dict, key: str) -> SweepModel:
        entry = teachers.setdefault(key, SweepModel(name, "teacher", model, manifest, teacher_steps_or_default,
                                                    ["deterministic"]))
        entry.teacher = entry
        return entry

    for name, run in runs:
        model, manifest, _ = load_model(run)
        if manifest["kind"] == "teacher":
            rows.setdefault(str(run.resolve()), teacher_entry(name, model, manifest, str(run.resolve())))
            continue
        if manifest["kind"] == "consistency":  # any step count of its grid
            run_steps = steps or [k for k in CONSISTENCY_EVAL_STEPS if k <= manifest["solver_steps"]]
        else:
            run_steps = steps or [manifest.get("steps") or DEFAULT_TEACHER_STEPS]
        if manifest["kind"] in OWN_SAMPLERS:  # consistency and DMD runs sample with their own
            run_samplers = [OWN_SAMPLERS[manifest["kind"]]]
        else:
            run_samplers = [s for s in samplers if s not in OWN_SAMPLERS.values()] or ["deterministic"]
        entry = SweepModel(name, _kind_of(manifest), model, manifest, run_steps, run_samplers)
        models.append(entry)
        if (teacher_steps or with_teachers) and manifest.get("teacher"):
            known = next((t for t in teachers.values() if t.label == manifest["teacher"]), None)
            if known is None:
                try:
                    teacher, teacher_manifest, teacher_path = load_model(manifest["teacher"])
                except GdistillError as e:
                    raise GdistillError(f"cannot load {run}'s teacher (for --teacher-steps or the to-teacher "
                                        f"columns): {e}") from None
                if is_latent_run(teacher_manifest):  # a diffusers teacher, at the run's resolution
                    teacher.with_latent_size(model.data_shape[-1])
                known = teacher_entry(manifest["teacher"], teacher, teacher_manifest, str(Path(teacher_path).resolve()))
            entry.teacher = known
            if teacher_steps:
                rows.setdefault(str(id(known)), known)
    sweep = list({id(t): t for t in rows.values()}.values()) + models
    if any(getattr(m.model, "inpainting", False) for m in sweep):
        raise GdistillError("eval samples from prompts alone, and an inpainting model also needs images and masks: "
                            "score it with your own `gdistill inpaint` outputs")
    shapes = {sample_shape(m) for m in sweep}
    if len(shapes) > 1:
        raise GdistillError(f"the runs make samples of different shapes {sorted(shapes)}: evaluate them separately")
    return sweep


def is_text_model(entry: SweepModel) -> bool:
    return is_text_run(entry.manifest)


def sample_shape(entry: SweepModel) -> tuple[int, ...]:
    """What is scored: the model's samples, or for SD-family and DiT runs the VAE's decoded images."""
    if not is_latent_run(entry.manifest):
        return tuple(entry.model.data_shape)
    from ..models.sd_pipeline import pipeline_for, vae_scale_factor

    pipe = pipeline_for(entry.manifest["pipeline"])
    size = entry.model.data_shape[-1] * vae_scale_factor(pipe)
    return (pipe.vae.config.out_channels, size, size)


class Scorer:
    """Scores a sample set with the metrics asked for, against one reference. The reference's
    features (digits classifier) or statistics (torch-fidelity) are cached by content hash."""

    def __init__(self, metrics: set[str], ref: str, sample_shape: tuple[int, ...], n: int, cache_dir: Path,
                 device: torch.device, inception_weights: Path | None = None, clip_model: str | None = None,
                 prompts: list[str] | None = None, num_classes: int | None = None,
                 log: Callable[[str], None] = print, to_teacher: bool = False):
        unknown = set(metrics) - set(METRIC_FLAGS)
        if unknown:
            raise GdistillError(f"unknown metric {', '.join(sorted(unknown))}: use {', '.join(METRIC_FLAGS)}")
        if n < 2:
            raise GdistillError(f"--n must be at least 2, got {n}")
        if "prc" in metrics and n <= PRC_NEIGHBOURS:
            raise GdistillError(f"--prc needs more than {PRC_NEIGHBOURS} samples (its radii are distances to the "
                                f"k-th nearest neighbour, k = {PRC_NEIGHBOURS}): --n is {n}; use 300 or more for stable figures")
        self.asked, self.device = set(metrics), torch.device(device)
        self.reference: ReferenceSet = load_reference(ref, sample_shape)
        self.columns: list[str] = []
        self.network = self.clip = self.classifier = None
        self.names: dict[str, str] = {}  # metric flag (fid, isc, kid) -> the network's column
        self.network_prc: tuple[str, str] | None = None  # the network's (precision, recall) columns, with --prc
        self.unavailable: dict[str, str] = {}  # column -> why it is n/a in every row
        self.inception_weights: str | None = None
        self._target_features: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.cache_dir = Path(cache_dir)
        feature_metrics = self.asked & {"fid", "isc", "kid"}
        is_image = len(sample_shape) == 3
        fashion = self.reference.name.startswith("fashion-mnist") and is_image
        # the feature network is loaded for its metrics, and for --prc where the Fashion classifier does not serve
        network_metrics = feature_metrics | (self.asked & {"prc"} if is_image and not fashion else set())

        if feature_metrics and not is_image:
            raise GdistillError(f"--{'/--'.join(sorted(feature_metrics))} score images, and these samples are "
                                f"{tuple(sample_shape)}-shaped points: use --ed (energy distance to --ref toy2d)")
        if network_metrics and self.reference.name == "digits":
            from ..metrics.digits import FEATURES, DigitsClassifier

            if tuple(sample_shape) != (1, 8, 8):
                raise GdistillError(f"--ref digits scores 8x8 grey digits, and these samples are {tuple(sample_shape)}: "
                                    "pass an image folder as --ref")
            if "fid" in self.asked and n <= FEATURES:
                raise GdistillError(f"--n {n} is too small for digits-FD: its features are {FEATURES}-dimensional; "
                                    f"use --n {FEATURES + 1} or more (500 or more for stable figures)")
            self._use_network(DigitsClassifier(), {"fid": "digits_fd", "isc": "digits_is", "kid": "digits_kid"},
                              ("digits_precision", "digits_recall"), log)
            self.classifier = self.network
            self.columns.append("class_accuracy")
        elif network_metrics:
            from ..metrics.fidelity import INCEPTION_FEATURES
            from ..metrics.inception import TorchScriptInception, is_torchscript_file

            if "fid" in self.asked and min(n, len(self.reference.samples)) <= INCEPTION_FEATURES:
                raise GdistillError(
                    f"FID needs more than {INCEPTION_FEATURES} samples in each set (Inception features are "
                    f"{INCEPTION_FEATURES}-dimensional): --n is {n} and --ref holds {len(self.reference.samples)}; "
                    "use more (10,000 is usual)")
            if inception_weights is not None and is_torchscript_file(Path(inception_weights)):
                self._use_network(TorchScriptInception(inception_weights, self.device), {"fid": "fid", "isc": "is", "kid": "kid"},
                                  ("precision", "recall"), log)
                if "isc" in self.asked:
                    self.unavailable["is"] = ("the TorchScript Inception has no classifier head (logits); "
                                              "IS needs torch-fidelity's weights")
            else:
                from ..metrics.fidelity import ensure_inception_weights, import_torch_fidelity

                if "prc" in self.asked and not fashion:
                    raise GdistillError("--prc on Inception features needs --inception-weights FILE, a TorchScript "
                                        "Inception (gdistill computes it on features it holds; torch-fidelity keeps its own)")
                import_torch_fidelity()
                self.inception_weights = ensure_inception_weights(inception_weights)
                self.names = {"fid": "fid", "isc": "is", "kid": "kid"}
                self.columns += [self.names[flag] for flag in ("fid", "isc", "kid") if flag in self.asked]
        if self.reference.name.startswith("fashion-mnist") and is_image:
            # the shipped Fashion-MNIST classifier: class accuracy and fashion-FD, offline and cheap
            from ..metrics.fashion import FEATURES as FASHION_FEATURES, FashionClassifier

            if n <= FASHION_FEATURES:
                raise GdistillError(f"--n {n} is too small for fashion-FD: its features are {FASHION_FEATURES}-dimensional; "
                                    f"use --n {FASHION_FEATURES + 1} or more")
            self.classifier = FashionClassifier()
            self.classifier_reference, hit = FeatureCache(self.cache_dir).features(
                self.classifier.id, self.reference, self.classifier.features)
            log(f"reference {self.reference.name}: fashion classifier features {'from the cache' if hit else 'computed and cached'}")
            self.columns += ["fashion_fd", "class_accuracy"]
            if "prc" in self.asked:
                self.columns += ["fashion_precision", "fashion_recall"]
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
        self.points_prc = "prc" in self.asked and not is_image  # points are their own features
        if self.points_prc:
            self.columns += ["precision", "recall"]
        self.to_teacher = to_teacher
        if to_teacher:
            self.columns += [f"{c}{TO_TEACHER}" for c in list(self.columns) if c in DISTANCE_COLUMNS + PRC_COLUMNS]

    def _use_network(self, network, names: dict[str, str], prc_names: tuple[str, str],
                     log: Callable[[str], None]) -> None:
        """Score with a feature network of ours (digits classifier, TorchScript Inception): the
        reference's features come from the cache, keyed by content and network."""
        self.network, self.names = network, names
        features, hit = FeatureCache(self.cache_dir).features(network.id, self.reference, network.features)
        log(f"reference {self.reference.name}: {len(features)} images, features "
            f"{'from the cache' if hit else 'computed and cached'}")
        self.reference_features = features
        self.columns += [names[flag] for flag in ("fid", "isc", "kid") if flag in self.asked]
        if "prc" in self.asked:
            self.network_prc = prc_names
            self.columns += list(prc_names)

    def _features_of(self, network, result: SampleResult) -> torch.Tensor:
        """A network's features of a target sample set (a teacher's), computed once per set."""
        key = (network.id, id(result.samples))
        if key not in self._target_features:  # the entry holds the samples, so their id stays theirs
            self._target_features[key] = (result.samples, network.features(result.samples))
        return self._target_features[key][1]

    def _distances(self, samples, labels, features, classifier_features, target: SampleResult | ReferenceSet,
                   suffix: str) -> dict:
        """The distance columns of samples to a target set: the reference, or the teacher's samples."""
        values: dict[str, float | None] = {}
        target_samples, target_labels = target.samples, target.labels
        to_reference = isinstance(target, ReferenceSet)
        if classifier_features is not None:
            theirs = self.classifier_reference if to_reference else self._features_of(self.classifier, target)
            values["fashion_fd" + suffix] = _or_none(lambda: frechet_distance_of(classifier_features, theirs))
            if "prc" in self.asked:
                values.update(_precision_recall(classifier_features, theirs, ("fashion_precision", "fashion_recall"), suffix,
                                                self.device))
        if features is not None:
            target_features = self.reference_features if to_reference else self._features_of(self.network, target)
            if "fid" in self.asked:
                values[self.names["fid"] + suffix] = _or_none(lambda: frechet_distance_of(features, target_features))
            if "kid" in self.asked:
                values[self.names["kid"] + suffix] = _or_none(lambda: kernel_distance(features, target_features)[0])
            if self.network_prc is not None:
                values.update(_precision_recall(features, target_features, self.network_prc, suffix, self.device))
        elif self.names and self.network is None:  # torch-fidelity: one call for all its metrics (IS too, to the reference)
            from ..metrics.fidelity import inception_metrics

            asked = {self.names[f] for f in ("fid", "kid") if f in self.asked}
            if to_reference and "isc" in self.asked:
                asked.add("is")
            elif not to_reference:
                target = ReferenceSet("teacher", target_samples, target_labels, tensor_hash(target_samples, target_labels))
            if asked:
                values.update({k + suffix: v for k, v in inception_metrics(
                    samples, target, asked, self.inception_weights, self.cache_dir, self.device).items()})
        if "class_ed" in self.columns:
            values["class_ed" + suffix] = _or_none(
                lambda: _class_ed_to_reference(samples, labels, target) if isinstance(target, ReferenceSet)
                else class_energy_distance(samples, target_samples, labels, target_labels))
        if "ed" in self.columns:
            values["ed" + suffix] = _or_none(lambda: energy_distance(samples, target_samples))
        if self.points_prc:
            values.update(_precision_recall(samples, target_samples, ("precision", "recall"), suffix, self.device))
        return values

    def score(self, result: SampleResult, teacher: SampleResult | None = None) -> dict[str, float | None]:
        """The row's metrics against the reference, and with `teacher` (the guided teacher's samples
        at the same w, another seed) the *_to_teacher distances."""
        values: dict[str, float | None] = {}
        samples, labels = result.samples, result.labels
        if bool(torch.isfinite(samples).all()):
            features = self.network.features(samples) if self.network is not None else None
            mine = self.classifier.features(samples) if "fashion_fd" in self.columns else None
            values.update(self._distances(samples, labels, features, mine, self.reference, ""))
            if self.to_teacher and teacher is not None:
                values.update(self._distances(samples, labels, features, mine, teacher, TO_TEACHER))
            if features is not None and "isc" in self.asked and self.network.has_logits:
                values[self.names["isc"]] = _or_none(lambda: inception_score(self.network.logits(samples))[0])
            if "class_accuracy" in self.columns:
                values["class_accuracy"] = self.classifier.accuracy(samples, labels)
            if self.clip is not None:
                values["clip_score"] = self.clip.score(samples, [self.prompts[k] for k in labels.tolist()])
        return {c: values.get(c) for c in self.columns}


def _precision_recall(mine: torch.Tensor, theirs: torch.Tensor, names: tuple[str, str], suffix: str,
                      device: torch.device) -> dict:
    """{names + suffix: (precision, recall)} of features `mine` against `theirs`, the larger set cut
    to the smaller's size by a fixed draw: the manifolds' radii depend on the set size, so equal
    sets keep a student's figures comparable with its teacher's, and a reference's with itself.
    On the eval's device: four n x n distance matrices a row (10,000 Inception features: seconds
    on a CPU, a blink on a GPU)."""
    size = min(len(mine), len(theirs))
    mine, theirs = (f[torch.randperm(len(f), generator=torch.Generator().manual_seed(0))[:size]].to(device)
                    if len(f) > size else f.to(device) for f in (torch.as_tensor(mine), torch.as_tensor(theirs)))
    return {name + suffix: value for name, value in zip(names, precision_recall(theirs, mine, PRC_NEIGHBOURS))}


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


def _sample_entry(entry: SweepModel, steps: int, w: float, sampler: str, n: int, seed: int, device,
                  prompts: list[str] | None) -> SampleResult:
    """n samples of one model at (steps, w, sampler): class labels cycling, or prompts for text models."""
    if is_text_model(entry):
        return sample_prompts(entry.model, entry.manifest, prompts, n, steps, w, sampler, seed, device)
    result = sample(entry.model, cycle_labels(n, entry.model.num_classes), steps, w, sampler, seed,
                    data_range_of(entry.manifest), device=device, solver_steps=entry.manifest.get("solver_steps"))
    return decode_latent_samples(result, entry.manifest, device)


def repeat_seeds(seed: int, repeats: int) -> list[tuple[int, int]]:
    """(the rows' seed, the teacher reference's seed) of each repeat: seed + 2r and seed + 2r + 1.
    Spaced by two so that no repeat's rows start from another repeat's reference noise (a guided
    teacher row would then sit on its own reference, at distance 0)."""
    return [(seed + 2 * r, seed + 2 * r + 1) for r in range(repeats)]


def run_sweep(sweep: list[SweepModel], ws: list[float], scorer: Scorer, n: int, seed: int, device,
              on_row: Callable[[Row, SampleResult], None], prompts: list[str] | None = None,
              to_teacher_steps: int = 0, repeats: int = 1) -> list[Row]:
    """Sample and score every (model, sampler, steps, w). Every row draws the same labels (or
    prompts) and the same starting noise (the seed), so differences between rows are the models'.
    With to_teacher_steps, each row is also compared with its guided teacher's samples at the same
    w: that many DDIM steps from seed + 1 (another seed, so a teacher row shows the noise floor),
    drawn once per (teacher, w). With repeats > 1 every row is sampled and scored again from the
    further seeds of `repeat_seeds`, each with its own teacher reference."""
    rows, teacher_samples = [], {}

    def teacher_reference(entry: SweepModel, w: float, reference_seed: int) -> SampleResult | None:
        if not to_teacher_steps or entry.teacher is None:
            return None
        key = (id(entry.teacher), w, reference_seed)
        if key not in teacher_samples:
            teacher_samples[key] = _sample_entry(entry.teacher, to_teacher_steps, w, "deterministic", n,
                                                 reference_seed, device, prompts)
        return teacher_samples[key]

    for entry in sweep:
        for sampler in entry.samplers:
            for steps in entry.steps:
                for w in ws:
                    for row_seed, reference_seed in repeat_seeds(seed, repeats):
                        result = _sample_entry(entry, steps, w, sampler, n, row_seed, device, prompts)
                        row = Row(entry.label, entry.kind, sampler, steps, w, result.calls_per_image, result.seconds / n,
                                  n, row_seed, scorer.score(result, teacher_reference(entry, w, reference_seed)))
                        rows.append(row)
                        on_row(row, result)
    return rows


def evaluate_into(out: Path, overwrite: bool, sweep: list[SweepModel], ws: list[float], scorer: Scorer, n: int,
                  seed: int, device, settings: dict, on_row: Callable[[Row], None],
                  prompts: list[str] | None = None, to_teacher_steps: int = 0,
                  repeats: int = 1) -> tuple[list[dict], list[dict] | None]:
    """Run the sweep and write the report folder (see metrics/report.py): built in `.NAME.partial/`
    and renamed into place when complete, like a run. Returns the rows as dicts (every repeat's) and,
    with repeats > 1, their summary (mean ± std per row of the table)."""
    from ..metrics.report import summarize_repeats, write_plots, write_tables

    work = prepare_output(Path(out), overwrite, resumable=False)
    (work / "grids").mkdir(parents=True)
    entries = {e.label: e for e in sweep}

    def save_grid(row: Row, result: SampleResult) -> None:
        if row.seed != seed:  # one grid a row: the first repeat's
            on_row(row)
            return
        first = SampleResult(result.samples[:100], result.labels[:100], result.calls_per_image, result.seconds)
        num_classes = entries[row.run].model.num_classes
        run_name = Path(row.run).name  # the kind too where the folder's name does not say it (dmd-gan-0.1-dmd-...)
        label = run_name if run_name == row.model else f"{run_name}-{row.model}"
        name = f"{label}-{row.sampler}-{row.steps}steps-w{row.w:g}.png"
        text = is_text_model(entries[row.run])
        save_samples(first, work / "grids" / name, data_range_of(entries[row.run].manifest),
                     num_classes if 0 < num_classes <= 16 else None, prompts=prompts if text else None,
                     own_size=is_latent_run(entries[row.run].manifest))
        on_row(row)

    rows = [r.as_dict() for r in run_sweep(sweep, ws, scorer, n, seed, device, save_grid, prompts, to_teacher_steps,
                                           repeats)]
    summary = summarize_repeats(rows) if repeats > 1 else None
    write_tables(rows, work, {**settings, "seeds": repeat_seeds(seed, repeats)}, summary)
    write_plots(summary or rows, work)
    publish_dir(work, Path(out))
    return rows, summary


@dataclass
class EvalPlan:
    """What `gdistill eval` will do, every input checked before any sampling."""
    sweep: list[SweepModel]
    scorer: Scorer
    metrics: set[str]
    prompts: list[str] | None  # for text models (sample k uses prompt k mod their number); else None

    def rows_total(self, ws: list[float], repeats: int = 1) -> int:
        return sum(len(e.samplers) * len(e.steps) * len(ws) for e in self.sweep) * repeats


def plan_eval(froms: list[str], ws: list[float], steps: list[int] | None, teacher_steps: list[int] | None,
              samplers: list[str], metrics: set[str], ref: str | None, prompts_file: Path | None, n: int,
              to_teacher_steps: int, out: Path, overwrite: bool, cache_dir: Path, device,
              inception_weights: Path | None, clip_model: str | None, warn: Callable[[str], None],
              log: Callable[[str], None], repeats: int = 1) -> EvalPlan:
    """eval's rules: the sweep of runs (and their teachers), the reference (default: the first run's
    dataset; Fashion-MNIST and MNIST-format data: their test split), the default metric (images: a
    Fréchet distance; Fashion-MNIST: its classifier's, always computed; points: energy distance),
    the prompts (text models need --prompts and --ref; class models' default: their class names),
    and the Scorer with everything it needs loaded."""
    from ..diffusion.samplers import SAMPLERS
    from ..metrics.clip import read_prompts
    from ..metrics.reference import default_reference

    if any(v < 1 for v in (steps or []) + (teacher_steps or [])):
        raise GdistillError("--steps and --teacher-steps must be at least 1")
    if repeats < 1:
        raise GdistillError(f"--repeats must be at least 1 (the number of seeds each row is sampled from), got {repeats}")
    if to_teacher_steps < 0:
        raise GdistillError(f"--to-teacher must be a step count >= 1, or 0 for off; got {to_teacher_steps}")
    if not samplers or any(v not in SAMPLERS for v in samplers):
        raise GdistillError(f"--sampler {','.join(samplers)!r}: use {', '.join(SAMPLERS)}, or both comma-separated")
    if out.exists() and not overwrite:
        raise GdistillError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    sweep = plan_sweep(froms, steps, teacher_steps, samplers, with_teachers=to_teacher_steps > 0)
    first = sweep[0]
    for entry in sweep:
        w_range = entry.manifest.get("w_range")
        outside = [v for v in ws if w_range and not w_range[0] <= v <= w_range[1]]
        if outside:
            warn(f"{entry.label} was trained for w in [{w_range[0]}, {w_range[1]}]; "
                 f"w={','.join(f'{v:g}' for v in outside)} lies outside")
    shape = sample_shape(first)
    text = is_text_model(first)
    if text and (not prompts_file or not ref):
        raise GdistillError(f"{first.label} is text-conditioned: pass --prompts FILE (one prompt per line; sample k "
                            "uses line k mod their number) and --ref, a folder of reference images")
    ref = ref or default_reference(first.manifest.get("dataset") or {})
    if not ref:
        raise GdistillError(f"{first.label} records no dataset: pass --ref (an image folder, digits or toy2d)")
    if not metrics:
        metrics = set() if ref.startswith("fashion-mnist") else {"fid"} if len(shape) == 3 else {"ed"}
    prompt_list = read_prompts(prompts_file) if prompts_file else first.manifest.get("class_names")
    scorer = Scorer(metrics, ref, shape, n, cache_dir, device, inception_weights, clip_model, prompt_list,
                    None if text else first.model.num_classes, log=log, to_teacher=to_teacher_steps > 0)
    return EvalPlan(sweep, scorer, metrics, prompt_list if text else None)
