"""Run directories: safetensors weights + manifest.yaml, written atomically, loaded with checks.

    RUN/manifest.yaml        lineage and settings (written last)
    RUN/model.safetensors    the weights used for sampling and as the next stage's teacher (EMA
                             when the stage kept one)
    RUN/raw.safetensors      the last raw training weights, when they differ (EMA kept)
    RUN/log.jsonl            one JSON object per logging interval

A run being trained lives in a sibling work folder `.NAME.partial/` (with its resume checkpoint)
and becomes RUN by one rename, so RUN is either complete or absent.
"""
from __future__ import annotations

import datetime
import shutil
from importlib import resources
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import __version__
from .errors import GdistillError
from .files import fsync_file, publish_dir, save_safetensors_atomic, sha256_file

MANIFEST = "manifest.yaml"
WEIGHTS = "model.safetensors"
RAW_WEIGHTS = "raw.safetensors"
LOG = "log.jsonl"
# what an objective makes once per run and keeps across resumes (DMD's teacher samples); removed at commit
SCRATCH = "scratch"
RUN_KINDS = ("teacher", "stage1", "round", "consistency", "dmd")
# the sampler a run of each kind samples with unless told otherwise (DDIM for the others)
OWN_SAMPLERS = {"consistency": "consistency", "dmd": "renoise"}
CONSISTENCY_DEFAULT_STEPS = 4
REQUIRED_FIELDS = ("gdistill_version", "kind", "model", "files")
BUILTIN_TEACHERS = ("digits", "toy2d")


def builtin_path(name: str) -> Path:
    """A file or run shipped in gdistill/builtin/ (teachers, the digits classifier)."""
    return Path(str(resources.files("gdistill") / "builtin" / name))


def resolve_run(arg: str | Path) -> Path:
    """A run path, or a built-in teacher name (digits, toy2d) standing for its shipped run."""
    path = Path(arg)
    if str(arg) in BUILTIN_TEACHERS and not path.exists():
        path = builtin_path(str(arg))
        if not (path / MANIFEST).is_file():
            raise GdistillError(f"the built-in teacher {arg!r} is missing from this install: reinstall gdistill")
        return path
    if not path.exists():
        raise GdistillError(f"run {path} does not exist: pass a run directory, a built-in teacher ({', '.join(BUILTIN_TEACHERS)}) "
                            "or an SD-family teacher (sd15, sdxl, sd3, a diffusers pipeline folder, a .safetensors checkpoint)")
    if not (path / MANIFEST).is_file():
        hint = ""
        if (path / "round-1").is_dir():
            hint = f" (it holds rounds: pass one of them, e.g. {path / 'round-1'})"
        elif path.parent.joinpath(f".{path.name}.partial").exists():
            hint = " (an unfinished run; re-run its command to resume it)"
        raise GdistillError(f"{path} is not a gdistill run: {MANIFEST} is missing{hint}")
    return path


def read_manifest(run: Path) -> dict:
    try:
        manifest = yaml.safe_load((run / MANIFEST).read_text())
    except yaml.YAMLError as e:
        raise GdistillError(f"{run / MANIFEST} is not valid YAML ({e.__class__.__name__}): the run is damaged, re-create it") from None
    if not isinstance(manifest, dict):
        raise GdistillError(f"{run / MANIFEST} is not a mapping: the run is damaged, re-create it")
    missing = [k for k in REQUIRED_FIELDS if k not in manifest]
    if missing:
        raise GdistillError(f"{run / MANIFEST} lacks {', '.join(missing)}: the run is damaged or not from gdistill")
    if manifest["kind"] not in RUN_KINDS:
        raise GdistillError(f"{run / MANIFEST} has unknown kind {manifest['kind']!r} (known: {', '.join(RUN_KINDS)})")
    return manifest


def load_weights(run: Path, manifest: dict, raw: bool = False) -> dict[str, torch.Tensor]:
    """The run's weights, after checking their sha256 against the manifest."""
    name = RAW_WEIGHTS if raw and RAW_WEIGHTS in manifest["files"] else WEIGHTS
    path = run / name
    if not path.is_file():
        raise GdistillError(f"{path} is missing: the run is incomplete, re-create it")
    expected = manifest["files"].get(name)
    if expected is not None and sha256_file(path) != expected:
        raise GdistillError(f"{path} does not match the sha256 in its manifest: the file is corrupted or was replaced; re-create the run")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise GdistillError(f"cannot read {path}: {e}") from None


def is_latent_run(manifest: dict) -> bool:
    """A run of a diffusers-pipeline teacher (SD family, DiT): sampled in its VAE's latents."""
    return bool(manifest.get("pipeline"))


def is_text_run(manifest: dict) -> bool:
    """A run of an SD-family teacher: a latent run conditioned on text (DiT's are on class labels)."""
    return is_latent_run(manifest) and manifest.get("model", {}).get("kind") != "dit-transformer"


def data_range_of(manifest: dict) -> tuple[float, float] | None:
    """The range pixel samples are clipped to while sampling; None for latents and 2-D points."""
    data_range = manifest.get("data_range")
    return tuple(data_range) if data_range else None


class LoadedRun(NamedTuple):
    """A loaded run: unpacks as (model, manifest, path) and answers what its manifest says."""
    model: torch.nn.Module
    manifest: dict
    path: Path

    @property
    def is_text(self) -> bool:
        return is_text_run(self.manifest)

    @property
    def is_latent(self) -> bool:
        return is_latent_run(self.manifest)

    @property
    def data_range(self) -> tuple[float, float] | None:
        return data_range_of(self.manifest)

    @property
    def default_sampler(self) -> str:
        """A consistency run samples with the consistency sampler, a DMD generator by re-noising;
        every other run with DDIM."""
        return OWN_SAMPLERS.get(self.manifest["kind"], "deterministic")

    def sampling_steps(self, steps: int | None, allow_any: bool, warn: Callable[[str], None]) -> int:
        """--steps, or the run's own grid (256 for a teacher or a Stage-1 model). A round (or a DMD
        generator) is distilled for its own grid: another step count is refused unless `allow_any`.
        A consistency run takes any count up to its solver grid's (default 4)."""
        if steps is not None and steps < 1:
            raise GdistillError(f"--steps must be at least 1, got {steps}")
        if self.manifest["kind"] == "consistency":
            solver = self.manifest["solver_steps"]
            steps = steps or min(CONSISTENCY_DEFAULT_STEPS, solver)
            if steps > solver:
                raise GdistillError(f"{self.path} samples in 1 to {solver} steps (its solver grid), not {steps}")
            return steps
        distilled = self.manifest.get("steps")
        steps = steps or distilled or 256
        if distilled and steps != distilled:
            if not allow_any:
                raise GdistillError(f"{self.path} was distilled for {distilled} steps, not {steps}: leave --steps out, "
                                    "or pass --allow-any-steps to sample it off its grid")
            warn(f"{self.path} was distilled for {distilled} steps; sampling with {steps}")
        return steps

    def warn_outside_w_range(self, w: float, warn: Callable[[str], None]) -> None:
        """A student learned w in its range only; outside it the output is an extrapolation."""
        w_range = self.manifest.get("w_range")
        if w_range and not w_range[0] <= w <= w_range[1]:
            warn(f"w={w} is outside the trained range [{w_range[0]}, {w_range[1]}]")


def load_model(arg: str | Path, raw: bool = False, pipeline_options: dict | None = None) -> LoadedRun:
    """(denoiser in eval mode, manifest, run path) for a run or built-in teacher name; for a
    diffusers teacher (sd15, sdxl, sd3, a pipeline folder or checkpoint file; `pipeline_options` revision and
    variant) the manifest names the pipeline and the path is its source."""
    from .models import build_denoiser
    from .models.sd_pipeline import is_pipeline_teacher, load_pipeline_teacher

    if is_pipeline_teacher(arg):
        return LoadedRun(*load_pipeline_teacher(str(arg), **(pipeline_options or {})))
    run = resolve_run(arg)
    manifest = read_manifest(run)
    try:
        model = build_denoiser(manifest["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise GdistillError(f"{run / MANIFEST} has a model config gdistill cannot build ({e})") from None
    state = load_weights(run, manifest, raw)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise GdistillError(f"{run / WEIGHTS} does not fit the model in its manifest "
                            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors): re-create the run")
    return LoadedRun(model.eval().requires_grad_(False), manifest, run)


def commit_run(work: Path, out: Path, manifest: dict, weights: dict[str, dict[str, torch.Tensor]],
               keep: tuple[str, ...] = ()) -> Path:
    """Write the weights and then the manifest into the work folder and rename it to `out`.
    `weights` maps file names (WEIGHTS, RAW_WEIGHTS) to state dicts; `keep` names files of the
    scratch folder that the run keeps beside them (recorded with their sha256 as the weights are)."""
    files = {}
    for name, state in weights.items():
        save_safetensors_atomic(state, work / name)
        files[name] = sha256_file(work / name)
    for name in keep:
        (work / SCRATCH / name).replace(work / name)
        files[name] = sha256_file(work / name)
    manifest = {"gdistill_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **manifest, "files": files}
    tmp = work / (MANIFEST + ".tmp")
    tmp.write_text(yaml.safe_dump(manifest, sort_keys=False))
    fsync_file(tmp)
    tmp.rename(work / MANIFEST)
    shutil.rmtree(work / "resume", ignore_errors=True)
    shutil.rmtree(work / SCRATCH, ignore_errors=True)
    return publish_dir(work, out)


def same_run(a: str | None, b: str | None) -> bool:
    """Whether two run arguments (paths, however written, or built-in and pipeline names) name one run."""
    if a is None or b is None:
        return a == b
    where = [Path(x).resolve() if Path(x).exists() else x for x in (a, b)]
    return where[0] == where[1]


def parent_record(run: Path, manifest: dict) -> dict:
    """How a child run names its parent: path, kind, steps and the weights' sha256."""
    return {"path": str(run), "kind": manifest["kind"], "steps": manifest.get("steps"),
            "sha256": manifest["files"][WEIGHTS]}


def run_summary(manifest: dict) -> list[tuple[str, str]]:
    """(field, value) lines that `gdistill info` shows for a run."""
    lines = [(key, str(manifest[key])) for key in ("kind", "round", "steps", "w_range", "parameterization", "dataset",
                                                   "teacher", "gdistill_version", "created") if manifest.get(key) is not None]
    model = manifest["model"]
    lines += [("model", f"{model.get('kind')}, w-conditioned: {model.get('w_conditioned', False)}"),
              ("schedule", str(manifest.get("schedule"))),
              ("weights sha256", manifest["files"].get(WEIGHTS, "?")[:16] + "…")]
    if manifest.get("parent"):
        lines.append(("parent", f"{manifest['parent']['path']} ({manifest['parent']['sha256'][:16]}…)"))
    return lines


def lineage_text(manifest: dict) -> str:
    """teacher -> stage1 -> round r1 (128 steps) -> ..."""
    return " -> ".join(f"{e['kind']}" + (f" r{e['round']}" if e.get("round") else "")
                       + (f" ({e['steps']} steps)" if e.get("steps") else "") for e in lineage(manifest))


def lineage(manifest: dict) -> list[dict]:
    """Ancestors oldest first, as recorded in the manifest, followed by the run itself."""
    me = {k: manifest.get(k) for k in ("kind", "steps", "round", "w_range")}
    return list(manifest.get("lineage", [])) + [me]
