"""CLIP score (Hessel et al. 2021, as torchmetrics defines it): 100 * max(cos(E_image, E_text), 0),
averaged over (image, prompt) pairs, with transformers' CLIP from a local folder or the hub."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import GdistillError
from ..images import to_pil, to_uint8_images

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


class ClipScorer:
    def __init__(self, name_or_path: str, device: str | torch.device = "cpu"):
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging

        logging.set_verbosity_error()  # the PIL-backend fallback notice is not the user's business
        try:
            self.model = CLIPModel.from_pretrained(name_or_path).eval().requires_grad_(False).to(device)
            self.processor = CLIPProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError) as e:
            where = "the folder" if Path(name_or_path).exists() else "the model"
            raise GdistillError(
                f"cannot load {where} {name_or_path} as a CLIP model ({str(e).splitlines()[0]}): offline machines "
                f"need it on disk; download it where there is internet (`hf download {DEFAULT_CLIP_MODEL} "
                "--local-dir DIR`) and pass --clip-model DIR") from None
        self.device = device

    @torch.no_grad()
    def scores(self, samples: torch.Tensor, prompts: list[str], batch: int = 64) -> torch.Tensor:
        """Per-pair CLIP scores of samples (n, c, h, w) in [-1, 1] against prompts (n strings)."""
        out = []
        for start in range(0, len(samples), batch):
            images = [to_pil(a).convert("RGB") for a in to_uint8_images(samples[start:start + batch])]
            inputs = self.processor(text=prompts[start:start + batch], images=images, return_tensors="pt",
                                    padding=True, truncation=True).to(self.device)
            image = _embedding(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
            text = _embedding(self.model.get_text_features(input_ids=inputs["input_ids"],
                                                           attention_mask=inputs["attention_mask"]))
            cosine = torch.nn.functional.cosine_similarity(image, text, dim=-1)
            out.append(100 * cosine.clamp_min(0).cpu())
        return torch.cat(out)

    def score(self, samples: torch.Tensor, prompts: list[str]) -> float:
        return self.scores(samples, prompts).mean().item()


def _embedding(output) -> torch.Tensor:
    # transformers 4 returns the projected tensor; 5 may wrap it in a model output (pooler_output).
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def read_prompts(path: Path) -> list[str]:
    """One prompt per non-empty line."""
    try:
        prompts = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as e:
        raise GdistillError(f"cannot read --prompts {path}: {e.strerror}") from None
    if not prompts:
        raise GdistillError(f"--prompts {path} holds no prompts: write one prompt per line")
    return prompts
