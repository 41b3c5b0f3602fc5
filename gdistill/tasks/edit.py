"""`gdistill edit` (SDEdit) and `gdistill inpaint` with any run, in pixel or latent space.

edit: the input, in the model's data space (pixels, or VAE latents for SD-family runs), is diffused
to t0 = k / N on the student's N-step grid, k = round(strength N) (halves up), and the last k steps run with the
target condition and w: k calls of a student (2k of a guided teacher). Strength 0 returns the input
(after the VAE's round trip in latent space), strength 1 is sampling from noise with the same seed.

inpaint with an inpainting model (a student of SD's 9-channel inpainting UNet): the mask and the
masked image's latents are the model's input, as in diffusers' inpainting pipeline; sampling starts
from noise; the kept pixels are pasted back after decoding.

inpaint, training-free ("replacement", for every other run): sampling from noise, and after every step
the region to keep is replaced by the input diffused to the new time; after the last step it is the
input itself. In latent space the mask is max-pooled to the latent grid (a latent is regenerated
when any pixel under it is to be repainted) and, after decoding, the kept pixels are pasted back
from the input, so they are exactly the input's.

Inputs (docs/edit-inpaint.md): PNG / JPEG / WebP / BMP files, or folders of them (masks matched by
file name). Transparent pixels are composited onto black; images become grey or RGB as the model
needs. Pixel runs resize inputs to the model's size (bicubic; a warning says so); latent runs keep
the input's size, centre-cropped down to a multiple of the VAE's factor (8 px). Masks: grey, white
(>= 0.5) = repaint, resized (nearest) to the image with a warning when sizes differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..diffusion import snap_strength
from ..errors import GdistillError
from ..files import check_writable, prepare_output, publish_dir
from ..images import IMAGE_SUFFIXES, open_image, read_image, to_pil, to_uint8_images
from ..models import Denoiser
from ..run_folder import data_range_of, is_latent_run, is_text_run
from .sample import InputImage, SampleResult, sample


@dataclass
class EditInput:
    name: str  # the file's stem: outputs are named after it
    image: Path
    mask: Path | None = None


def collect_inputs(image: str | Path, mask: str | Path | None = None) -> list[EditInput]:
    """One file, or a folder of images (and a folder of masks matched by file stem)."""
    image, mask = Path(image), (Path(mask) if mask is not None else None)
    if not image.exists():
        raise GdistillError(f"--image {image} does not exist: pass an image file or a folder of them")
    if mask is not None and not mask.exists():
        raise GdistillError(f"--mask {mask} does not exist: pass a mask file or a folder of them")
    if image.is_file():
        if mask is not None and mask.is_dir():
            raise GdistillError(f"--image {image} is one file and --mask {mask} a folder: pass one mask file")
        return [EditInput(image.stem, image, mask)]
    files = sorted(p for p in image.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GdistillError(f"--image {image} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if mask is None:
        return [EditInput(f.stem, f) for f in files]
    if not mask.is_dir():
        raise GdistillError(f"--image {image} is a folder: --mask must be a folder of masks named like the images")
    masks = {p.stem: p for p in mask.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [f.name for f in files if f.stem not in masks]
    if missing:
        raise GdistillError(f"--mask {mask} has no mask for {len(missing)} image(s), first {missing[0]}: "
                            "name each mask like its image")
    return [EditInput(f.stem, f, masks[f.stem]) for f in files]


def read_mask(path: Path, size: tuple[int, int], warn: Callable[[str], None]) -> torch.Tensor:
    """(1, H, W) of 0 (keep) and 1 (repaint): grey >= 0.5 is repaint; resized (nearest) to `size`."""
    from PIL import Image

    mask = open_image(path, what="mask").convert("L")
    height, width = size
    if mask.size != (width, height):
        warn(f"mask {path.name} is {mask.width}x{mask.height}, the image {width}x{height}: resized (nearest)")
        mask = mask.resize((width, height), Image.NEAREST)
    return torch.tensor(np.asarray(mask, dtype=np.float32) >= 127.5).float()[None]


def resize_image(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    return torch.nn.functional.interpolate(image[None], size=size, mode=mode,
                                           **({"align_corners": False} if mode == "bicubic" else {}))[0]


def centre_crop_to_multiple(image: torch.Tensor, factor: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    H, W = h - h % factor, w - w % factor
    if H == 0 or W == 0:
        raise GdistillError(f"the image is {w}x{h}: latent-space runs need at least {factor}x{factor} pixels")
    top, left = (h - H) // 2, (w - W) // 2
    return image[..., top:top + H, left:left + W]


class ModelSpace:
    """How images go into a run's data space and back: pixels (resized to the model), or VAE
    latents for SD-family runs (their conditions are prompts, encoded here too)."""

    def __init__(self, model: Denoiser, manifest: dict, device, warn: Callable[[str], None]):
        self.model, self.manifest, self.device, self.warn = model, manifest, device, warn
        self.encoders = None
        if is_latent_run(manifest) and not is_text_run(manifest):
            raise GdistillError("edit and inpaint of DiT runs are not built yet: they take pixel and SD-family runs")
        if is_text_run(manifest):
            from ..models.sd_encoders import SDEncoders

            self.encoders = SDEncoders(manifest["pipeline"]).to(device)
        self.channels = 3 if self.encoders is not None else model.data_shape[0]
        self.inpainting_model = bool(getattr(model, "inpainting", False))

    def prepare(self, item: EditInput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image in [-1, 1] at the size it is worked on, mask of the same size or None)."""
        image = read_image(item.image, self.channels)
        mask = None if item.mask is None else read_mask(item.mask, tuple(image.shape[1:]), self.warn)
        if self.encoders is None:
            size = tuple(self.model.data_shape[1:])
            if tuple(image.shape[1:]) != size:
                self.warn(f"{item.image.name} is {image.shape[2]}x{image.shape[1]}: resized to the model's "
                          f"{size[1]}x{size[0]}")
                image = resize_image(image, size, "bicubic").clamp(-1, 1)
                mask = None if mask is None else resize_image(mask, size, "nearest")
        else:
            cropped = centre_crop_to_multiple(image, self.encoders.scale_factor)
            if cropped.shape != image.shape:
                self.warn(f"{item.image.name} is {image.shape[2]}x{image.shape[1]}: centre-cropped to "
                          f"{cropped.shape[2]}x{cropped.shape[1]} (a multiple of {self.encoders.scale_factor})")
            image = cropped
            mask = None if mask is None else centre_crop_to_multiple(mask, self.encoders.scale_factor)
        return image, mask

    def to_data(self, image: torch.Tensor, mask: torch.Tensor | None):
        """(x, mask) in the model's data space."""
        if self.encoders is None:
            return image, mask
        x = self.encoders.encode_images(image[None]).cpu()[0]
        if mask is not None:  # a latent is regenerated when any pixel it covers is to be repainted
            f = self.encoders.scale_factor
            mask = torch.nn.functional.max_pool2d(mask[None], kernel_size=f, stride=f)[0]
        return x, mask

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        return self.encoders.decode(samples) if self.encoders is not None else samples

    def conditions(self, n: int, label: int | None, prompt: str | None) -> torch.Tensor:
        if self.encoders is not None:
            if not prompt or label is not None:
                raise GdistillError("this run is text-conditioned: pass --prompt \"...\" (and no --label)")
            return self.encoders.encode_prompts([prompt] * n)
        if prompt is not None:
            raise GdistillError(f"this run is class-conditional ({self.model.kind}): pass --label, not --prompt")
        if label is None or not 0 <= label < self.model.num_classes:
            raise GdistillError(f"this run is class-conditional: pass --label between 0 and {self.model.num_classes - 1}")
        return torch.full((n,), label, dtype=torch.long)


def edit_one(space: ModelSpace, item: EditInput, n: int, steps: int, w: float, seed: int, label, prompt,
             strength: float | None, sampler: str) -> SampleResult:
    """n results for one input: SDEdit at `strength`, or (strength None) inpainting, by replacement
    or through an inpainting model's own mask input. Returned samples are images in [-1, 1]."""
    image, mask = space.prepare(item)
    x, data_mask = space.to_data(image, mask)
    conditions = space.conditions(n, label, prompt)
    first = 0 if strength is None else steps - snap_strength(strength, steps)
    if space.inpainting_model:  # the model itself reads the mask and the masked image: no replacement
        conditions = space.encoders.inpaint_condition(conditions, image.expand(n, *image.shape), mask.expand(n, *mask.shape))
        data_mask = None
    input_image = InputImage(x.expand(n, *x.shape), first, None if data_mask is None else data_mask.expand(n, *data_mask.shape))
    result = sample(space.model, conditions, steps, w, sampler, seed, data_range_of(space.manifest),
                    solver_steps=space.manifest.get("solver_steps"),
                    device=space.device, input_image=input_image)
    images = space.to_images(result.samples)
    if mask is not None:  # the kept pixels are the input's (in latent space the VAE would blur them)
        images = mask * images + (1 - mask) * image
    return SampleResult(images, result.labels, result.calls_per_image, result.seconds)


def check_output(out: Path, single: bool, overwrite: bool) -> None:
    """One result goes to FILE.png / .npz, several to a folder; checked before any work."""
    if single and out.suffix not in (".png", ".npz"):
        raise GdistillError(f"--out {out} must end in .png or .npz for one result (a folder for several)")
    if not single and out.suffix.lower() in (".png", ".npz"):
        raise GdistillError(f"--out {out}: several results (a folder of inputs or --n > 1) go into a folder; "
                            "pass a folder name, not a file name")
    if out.exists() and not overwrite:
        raise GdistillError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    check_writable(out)


def write_outputs(results: list[tuple[str, SampleResult]], out: Path, overwrite: bool) -> Path:
    """One input and one result: `out` is FILE.png (or .npz). Otherwise `out` is a folder of
    NAME.png (NAME-K.png for several variants), written whole or not at all."""
    single = len(results) == 1 and len(results[0][1].samples) == 1
    check_output(out, single, overwrite)
    if single:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
        samples = results[0][1].samples
        if out.suffix == ".npz":
            np.savez(tmp, samples=samples.numpy())
        else:
            to_pil(to_uint8_images(samples)[0]).save(tmp)
        tmp.replace(out)
        return out
    work = prepare_output(out, overwrite, resumable=False)
    for name, result in results:
        images = to_uint8_images(result.samples)
        for k, array in enumerate(images):
            to_pil(array).save(work / (f"{name}.png" if len(images) == 1 else f"{name}-{k}.png"))
    return publish_dir(work, out)



def edit_to_files(from_run: str, image: Path, mask: Path | None, out: Path, prompt: str | None, label: int | None,
                  strength: float | None, steps: int | None, w: float, n: int, seed: int, sampler: str | None, device,
                  overwrite: bool, allow_any_steps: bool, warn: Callable[[str], None],
                  say: Callable[[str], None]) -> tuple[Path, int]:
    """`gdistill edit` (strength given) and `inpaint` (mask given): check everything (inputs, output,
    run, steps, condition) before any work, edit every input n times, write the results. Returns
    (where they went, how many images)."""
    from ..run_folder import load_model

    if n < 1:
        raise GdistillError(f"--n must be at least 1, got {n}")
    if strength is not None and not 0 <= strength <= 1:
        raise GdistillError(f"--strength must be in [0, 1], got {strength}")
    inputs = collect_inputs(image, mask)
    check_output(out, len(inputs) == 1 and n == 1, overwrite)
    loaded = load_model(from_run)
    model, manifest, _ = loaded
    steps = loaded.sampling_steps(steps, allow_any_steps, warn)
    loaded.warn_outside_w_range(w, warn)
    sampler = sampler or loaded.default_sampler
    space = ModelSpace(model, manifest, device, warn)
    space.conditions(1, label, prompt)  # a wrong --label / missing --prompt fails before any work
    if space.inpainting_model and strength is not None:
        raise GdistillError("this run is an inpainting model: it takes an image and a mask; use `gdistill inpaint`")
    if space.inpainting_model:
        say(f"inpainting with the inpainting model (mask and masked image are its input) in {steps} steps")
    elif strength is not None:
        k = snap_strength(strength, steps)
        say(f"strength {strength:g} on the {steps}-step grid: the last {k} step(s) from t0 = {k / steps:g} "
            f"({k * (1 if model.w_conditioned else 2)} network calls per image)")
    else:
        say(f"inpainting by replacement (training-free) in {steps} steps")
    results = [(item.name, edit_one(space, item, n, steps, w, seed, label, prompt, strength, sampler)) for item in inputs]
    return write_outputs(results, out, overwrite), sum(len(r.samples) for _, r in results)
