"""A tiny Stable-Diffusion-shaped pipeline built offline (random weights, a 40-token vocabulary):
the real diffusers classes at toy sizes, for every latent-space test."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def build_tiny_sd(folder: Path, seed: int = 0, inpainting: bool = False) -> Path:
    """inpainting: a 9-channel UNet (latents, mask, masked-image latents) in a
    StableDiffusionInpaintPipeline, as SD's inpainting model."""
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=9 if inpainting else 4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=16)
    tokenizer = tiny_tokenizer(folder)
    text_encoder = CLIPTextModel(tiny_text_config(tokenizer))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = pipeline_class(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


def tiny_tokenizer(folder: Path):
    """A CLIP tokenizer over a 40-token vocabulary (letters and digits), 16 tokens a prompt."""
    from transformers import CLIPTokenizer

    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", "<unk>"] + letters + [c + "</w>" for c in letters])}
    tokens = Path(folder) / "tokenizer-src"
    tokens.mkdir(exist_ok=True)
    (tokens / "vocab.json").write_text(json.dumps(vocab))
    (tokens / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tokens / "vocab.json"), str(tokens / "merges.txt"), model_max_length=16)


def tiny_text_config(tokenizer, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=len(tokenizer), max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1, **extra)


def build_tiny_sdxl(folder: Path, seed: int = 0, force_zeros_for_empty_prompt: bool = True) -> Path:
    """A tiny SDXL-shaped pipeline: two CLIP text encoders (the second with a projection: the pooled
    embedding), a UNet with SDXL's added conditioning (addition_embed_type text_time: pooled text
    and the 6 size/crop ids), cross-attention on both encoders' states concatenated (32 + 32), and
    SDXL's default scheduler (Euler, leading spacing)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=4, use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=16)
    tokenizer = tiny_tokenizer(folder)
    text_encoder = CLIPTextModel(tiny_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config(tokenizer, projection_dim=32))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=False)
    pipe.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


def build_tiny_sd3(folder: Path, seed: int = 0) -> Path:
    """A tiny SD3-shaped pipeline: the MMDiT (SD3Transformer2DModel, patch 1), two CLIP text encoders
    with projections (their pooled outputs joined: 64), no T5 (the pipeline's supported way to drop
    it: its text slots are zeros), a VAE with SD3's shift and scaling factors, and the rectified-flow
    scheduler with SD3's shift 3."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8,
                                        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
                                        pooled_projection_dim=64, out_channels=4, pos_embed_max_size=16)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=16,
                        scaling_factor=1.5305, shift_factor=0.0609)
    tokenizer = tiny_tokenizer(folder)
    encoders = [CLIPTextModelWithProjection(tiny_text_config(tokenizer, projection_dim=32)) for _ in range(2)]
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                                    text_encoder=encoders[0], tokenizer=tokenizer, text_encoder_2=encoders[1],
                                    tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None)
    pipe.save_pretrained(folder / "pipeline")
    index = json.loads((folder / "pipeline" / "model_index.json").read_text())  # absent, as diffusers writes it
    index.update(text_encoder_3=[None, None], tokenizer_3=[None, None])
    (folder / "pipeline" / "model_index.json").write_text(json.dumps(index))
    return folder / "pipeline"


def build_tiny_dit(folder: Path, seed: int = 0) -> Path:
    """A tiny DiT-shaped pipeline: DiTTransformer2DModel (1000 classes and the null class 1000, adaLN-
    Zero, learned variance: 2C output channels), a VAE with DiT's scaling factor, DiT's linear-beta
    schedule (DDIM here: the default DPM-Solver makes no difference to gdistill, which walks DDIM)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=16,
                        scaling_factor=0.18215)
    scheduler = DDIMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False)
    DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler).save_pretrained(folder / "pipeline")
    return folder / "pipeline"


def write_class_folder(folder: Path, classes: list[str], per_class: int = 4, size: int = 16, seed: int = 0) -> Path:
    """DIR/<class>/<k>.png: noisy images of one colour per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        colour = rng.integers(0, 256, 3)
        (Path(folder) / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            image = np.clip(colour + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(Path(folder) / name / f"{k}.png")
    return Path(folder)


def guided_x_errors(teacher, student, data, w_max: float = 4.0, n: int = 64, seed: int = 123) -> dict[str, float]:
    """How far from the guided teacher a fresh student (= the conditional teacher) and `student` are:
    on held-out noise, times and w in [0, w_max] at the training latents, the truncated-SNR weighted
    x-error to (1 + w) x_c - w x_u."""
    from gdistill.diffusion import alpha_sigma_like, diffuse, weighted_x_loss
    from gdistill.models import guided_predict_x, make_student

    g = torch.Generator().manual_seed(seed)
    x, condition = data.batch(n, g)
    t, w = teacher.schedule.sample_t(len(x), g), w_max * torch.rand(len(x), generator=g)
    z = diffuse(x, torch.randn(x.shape, generator=g), *alpha_sigma_like(teacher.schedule, t, x))
    with torch.no_grad():
        guided = guided_predict_x(teacher, z, t, condition, w)
        return {name: weighted_x_loss(m(z, t, condition, w), guided, teacher.schedule.log_snr(t), "snr-trunc").item()
                for name, m in (("fresh", make_student(teacher).eval()), ("trained", student))}


def assert_fresh_student_is_the_conditional_teacher(teacher, condition) -> None:
    """A fresh student (zero-initialised w-input) gives the teacher's conditional prediction at any
    w, and so does a student rebuilt from its config and weights."""
    from gdistill.models import build_denoiser, make_student

    student = make_student(teacher).eval()
    z = torch.randn(len(condition), *teacher.data_shape, generator=torch.Generator().manual_seed(0))
    t, w = torch.linspace(0.9, 0.2, len(condition)), torch.linspace(1.0, 4.0, len(condition))
    with torch.no_grad():
        expected = teacher(z, t, condition)
        assert torch.equal(student(z, t, condition, w), expected)
        rebuilt = build_denoiser(student.config)
        rebuilt.load_state_dict(student.state_dict())
        assert torch.equal(rebuilt(z, t, condition, w), expected)


def write_caption_folder(folder: Path, captions: list[str], seed: int = 0, size: tuple[int, int] = (20, 24)) -> Path:
    """NAME.jpg + NAME.txt pairs: one noisy flat colour per caption (height, width = size)."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, text in enumerate(captions):
        colour = rng.integers(0, 256, 3)
        image = np.clip(colour + rng.normal(0, 40, (*size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i}.jpg")
        (folder / f"{i}.txt").write_text(text)
    return folder
