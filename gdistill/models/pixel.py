"""Pixel-space class-conditional UNet: diffusers' UNet2DModel plus a label embedding (with a null
class for guidance) and, for students, the w-embedding.

UNet2DModel has no hook for a guidance embedding (UNet2DConditionModel's time_cond_proj_dim has no
twin here), so we build the condition embedding ourselves and hand it in through
class_embed_type="identity", which adds it to the time embedding exactly as a class embedding is.
"""
from __future__ import annotations

from diffusers import UNet2DModel
from torch import nn

from .base import LEGACY_W_SCALE, Denoiser, GuidanceEmbedding

PIXEL_DEFAULTS = {
    "kind": "pixel-unet",
    "image_size": 8,
    "channels": 1,
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "attention": False,
}


class PixelUNetDenoiser(Denoiser):
    kind = "pixel-unet"

    def __init__(self, config: dict):
        config = {**PIXEL_DEFAULTS, **config}
        super().__init__(config)
        channels = list(config["block_out_channels"])
        levels = len(channels)
        attn = bool(config["attention"])
        down = ["DownBlock2D"] * (levels - 1) + ["AttnDownBlock2D" if attn else "DownBlock2D"]
        up = ["AttnUpBlock2D" if attn else "UpBlock2D"] + ["UpBlock2D"] * (levels - 1)
        self.unet = UNet2DModel(
            sample_size=config["image_size"], in_channels=config["channels"],
            out_channels=config["channels"], block_out_channels=channels,
            layers_per_block=config["layers_per_block"], down_block_types=down, up_block_types=up,
            class_embed_type="identity", norm_num_groups=min(8, channels[0]),
            attention_head_dim=min(32, channels[-1]),
        )
        time_dim = channels[0] * 4
        self.label_embedding = nn.Embedding(self.num_classes + 1, time_dim)
        if self.w_conditioned:
            self.w_embedding = GuidanceEmbedding(channels[0], time_dim, config.get("w_embedding_scale", LEGACY_W_SCALE))

    @property
    def data_shape(self):
        c, n = self.config["channels"], self.config["image_size"]
        return (c, n, n)

    def feature_layer(self):
        return self.unet.mid_block, self.config["block_out_channels"][-1]

    def network_output(self, z, model_t, labels, w):
        cond = self.label_embedding(labels)
        if w is not None:
            cond = cond + self.w_embedding(w)
        return self.unet(z, model_t, class_labels=cond).sample
