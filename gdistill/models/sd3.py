"""The Denoiser adapter of SD3-family teachers (`SD3Transformer2DModel` on the rectified flow of
diffusers' FlowMatchEulerDiscreteScheduler) and of their w-conditioned students
(sd3_guidance.SD3TransformerWithGuidance). The pipeline is resolved in sd_pipeline.py; prompts are
encoded by the pipeline's own encode_prompt (latent.encode_prompts)."""
from __future__ import annotations


from ..errors import GdistillError
from .latent import TextLatentDenoiser, empty_prompt_condition, prompt_embeddings, unpack_pooled_condition

GUIDANCE_EMBEDDING_DIM = 256  # as the SD 1.5 students' time_cond_proj_dim


def is_sd3_transformer(network) -> bool:
    from diffusers import SD3Transformer2DModel

    return isinstance(network, SD3Transformer2DModel)


class LatentTransformerDenoiser(TextLatentDenoiser):
    """An SD3-family transformer behind the Denoiser interface. It predicts the flow's velocity
    v = e - x (parameterization "flow": x = z - s v) at time input 1000 s, s the shifted sigma
    (schedules.FlowMatchSchedule). The condition is the text (B, T, D) and the pooled embedding
    (B, P) packed as one tensor; classifier-free guidance is (1 + w) v_c - w v_u, which is the same
    in x since x is affine in v. A student is SD3TransformerWithGuidance: the teacher's weights plus
    a zero-initialised w-projection."""

    kind = "sd3-transformer"
    network_name = "transformer"
    w_parameters = ("transformer.guidance_proj.",)

    def __init__(self, config: dict, transformer=None):
        from diffusers import SD3Transformer2DModel

        from .sd3_guidance import SD3TransformerWithGuidance

        super().__init__({"kind": self.kind, "num_classes": 0, "parameterization": "flow", **config})
        network_config = dict(config["transformer"])
        if self.w_conditioned:
            network_config.setdefault("guidance_embedding_dim", GUIDANCE_EMBEDDING_DIM)
            cls = SD3TransformerWithGuidance
        else:
            network_config.pop("guidance_embedding_dim", None)
            cls = SD3Transformer2DModel
        # A teacher adopts its pipeline's transformer (no copy, no random init of billions of weights).
        self.transformer = transformer if transformer is not None else cls.from_config(network_config)
        self._finish_init(config)

    @classmethod
    def from_pipeline(cls, pipe) -> LatentTransformerDenoiser:
        """The teacher of a diffusers SD3 pipeline, with its flow schedule and empty-prompt condition."""
        scheduler = pipe.scheduler.config
        if type(pipe.scheduler).__name__ != "FlowMatchEulerDiscreteScheduler" or scheduler.get("use_dynamic_shifting"):
            raise GdistillError(f"the teacher's scheduler is {type(pipe.scheduler).__name__} "
                                f"(dynamic shifting: {bool(scheduler.get('use_dynamic_shifting'))}); gdistill reads "
                                "SD3-family teachers on FlowMatchEulerDiscreteScheduler with a fixed shift")
        text, _ = prompt_embeddings(pipe, [""], "cpu")
        null = empty_prompt_condition(pipe)
        network_config = {k: v for k, v in dict(pipe.transformer.config).items() if not k.startswith("_")}
        config = {"transformer": network_config, "null_embedding_shape": list(null.shape),
                  "text_shape": list(text.shape[1:]), "latent_size": network_config["sample_size"],
                  "schedule": {"name": "flow-match", "shift": float(scheduler["shift"]),
                               "num_train_timesteps": scheduler["num_train_timesteps"]}}
        model = cls(config, transformer=pipe.transformer)
        model.null_embedding.copy_(null)
        return model

    def feature_layer(self):
        blocks = self.transformer.transformer_blocks  # the middle block's image tokens
        return blocks[len(blocks) // 2], self.transformer.inner_dim

    def network_output(self, z, model_t, condition, w):
        dtype = self.transformer.dtype
        text, pooled = unpack_pooled_condition(condition, self.config["text_shape"])
        extra = {} if w is None else {"guidance": w}
        out = self.transformer(z.to(dtype), encoder_hidden_states=text.to(dtype), pooled_projections=pooled.to(dtype),
                               timestep=model_t.to(dtype), return_dict=False, **extra)[0]
        return out.to(z.dtype)
