"""Training masks for inpainting teachers, drawn the way SD's inpainting model was trained
(runwayml's recipe: synthetic masks of rectangles and brush strokes, and in 25 % of cases the whole
image): 1 = repaint, 0 = keep. Seeded from the run's generator."""
from __future__ import annotations

import numpy as np
import torch

P_WHOLE_IMAGE = 0.25


def training_masks(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, height, width) of 0 / 1."""
    return torch.stack([_one_mask(height, width, generator) for _ in range(n)])


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand(1, generator=generator).item()


def _one_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    from PIL import Image, ImageDraw

    if torch.rand(1, generator=generator).item() < P_WHOLE_IMAGE:
        return torch.ones(1, height, width)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):  # rectangles: 10-60 % of each side
        w, h = _uniform(generator, 0.1, 0.6) * width, _uniform(generator, 0.1, 0.6) * height
        x, y = _uniform(generator, 0, width - w), _uniform(generator, 0, height - h)
        draw.rectangle([x, y, x + w, y + h], fill=255)
    for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):  # brush strokes: 2-5 segments
        x, y = _uniform(generator, 0, width), _uniform(generator, 0, height)
        points = [(x, y)]
        for _ in range(int(torch.randint(2, 6, (1,), generator=generator))):
            angle, length = _uniform(generator, 0, 2 * np.pi), _uniform(generator, 0.1, 0.4) * max(width, height)
            x = min(max(x + length * np.cos(angle), 0), width - 1)
            y = min(max(y + length * np.sin(angle), 0), height - 1)
            points.append((x, y))
        draw.line(points, fill=255, width=max(1, round(_uniform(generator, 0.03, 0.12) * max(width, height))))
    return torch.tensor(np.asarray(canvas) >= 128, dtype=torch.float32)[None]
