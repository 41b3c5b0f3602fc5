"""Images at the edges: files -> tensors in [-1, 1], and tensors -> uint8 arrays, PIL images, grids.

One module so that data/, tasks/ and metrics/ convert the same way. In tensors an image is
(c, h, w) in a data range (pixel runs: [-1, 1]) with grey as one channel; on disk and in PIL it is
uint8, grey as mode "L". Level = round((x - lo) * 255 / (hi - lo)), the inverse of x = level / 127.5 - 1.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from .errors import GdistillError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
GREY_MODES = ("L", "1", "I", "I;16")


# --- reading ---------------------------------------------------------------------------------
def open_image(source, hint: str = "", what: str = "image"):
    """A path or bytes -> a loaded PIL image, its file closed (a big folder must not exhaust file
    handles); an unreadable file is a one-line GdistillError (`hint` says what to do)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as e:
        where = "(from a shard)" if isinstance(source, bytes) else source
        raise GdistillError(f"cannot read {what} {where}: {e}" + (f"; {hint}" if hint else "")) from None


def pil_to_tensor(image) -> torch.Tensor:
    """A PIL image of mode "L" or "RGB" -> (1 or 3, h, w) float32 in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    x = torch.tensor(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return x / 127.5 - 1.0


def read_images(files: list[Path], size: tuple[int, int], mode: str | None = None) -> torch.Tensor:
    """Image files -> (n, c, height, width) in [-1, 1], resized (bicubic) to size = (height, width).
    mode "L" (grey, c = 1) or "RGB" (c = 3); None picks grey when every image is grey."""
    from PIL import Image

    images = [open_image(f, "remove or replace it") for f in files]
    mode = mode or ("L" if all(im.mode in GREY_MODES for im in images) else "RGB")
    height, width = size
    return torch.stack([pil_to_tensor(im.convert(mode).resize((width, height), Image.BICUBIC)) for im in images])


def read_image(path: Path, channels: int) -> torch.Tensor:
    """(channels, H, W) in [-1, 1] at the file's own size; alpha composited onto black."""
    from PIL import Image

    image = open_image(path).convert("RGBA")
    if image.width == 0 or image.height == 0:
        raise GdistillError(f"image {path} is empty")
    black = Image.new("RGBA", image.size, (0, 0, 0, 255))
    return pil_to_tensor(Image.alpha_composite(black, image).convert("L" if channels == 1 else "RGB"))


def read_centre_crop(source, resolution: int) -> torch.Tensor:
    """A path or bytes -> (3, resolution, resolution) in [-1, 1]: shorter side resized, centre crop."""
    from PIL import Image

    image = open_image(source).convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    return pil_to_tensor(image.crop((left, top, left + resolution, top + resolution)))


# --- writing ---------------------------------------------------------------------------------
def to_uint8(samples: torch.Tensor, data_range=(-1.0, 1.0)) -> torch.Tensor:
    """(n, c, h, w) in data_range -> (n, c, h, w) uint8 levels (values outside the range clipped)."""
    lo, hi = data_range
    return ((samples.float().clamp(lo, hi) - lo) * (255 / (hi - lo))).round().to(torch.uint8)


def to_uint8_images(samples: torch.Tensor, data_range=(-1.0, 1.0)) -> np.ndarray:
    """(n, c, h, w) in data_range -> (n, h, w, c) uint8, the layout PIL and image files use."""
    return to_uint8(samples.cpu(), data_range).permute(0, 2, 3, 1).numpy()


def to_pil(array: np.ndarray):
    """(h, w, c) uint8 -> a PIL image, mode "L" for one channel."""
    from PIL import Image

    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def image_grid(samples: torch.Tensor, columns: int, data_range=(-1.0, 1.0), cell: int = 32):
    """A PIL image: samples in row-major order, each upscaled (nearest) to `cell` pixels."""
    images = to_uint8_images(samples, data_range)
    n, h, w, c = images.shape
    rows = -(-n // columns)
    scale = max(1, cell // max(h, w))
    if n == 1 and scale == 1:  # one image at its own size: no frame around it
        return to_pil(images[0])
    pad = 2
    H, W = h * scale, w * scale
    canvas = np.full((rows * (H + pad) + pad, columns * (W + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, columns)
        big = img.repeat(scale, 0).repeat(scale, 1)
        canvas[pad + r * (H + pad): pad + r * (H + pad) + H, pad + k * (W + pad): pad + k * (W + pad) + W] = big
    return to_pil(canvas)


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def scatter_plot(points: torch.Tensor, labels: torch.Tensor, size: int = 512, extent: float = 1.6):
    """A PIL scatter plot of 2-D samples coloured by label (no plotting library needed for this)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    xy = ((points.clamp(-extent, extent) + extent) / (2 * extent) * (size - 1)).numpy()
    for (px, py), label in zip(xy, labels.tolist()):
        draw.ellipse([px - 2, size - 1 - py - 2, px + 2, size - 1 - py + 2], fill=PALETTE[label % len(PALETTE)])
    return image
