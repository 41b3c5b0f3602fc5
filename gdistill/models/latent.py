"""The Denoiser adapters of text-to-image latent models: what they share (TextLatentDenoiser: the
condition tensor, the unconditional buffer, resolution, LoRA), and Stable-Diffusion-family UNets
(SD 1.5 and SDXL) with their inpainting and SDXL conditions. The pipeline is resolved in
sd_pipeline.py; the VAE and text encoders are sd_encoders.SDEncoders; SD3 transformers are sd3.py.
The UNet student is the teacher's `UNet2DConditionModel` rebuilt with `time_cond_proj_dim`
(diffusers' own hook: a linear map of the guidance embedding added to the timestep features) and
that projection zero-initialised, so a fresh student equals the teacher's conditional UNet. w is
embedded as the stock StableDiffusionPipeline embeds it when its UNet has `time_cond_proj_dim` (with
w = guidance_scale - 1, and no classifier-free guidance pass), so an exported student samples in
plain diffusers.
"""
from __future__ import annotations

import contextlib

import torch

from ..errors import GdistillError
from .base import Denoiser

GUIDANCE_EMBEDDING_DIM = 256  # as diffusers' LCM-distilled SD 1.5 UNets
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections, as diffusers' LoRA scripts


def guidance_scale_embedding(w: torch.Tensor, dim: int = GUIDANCE_EMBEDDING_DIM) -> torch.Tensor:
    """Sinusoidal features of 1000 w (paper's w = guidance_scale - 1), shape (len(w), dim), on w's
    device: what the stock StableDiffusionPipeline gives a UNet with time_cond_proj_dim
    (get_guidance_scale_embedding; the one implementation, in sd3_guidance.py, is tested equal to
    diffusers'), so training and the stock pipeline never disagree."""
    from .sd3_guidance import guidance_scale_embedding as embedding

    return embedding(w, dim)


def is_sdxl_unet(unet_config) -> bool:
    """SDXL's UNet also reads the pooled text embedding and the size/crop ids (`added_cond_kwargs`)."""
    return unet_config.get("addition_embed_type") == "text_time"


@torch.no_grad()
def prompt_embeddings(pipe, prompts: list[str], device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(text (B, T, D), pooled (B, P) or None) as the pipeline's own encode_prompt makes them: SD
    has text only; SDXL the two encoders' penultimate states and the second one's pooled output;
    SD3 the CLIP states padded and joined to T5's (zeros where the pipeline has no T5) and both
    CLIP encoders' pooled outputs."""
    import inspect

    # SDXL's and SD3's second (and third) encoders read the same prompt when given None
    others = {k: None for k in ("prompt_2", "prompt_3") if k in inspect.signature(pipe.encode_prompt).parameters}
    out = pipe.encode_prompt(prompt=list(prompts), **others, device=device, num_images_per_prompt=1,
                             do_classifier_free_guidance=False)
    return out[0], (out[2] if len(out) == 4 else None)


def encode_prompts(pipe, prompts: list[str], device) -> torch.Tensor:
    """Prompts as the condition tensor a text latent denoiser takes: SD's text embeddings (B, T, D);
    for SDXL and SD3 the text and the pooled embedding packed as one (B, T D + P) tensor
    (pack_pooled_condition)."""
    text, pooled = prompt_embeddings(pipe, prompts, device)
    return (text if pooled is None else pack_pooled_condition(text, pooled)).float()


def empty_prompt_condition(pipe) -> torch.Tensor:
    """The unconditional input of classifier-free guidance, as the stock pipeline makes it: the
    empty prompt's condition, or zeros where an SDXL pipeline has force_zeros_for_empty_prompt."""
    null = encode_prompts(pipe, [""], "cpu")[0]
    if pipe.config.get("force_zeros_for_empty_prompt", False):
        return torch.zeros_like(null)
    return null


def pack_pooled_condition(text: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """SDXL's or SD3's condition as one (B, T D + P) tensor, for the reason pack_inpaint_condition gives."""
    return torch.cat([text.flatten(1), pooled.to(text.dtype)], 1)


def unpack_pooled_condition(condition: torch.Tensor, text_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """(text (B, T, D), pooled (B, P))."""
    n = text_shape[0] * text_shape[1]
    return condition[:, :n].reshape(len(condition), *text_shape), condition[:, n:]


def pack_inpaint_condition(text: torch.Tensor, mask: torch.Tensor, masked_latents: torch.Tensor) -> torch.Tensor:
    """An inpainting model's condition as one (B, L) tensor: the text embedding (B, T, D), then the
    latent-size mask (B, 1, h, w) and the masked image's latents (B, C, h, w), flattened. One tensor
    because every sampler, guidance batch and training loop handles the condition as one (split,
    concatenated, moved); the model unpacks it (unpack_inpaint_condition)."""
    return torch.cat([text.flatten(1), mask.flatten(1).to(text.dtype), masked_latents.flatten(1).to(text.dtype)], 1)


def unpack_inpaint_condition(condition: torch.Tensor, text_shape: tuple[int, int], latent_hw) -> tuple[torch.Tensor, torch.Tensor]:
    """(text (B, T, D), mask and masked latents as UNet input channels (B, 1 + C, h, w))."""
    n = text_shape[0] * text_shape[1]
    text = condition[:, :n].reshape(len(condition), *text_shape)
    return text, condition[:, n:].reshape(len(condition), -1, *latent_hw)


class TextLatentDenoiser(Denoiser):
    """What the text-to-image latent adapters share (a diffusers network `self.network`: a UNet or
    an SD3 transformer): the condition is one tensor per example (text embeddings, packed with what
    else the network reads); the unconditional input is the empty prompt's condition (or a negative
    prompt's), kept as a buffer so it travels with the weights; the resolution is the run's; LoRA
    on the attention projections; a frozen teacher in half precision on a GPU."""

    network_name = ""  # the attribute that holds the diffusers network: "unet", "transformer"

    @property
    def network(self):
        return getattr(self, self.network_name)

    def student_config(self) -> dict:
        # w goes through a diffusers-style guidance embedding of w itself, which has no scale to choose
        return {**self.config, "w_conditioned": True}

    def _finish_init(self, config: dict) -> None:
        self.register_buffer("null_embedding", torch.zeros(config["null_embedding_shape"]))
        # the blocks FSDP shards one by one (accelerate's TRANSFORMER_BASED_WRAP reads this)
        self._no_split_modules = list(self.network._no_split_modules or [])

    @property
    def data_shape(self):
        size = self.config.get("latent_size") or self.network.config.sample_size
        return (self.network.config.out_channels, size, size)

    @property
    def inpainting(self) -> bool:
        return False

    def with_latent_size(self, size: int) -> TextLatentDenoiser:
        """Train and sample at another resolution (SD 1.5 was trained at 64x64 latents, 512 px)."""
        self.config["latent_size"] = int(size)
        return self

    def null_condition(self, condition):
        return self.null_embedding.to(condition.dtype).expand(len(condition), *self.null_embedding.shape)

    @contextlib.contextmanager
    def unconditional(self, embedding: torch.Tensor | None):
        """Within the block, guidance steers away from `embedding` (a negative prompt's condition)
        instead of the empty prompt's: x_w = (1 + w) x(c) - w x(negative). None: no change."""
        if embedding is None:
            yield self
            return
        saved = self.null_embedding.clone()
        self.null_embedding.copy_(embedding)
        try:
            yield self
        finally:
            self.null_embedding.copy_(saved)

    def as_frozen_teacher(self, device) -> TextLatentDenoiser:
        """A teacher's weights are read only: half precision on a GPU (outputs stay float32)."""
        device = torch.device(device)
        return self.to(device, torch.float16 if device.type == "cuda" else torch.float32)

    def enable_gradient_checkpointing(self) -> None:
        self.network.enable_gradient_checkpointing()

    def add_lora(self, rank: int) -> None:
        """Train a rank-`rank` adapter (peft) on the attention projections, plus the new w-input,
        instead of the whole network; merge_lora folds it back in before the run is written."""
        from peft import LoraConfig

        self.requires_grad_(False)
        self.network.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
        if self.w_conditioned:
            for name, p in self.named_parameters():
                if name.startswith(self.w_parameters):
                    p.requires_grad_(True)

    def merge_lora(self) -> None:
        """W <- W + B A for every adapter, then drop the adapters: the run holds a plain network."""
        self.network.fuse_lora()
        self.network.unload_lora()


class LatentUNetDenoiser(TextLatentDenoiser):
    """An SD-family UNet (`UNet2DConditionModel`) behind the Denoiser interface, in latent space on
    SD's discrete schedule. The condition is a batch of text embeddings (B, tokens, dim). A
    w-conditioned model gets w through `timestep_cond` (diffusers' hook), embedded as the stock
    pipeline does. An inpainting UNet (9 input channels) also reads the mask and the masked image's
    latents, packed into the condition (pack_inpaint_condition). An SDXL UNet also reads the pooled
    text embedding, packed with the text (pack_pooled_condition), and the size ids of the image being
    made (sdxl_time_ids). The run's config holds the UNet's diffusers config, so build_denoiser
    rebuilds it."""

    kind = "sd-unet"
    network_name = "unet"
    w_parameters = ("unet.time_embedding.cond_proj.",)

    def __init__(self, config: dict, unet=None):
        from diffusers import UNet2DConditionModel

        super().__init__({"kind": self.kind, "num_classes": 0, "parameterization": "eps", **config})
        unet_config = dict(config["unet"])
        if self.w_conditioned:
            unet_config["time_cond_proj_dim"] = unet_config.get("time_cond_proj_dim") or GUIDANCE_EMBEDDING_DIM
        # A teacher adopts its pipeline's UNet (no copy, no random init of a billion weights).
        self.unet = unet if unet is not None else UNet2DConditionModel.from_config(unet_config)
        if self.w_conditioned and unet is None:  # zero start: a fresh student equals the teacher's conditional UNet
            torch.nn.init.zeros_(self.unet.time_embedding.cond_proj.weight)
        self._finish_init(config)
        self._time_ids = {}  # SDXL's size ids per (H, W, device)

    @classmethod
    def from_pipeline(cls, pipe) -> LatentUNetDenoiser:
        """The teacher of a diffusers SD pipeline, with the pipeline's schedule and empty-prompt
        embedding (its student: models.make_student)."""
        scheduler = pipe.scheduler.config
        if scheduler.get("prediction_type", "epsilon") != "epsilon":
            raise GdistillError(f"the teacher predicts {scheduler['prediction_type']}; gdistill reads SD teachers as eps models for now")
        null = empty_prompt_condition(pipe)
        unet_config = {k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")}
        sdxl = {}
        if is_sdxl_unet(unet_config):  # the text's shape inside the packed condition; pixels per latent
            text_shape = [pipe.tokenizer.model_max_length, unet_config["cross_attention_dim"]]
            sdxl = {"sdxl": {"text_shape": text_shape, "vae_scale_factor": pipe.vae_scale_factor}}
        config = {"unet": unet_config, "null_embedding_shape": list(null.shape), **sdxl,
                  "latent_size": unet_config["sample_size"],
                  "schedule": {"name": "sd-discrete", "num_train_timesteps": scheduler["num_train_timesteps"],
                               "beta_start": scheduler["beta_start"], "beta_end": scheduler["beta_end"],
                               "beta_schedule": scheduler["beta_schedule"]}}
        model = cls(config, unet=pipe.unet)
        model.null_embedding.copy_(null)
        return model

    @property
    def inpainting(self) -> bool:
        """SD's inpainting UNets also read the mask and the masked image's latents (9 channels)."""
        return self.unet.config.in_channels != self.unet.config.out_channels

    def null_condition(self, condition):
        null = super().null_condition(condition)
        if not self.inpainting:
            return null
        # the unconditional branch keeps the mask and the masked image: only the text is dropped
        return torch.cat([null.flatten(1), condition[:, self.null_embedding.numel():]], 1)

    def network_output(self, z, model_t, condition, w):
        dtype = self.unet.dtype
        timestep_cond = None if w is None else guidance_scale_embedding(w.to(z.device), self.unet.config.time_cond_proj_dim).to(dtype)
        if self.inpainting:
            text, image = unpack_inpaint_condition(condition, tuple(self.null_embedding.shape), z.shape[-2:])
            z_in, condition = torch.cat([z, image], 1), text
        else:
            z_in = z
        added = None
        if "sdxl" in self.config:
            condition, pooled = unpack_pooled_condition(condition, self.config["sdxl"]["text_shape"])
            added = {"text_embeds": pooled.to(dtype), "time_ids": self.sdxl_time_ids(z).to(dtype)}
        out = self.unet(z_in.to(dtype), model_t, encoder_hidden_states=condition.to(dtype), timestep_cond=timestep_cond,
                        added_cond_kwargs=added).sample
        return out.to(z.dtype)

    def feature_layer(self):
        return self.unet.mid_block, self.unet.config.block_out_channels[-1]

    def sdxl_time_ids(self, z: torch.Tensor) -> torch.Tensor:
        """SDXL's size and crop conditioning as the stock pipeline makes it for an image of z's size:
        (original H, W, crop top, left, target H, W) = (H, W, 0, 0, H, W) in pixels. Made once per
        size and device (a tensor built from host values at every call would wait for the GPU)."""
        h, w = (n * self.config["sdxl"]["vae_scale_factor"] for n in z.shape[-2:])
        key = (h, w, z.device)
        if key not in self._time_ids:
            self._time_ids[key] = torch.tensor([h, w, 0, 0, h, w], device=z.device, dtype=torch.float32)
        return self._time_ids[key].expand(len(z), 6)
