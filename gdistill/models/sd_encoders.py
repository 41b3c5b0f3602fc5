"""The frozen VAE and text encoder(s) of a run's diffusers teacher (`SDEncoders`): prompts -> text
embeddings, images <-> latents, and the condition of inpainting UNets."""
from __future__ import annotations

import hashlib
import json

import torch

from .latent import encode_prompts, is_sdxl_unet, pack_inpaint_condition
from .sd_pipeline import pipeline_for, vae_scale_factor


class SDEncoders:
    """The teacher pipeline's frozen VAE and text encoder: prompts -> text embeddings, images in
    [-1, 1] -> latents (the posterior's mean times the VAE's scaling factor: deterministic, so it
    can be cached), latents -> images. Half precision on a GPU."""

    def __init__(self, record: dict):
        self.record = record
        self.pipe = pipeline_for(record)
        for module in self.frozen_modules:
            module.requires_grad_(False).eval()
        self.device = torch.device("cpu")

    @property
    def frozen_modules(self) -> list[torch.nn.Module]:
        """The VAE and the text encoder(s) (SDXL has two, SD3 three, DiT none)."""
        return [m for m in (self.pipe.vae, getattr(self.pipe, "text_encoder", None), getattr(self.pipe, "text_encoder_2", None),
                            getattr(self.pipe, "text_encoder_3", None)) if m is not None]

    @property
    def latent_channels(self) -> int:
        return self.pipe.vae.config.latent_channels

    @property
    def scale_factor(self) -> int:
        return vae_scale_factor(self.pipe)

    @property
    def denoiser(self):
        """The pipeline's denoising network: a UNet (SD 1.5, SDXL) or a transformer (SD3)."""
        return getattr(self.pipe, "unet", None) or self.pipe.transformer

    @property
    def native_resolution(self) -> int:
        """The image size the teacher was made for, in pixels (512 for SD 1.5, 1024 for SDXL)."""
        return self.denoiser.config.sample_size * self.scale_factor

    def to(self, device) -> SDEncoders:
        device = torch.device(device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        if device != self.device:
            for module in self.frozen_modules:
                # SDXL's VAE overflows in float16 (its config says force_upcast): it stays float32, as
                # the SDXL pipeline upcasts it
                upcast = (module is self.pipe.vae and is_sdxl_unet(self.denoiser.config)
                          and self.pipe.vae.config.get("force_upcast", False))
                module.to(device, torch.float32 if upcast else dtype)
            self.device = device
        return self

    def fingerprint(self) -> str:
        """Identifies the encoders' weights (for the latent cache): a few tensors' bytes."""
        h = hashlib.sha256(json.dumps(self.record, sort_keys=True).encode())
        for module in self.frozen_modules:
            params = list(module.parameters())
            for tensor in (params[0], params[len(params) // 2], params[-1]):
                h.update(tensor.detach().flatten()[:1 << 16].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return encode_prompts(self.pipe, prompts, self.device)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        posterior = vae.encode(images.to(self.device, vae.dtype)).latent_dist
        # SD3's VAE also shifts: latents = (mean - shift_factor) * scaling_factor, as its pipeline
        return ((posterior.mean - self.shift_factor) * vae.config.scaling_factor).float()

    @property
    def shift_factor(self) -> float:
        return self.pipe.vae.config.get("shift_factor") or 0.0

    @torch.no_grad()
    def inpaint_condition(self, texts: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """An inpainting UNet's condition, prepared as diffusers' inpainting pipeline does: the mask
        (1 = repaint) resized (nearest) to the latents, and the latents of the image with the
        masked region blanked (image * (mask < 0.5), here at 0 = mid grey), packed with the text."""
        masked_latents = self.encode_images(images * (masks < 0.5))
        small = torch.nn.functional.interpolate(masks.float(), size=masked_latents.shape[-2:])
        return pack_inpaint_condition(texts.to(self.device), small.to(self.device), masked_latents)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (n, 3, H, W), on the CPU."""
        vae = self.pipe.vae
        out = [vae.decode(z.to(self.device, vae.dtype) / vae.config.scaling_factor + self.shift_factor).sample.float().cpu()
               for z in latents.split(8)]
        return torch.cat(out).clamp(-1, 1)
