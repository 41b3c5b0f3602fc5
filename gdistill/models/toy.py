"""A residual MLP for the 2-D toy: same interface and the same w-embedding as the UNet."""
from __future__ import annotations

from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from torch import nn

from .base import LEGACY_W_SCALE, Denoiser, GuidanceEmbedding

TOY_DEFAULTS = {"kind": "toy-mlp", "dim": 2, "hidden": 128, "depth": 3}


class ToyMLPDenoiser(Denoiser):
    kind = "toy-mlp"

    def __init__(self, config: dict):
        config = {**TOY_DEFAULTS, **config}
        super().__init__(config)
        hidden, dim = config["hidden"], config["dim"]
        self.time_features = 64
        self.time_embedding = TimestepEmbedding(self.time_features, hidden)
        self.label_embedding = nn.Embedding(self.num_classes + 1, hidden)
        if self.w_conditioned:
            self.w_embedding = GuidanceEmbedding(self.time_features, hidden, config.get("w_embedding_scale", LEGACY_W_SCALE))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(config["depth"])
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    @property
    def data_shape(self):
        return (self.config["dim"],)

    def feature_layer(self):
        return self.out[0], self.config["hidden"]  # the residual stream after the last block

    def network_output(self, z, model_t, labels, w):
        t_feats = get_timestep_embedding(model_t.float(), self.time_features, flip_sin_to_cos=True,
                                         downscale_freq_shift=0)
        emb = self.time_embedding(t_feats) + self.label_embedding(labels)
        if w is not None:
            emb = emb + self.w_embedding(w)
        h = self.inp(z)
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h)
