"""The Denoiser adapter of class-conditional latent transformers: diffusers' DiT (`DiTPipeline`,
1000 ImageNet classes, classifier-free guidance), as in the paper's ImageNet results. It takes the
class-conditional path of the pixel teachers (labels, null class 1000) and works in the VAE's
latents; the w-input of its students is gdistill's own GuidanceEmbedding, added to the time-and-
class embedding of every block (DiT conditions each block through adaLN-Zero on that embedding)."""
from __future__ import annotations

import torch

from ..errors import GdistillError
from .base import STUDENT_W_SCALE, Denoiser, GuidanceEmbedding

W_FEATURES = 256


def is_dit_transformer(network) -> bool:
    """A DiT-style transformer: patches, adaLN-Zero on (timestep, class label) embeddings."""
    config = getattr(network, "config", {})
    return config.get("norm_type") == "ada_norm_zero" and bool(config.get("num_embeds_ada_norm"))


class LatentDiTDenoiser(Denoiser):
    """DiT behind the Denoiser interface, on its discrete schedule (linear betas), predicting eps
    (the first C of its 2C output channels; the rest is DiT's learned variance, which DDIM does not
    use). The condition is the class label; the null class is num_classes (1000), as DiTPipeline's."""

    kind = "dit-transformer"

    def __init__(self, config: dict, transformer=None):
        from diffusers import DiTTransformer2DModel

        super().__init__({"kind": self.kind, "parameterization": "eps", **config})
        self.transformer = transformer if transformer is not None else DiTTransformer2DModel.from_config(config["transformer"])
        if self.w_conditioned:
            self.w_embedding = GuidanceEmbedding(W_FEATURES, self.transformer.inner_dim,
                                                 config.get("w_embedding_scale", STUDENT_W_SCALE))
        self._no_split_modules = list(self.transformer._no_split_modules or [])

    @classmethod
    def from_pipeline(cls, pipe) -> LatentDiTDenoiser:
        scheduler = pipe.scheduler.config
        if scheduler.get("prediction_type", "epsilon") != "epsilon":
            raise GdistillError(f"the DiT teacher predicts {scheduler['prediction_type']}; gdistill reads DiT as an eps model")
        network_config = {k: v for k, v in dict(pipe.transformer.config).items() if not k.startswith("_")}
        config = {"transformer": network_config, "num_classes": network_config["num_embeds_ada_norm"],
                  "latent_size": network_config["sample_size"],
                  "schedule": {"name": "sd-discrete", "num_train_timesteps": scheduler["num_train_timesteps"],
                               "beta_start": scheduler["beta_start"], "beta_end": scheduler["beta_end"],
                               "beta_schedule": scheduler["beta_schedule"]}}
        return cls(config, transformer=pipe.transformer)

    @property
    def data_shape(self):
        size = self.config.get("latent_size") or self.transformer.config.sample_size
        return (self.transformer.config.in_channels, size, size)

    def with_latent_size(self, size: int) -> LatentDiTDenoiser:
        """Train and sample at the data's latent size (DiT's position embeddings are made for its own)."""
        if int(size) != self.transformer.config.sample_size:
            raise GdistillError(f"this DiT makes {self.transformer.config.sample_size}x{self.transformer.config.sample_size} "
                                f"latents; --resolution must be {self.transformer.config.sample_size} x the VAE's factor")
        self.config["latent_size"] = int(size)
        return self

    def as_frozen_teacher(self, device) -> LatentDiTDenoiser:
        """A teacher's weights are read only: half precision on a GPU (outputs stay float32)."""
        device = torch.device(device)
        return self.to(device, torch.float16 if device.type == "cuda" else torch.float32)

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    def feature_layer(self):
        blocks = self.transformer.transformer_blocks
        return blocks[len(blocks) // 2], self.transformer.inner_dim

    def network_output(self, z, model_t, labels, w):
        from diffusers.models.embeddings import CombinedTimestepLabelEmbeddings

        dtype = self.transformer.dtype
        hooks = []
        if w is not None:
            added = self.w_embedding(w).to(dtype)
            hooks = [m.register_forward_hook(lambda module, args, out: out + added.to(out.dtype))
                     for m in self.transformer.modules() if isinstance(m, CombinedTimestepLabelEmbeddings)]
        try:
            out = self.transformer(z.to(dtype), timestep=model_t, class_labels=labels).sample
        finally:
            for hook in hooks:
                hook.remove()
        return out[:, :z.shape[1]].to(z.dtype)  # eps; the rest is the learned variance
