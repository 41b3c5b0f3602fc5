"""Sampling: deterministic DDIM or the paper's stochastic sampler (diffusion/samplers.py) on an
N-step grid, for a w-conditioned student (1 call a step) or a guided teacher (2 calls a step,
batched). This module draws the noise, batches, starts edits and writes the results; the grid
loop itself is diffusion.samplers.run_grid."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch

from ..diffusion import consistency_grid, sampling_grid
from ..diffusion.samplers import SAMPLERS, KnownRegion, run_grid, sdedit_start
from ..errors import GdistillError
from ..images import image_grid, scatter_plot
from ..models import Denoiser, calls_per_step, denoise_fn


@dataclass
class SampleResult:
    samples: torch.Tensor  # (n, ...) in the data's own space
    labels: torch.Tensor
    calls_per_image: int
    seconds: float


def cycle_labels(n: int, num_classes: int, label: int | None = None) -> torch.Tensor:
    if label is not None:
        return torch.full((n,), label, dtype=torch.long)
    return torch.arange(n) % num_classes


@dataclass
class InputImage:
    """Sampling that starts from, or keeps part of, an input (edit, inpaint).

    x: the inputs in the model's data space, one per sample (their shape is the samples').
    first_step: where on the N-step grid to start: 0 = from noise at t = 1; N - k = run the last k
        steps from the input diffused to t = k / N (SDEdit; see snap_strength).
    mask: 1 where to generate, 0 where to keep the input, shaped (n, 1, ...) like x; None = no
        mask. After every step the kept region is replaced by the input diffused to the new time
        (keep_known), and after the last one by the input itself."""

    x: torch.Tensor
    first_step: int = 0
    mask: torch.Tensor | None = None


@torch.no_grad()
def sample(model: Denoiser, labels: torch.Tensor, steps: int, w: float, sampler: str = "deterministic",
           seed: int = 0, data_range: tuple[float, float] | None = None, batch_size: int = 256,
           device: str | torch.device = "cpu", input_image: InputImage | None = None,
           on_step: Callable[[int], None] | None = None, solver_steps: int | None = None) -> SampleResult:
    """Draw one sample per label. Noise comes from a CPU generator seeded with `seed`, so the same seed
    gives the same images on any device and for teacher and student alike (and an edit at full
    strength is the plain sample). `on_step(k)` is told after every grid step of every batch, k
    being the samples that step advanced (a progress bar's total is len(labels) x steps run).
    The consistency sampler runs on the `solver_steps` grid its run was distilled on (manifest)."""
    if sampler not in SAMPLERS:
        raise GdistillError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    update = SAMPLERS[sampler]
    generator = torch.Generator().manual_seed(seed)
    model = model.to_device(device)
    first = input_image.first_step if input_image is not None else 0
    ends = None
    if update.consistency:
        if not solver_steps:
            raise GdistillError("--sampler consistency is for consistency runs (`gdistill consistency`): "
                                "use deterministic or stochastic for this run")
        if steps > solver_steps:
            raise GdistillError(f"a consistency run samples in 1 to {solver_steps} steps (its solver grid), not {steps}")
        times = consistency_grid(steps, solver_steps)
        grid, ends = times[first:], (times + [0.0])[first + 1:]
    else:
        grid = sampling_grid(steps)[first:]
    start = time.perf_counter()
    out = []
    for offset in range(0, len(labels), batch_size):
        c = labels[offset:offset + batch_size].to(device)
        shape = (len(c), *(input_image.x.shape[1:] if input_image is not None else model.data_shape))
        # The draws, in a fixed order: z, the sampler's noise for every grid step (drawn for the
        # whole grid, so an edit uses the plain sample's noise at each time), the known region's.
        z = torch.randn(shape, generator=generator).to(device)
        noises = [torch.randn(shape, generator=generator).to(device) for _ in range(steps)][first:] \
            if update.draws_noise else None
        known = None
        if input_image is not None:
            x_in = input_image.x[offset:offset + len(c)].to(device)
            if input_image.mask is not None:
                known = KnownRegion(x_in, input_image.mask[offset:offset + len(c)].to(device),
                                    [torch.randn(shape, generator=generator).to(device) for _ in grid])
            if first > 0:  # SDEdit: the input diffused to the first time (the noise z drawn as for sampling)
                z = sdedit_start(model.schedule, x_in, z, grid[0] if grid else 0.0)
            if not grid:  # strength 0: nothing to run
                z = x_in
        predict = denoise_fn(model, c, torch.full((len(c),), float(w), device=device))
        # data_range: x clipped to it at sampling time (pixel space)
        z = run_grid(predict, z, model.schedule, grid, 1.0 / steps, update, noises, data_range, known,
                     None if on_step is None else lambda: on_step(len(c)), ends)
        out.append(z.cpu())
    seconds = time.perf_counter() - start
    return SampleResult(torch.cat(out), labels, len(grid) * calls_per_step(model), seconds)


def sample_prompts(model: Denoiser, manifest: dict, prompts: list[str], n: int, steps: int, w: float,
                   sampler: str = "deterministic", seed: int = 0, device="cpu",
                   negative_prompt: str | None = None, on_step: Callable[[int], None] | None = None) -> SampleResult:
    """Images from an SD-family run or teacher: prompt k % len(prompts) for image k, sampled in
    latent space as `sample` does, decoded by the teacher pipeline's VAE. Returns images in
    [-1, 1] with the prompt index as the label."""
    from ..models.sd_encoders import SDEncoders

    if getattr(model, "inpainting", False):
        raise GdistillError("this is an inpainting model: it needs an image and a mask; use `gdistill inpaint`")
    if negative_prompt is not None and model.w_conditioned:
        baked = manifest.get("negative_prompt")
        raise GdistillError("a distilled student has no unconditional branch to steer: its negative prompt is fixed "
                            f"when it is trained (`gdistill match --negative-prompt`; this one: {baked!r})")
    encoders = SDEncoders(manifest["pipeline"]).to(device)
    negative = None if negative_prompt is None else encoders.encode_prompts([negative_prompt])[0]
    index = torch.arange(n) % len(prompts)
    conditions = encoders.encode_prompts([prompts[i] for i in index.tolist()])
    with model.unconditional(negative):
        latents = sample(model, conditions, steps, w, sampler, seed, device=device, on_step=on_step,
                         solver_steps=manifest.get("solver_steps"))
    return SampleResult(encoders.decode(latents.samples), index, latents.calls_per_image, latents.seconds)


def decode_latent_samples(result: SampleResult, manifest: dict, device) -> SampleResult:
    """A class-conditional latent run's (DiT's) samples as images in [-1, 1], decoded by its
    teacher pipeline's VAE; the samples of any other run unchanged."""
    from ..run_folder import is_latent_run, is_text_run

    if not is_latent_run(manifest) or is_text_run(manifest):
        return result
    from ..models.sd_encoders import SDEncoders

    images = SDEncoders(manifest["pipeline"]).to(device).decode(result.samples)
    return SampleResult(images, result.labels, result.calls_per_image, result.seconds)


def save_samples(result: SampleResult, path: Path, data_range, columns: int | None = None,
                 prompts: list[str] | None = None, own_size: bool = False) -> Path:
    """.npz: arrays `samples` and `labels` (and `prompts`, which labels index, for text models);
    .png: an image grid (one image alone at full size) or a scatter plot (2-D). Decoded latents
    (own_size, or text models' images) stay at their size; small pixel data are upscaled to be seen."""
    path = Path(path)
    if path.suffix not in (".png", ".npz"):
        raise GdistillError(f"--out {path} must end in .png (an image) or .npz (arrays)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GdistillError(f"cannot create {path.parent}: {e.strerror}") from None
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    if path.suffix == ".npz":
        extra = {"prompts": np.array(prompts)} if prompts else {}
        np.savez(tmp, samples=result.samples.numpy(), labels=result.labels.numpy(), **extra)
    else:
        if result.samples.dim() == 2:
            image = scatter_plot(result.samples, result.labels)
        else:
            columns = columns or int(np.ceil(np.sqrt(len(result.samples))))
            image = image_grid(result.samples, columns, data_range or (-1.0, 1.0), cell=0 if own_size or prompts else 32)
        image.save(tmp)
    tmp.replace(path)
    return path


def sample_to_file(from_run: str, out: Path, n: int | None, steps: int | None, w: float, label: int | None,
                   prompts: list[str] | None, negative_prompt: str | None, sampler: str | None, seed: int, device,
                   raw_weights: bool, allow_any_steps: bool, warn: Callable[[str], None],
                   progress: Callable[[str, int], ContextManager[Callable[[int], None]]],
                   compile: bool = False) -> tuple[SampleResult, int, int]:
    """`gdistill sample`: every check that needs no sampling first (the output is checked writable
    before the minutes of sampling), then n samples (64 for class models, one a prompt for text
    models) at the run's own steps unless told, written to `out` (.png grid or .npz); with `compile`
    the model's forward is torch.compiled first. Returns (result, n, steps)."""
    from ..files import check_writable
    from ..run_folder import RAW_WEIGHTS, load_model

    if n is not None and n < 1:
        raise GdistillError(f"--n must be at least 1, got {n}")
    if steps is not None and steps < 1:
        raise GdistillError(f"--steps must be at least 1, got {steps}")
    if out.suffix not in (".png", ".npz"):
        raise GdistillError(f"--out {out} must end in .png (an image) or .npz (arrays)")
    check_writable(out)
    loaded = load_model(from_run, raw=raw_weights)
    model, manifest, run = loaded
    if compile:  # in place: the first batch compiles the forward, later ones reuse it
        model.compile_for_sampling()
    if loaded.is_text and not prompts:
        raise GdistillError(f"{run} is text-conditioned: pass --prompt \"...\" (repeat it for more prompts)")
    if not loaded.is_text and (prompts or negative_prompt is not None):
        raise GdistillError(f"{run} is class-conditional ({model.kind}): choose the class with --label, not --prompt")
    if loaded.is_text and label is not None:
        raise GdistillError(f"{run} is text-conditioned: it takes --prompt, not --label")
    if raw_weights and RAW_WEIGHTS not in manifest["files"]:
        warn(f"{run} keeps no raw weights (no EMA was kept, or it is a built-in); using its only weights")
    if label is not None and not 0 <= label < model.num_classes:
        raise GdistillError(f"--label {label} is out of range: {run} has classes 0..{model.num_classes - 1}")
    steps = loaded.sampling_steps(steps, allow_any_steps, warn)
    loaded.warn_outside_w_range(w, warn)
    sampler = sampler or loaded.default_sampler
    if loaded.is_text:
        n = n or len(prompts)
        with progress("sample", n * steps) as on_step:
            result = sample_prompts(model, manifest, prompts, n, steps, w, sampler, seed, device, negative_prompt, on_step)
        save_samples(result, out, (-1.0, 1.0), min(n, len(prompts)), prompts=prompts)
    else:
        n = n or 64
        with progress("sample", n * steps) as on_step:
            result = sample(model, cycle_labels(n, model.num_classes, label), steps, w, sampler, seed,
                            loaded.data_range, device=device, on_step=on_step, solver_steps=manifest.get("solver_steps"))
        result = decode_latent_samples(result, manifest, device)
        columns = model.num_classes if label is None and model.num_classes <= 16 else None
        save_samples(result, out, loaded.data_range or ((-1.0, 1.0) if loaded.is_latent else None), columns,
                     own_size=loaded.is_latent)
    return result, n, steps
