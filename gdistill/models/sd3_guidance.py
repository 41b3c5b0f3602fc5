"""An SD3 transformer that takes the guidance strength w as an input: the network of gdistill's
w-conditioned students of SD3-family (rectified-flow) teachers.

This file imports torch and diffusers only, because `gdistill export` copies it into the exported
pipeline folder (transformer/sd3_guidance.py, named in model_index.json), where diffusers loads it
as a custom component (`from_pretrained(..., trust_remote_code=True)`) without gdistill installed.
The stock SD3Transformer2DModel has no guidance input; SD 1.5's UNet has one in diffusers
(time_cond_proj_dim), and this mirrors it: w -> the same sinusoidal guidance embedding the stock
pipelines use (LCM's, of 1000 w) -> a bias-free linear map, zero at the start, added to the
transformer's time-and-text embedding. A fresh student therefore equals its teacher's conditional
prediction exactly.
"""
from __future__ import annotations

import torch
from diffusers import SD3Transformer2DModel
from diffusers.configuration_utils import register_to_config


def guidance_scale_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """The guidance embedding the stock pipelines give a w-conditioned network (diffusers'
    get_guidance_scale_embedding, from LCM / VDM): for f_k = exp(-k log(10000) / (dim/2 - 1)),
    [sin(1000 w f_k), cos(1000 w f_k)], shape (len(w), dim), float32. Rewritten here (the same
    operations, tested equal to diffusers') to run on w's own device: diffusers builds its frequencies
    on the CPU, and a copy to the GPU at every sampling step would make the host wait for it."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device)
                            * -(torch.log(torch.tensor(10000.0)).item() / (half - 1)))
    angles = (w.flatten().float() * 1000.0)[:, None] * frequencies[None, :]
    features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(features, (0, 1)) if dim % 2 else features


class SD3TransformerWithGuidance(SD3Transformer2DModel):
    """SD3Transformer2DModel plus `guidance_proj`. Call it with `guidance=w` (a tensor of shape (B,)
    or a number; w = guidance_scale - 1), or through the stock StableDiffusion3Pipeline with
    `joint_attention_kwargs={"guidance": w}` and guidance_scale=1 (no unconditional pass)."""

    @register_to_config
    def __init__(self, sample_size: int = 128, patch_size: int = 2, in_channels: int = 16, num_layers: int = 18,
                 attention_head_dim: int = 64, num_attention_heads: int = 18, joint_attention_dim: int = 4096,
                 caption_projection_dim: int = 1152, pooled_projection_dim: int = 2048, out_channels: int = 16,
                 pos_embed_max_size: int = 96, dual_attention_layers: tuple[int, ...] = (), qk_norm: str | None = None,
                 guidance_embedding_dim: int = 256):
        super().__init__(sample_size=sample_size, patch_size=patch_size, in_channels=in_channels, num_layers=num_layers,
                         attention_head_dim=attention_head_dim, num_attention_heads=num_attention_heads,
                         joint_attention_dim=joint_attention_dim, caption_projection_dim=caption_projection_dim,
                         pooled_projection_dim=pooled_projection_dim, out_channels=out_channels,
                         pos_embed_max_size=pos_embed_max_size, dual_attention_layers=dual_attention_layers,
                         qk_norm=qk_norm)
        self.guidance_proj = torch.nn.Linear(guidance_embedding_dim, num_attention_heads * attention_head_dim, bias=False)
        torch.nn.init.zeros_(self.guidance_proj.weight)

    def guidance_embedding(self, guidance, batch: int, device, dtype) -> torch.Tensor:
        w = torch.as_tensor(guidance, dtype=torch.float32, device=device).flatten()
        w = w.expand(batch) if w.numel() == 1 else w
        features = guidance_scale_embedding(w, self.config.guidance_embedding_dim)
        return self.guidance_proj(features.to(self.guidance_proj.weight.dtype)).to(dtype)

    def forward(self, hidden_states, encoder_hidden_states=None, pooled_projections=None, timestep=None,
                *args, guidance=None, joint_attention_kwargs=None, **kwargs):
        if joint_attention_kwargs is not None and "guidance" in joint_attention_kwargs:
            joint_attention_kwargs = dict(joint_attention_kwargs)
            guidance = joint_attention_kwargs.pop("guidance")
        if guidance is None:
            raise ValueError("this transformer is w-conditioned: pass guidance=w (guidance_scale - 1)")

        def add_guidance(module, inputs, temb):  # the time-and-text embedding, plus the guidance's
            return temb + self.guidance_embedding(guidance, len(temb), temb.device, temb.dtype)

        handle = self.time_text_embed.register_forward_hook(add_guidance)
        try:
            return super().forward(hidden_states, encoder_hidden_states, pooled_projections, timestep, *args,
                                   joint_attention_kwargs=joint_attention_kwargs, **kwargs)
        finally:
            handle.remove()
