"""SDXL- and SD3.5-medium-shaped Stage 1: training steps/s and peak GPU memory through gdistill's own
adapters (LatentUNetDenoiser, LatentTransformerDenoiser), random weights at the published sizes.

    python benchmarks/large_teachers.py                 # on a GPU (80 GB): about 8 minutes
    python benchmarks/large_teachers.py --tiny          # small shapes on the CPU, to check the script

One Stage-1 step is the real objective's work: the frozen teacher (half precision, no grad) makes
the guided target (1 + w) x_c - w x_u in one batched forward of 2B (diffusion.guided_predict_x);
the student (teacher + zero-initialised w-input) predicts x, the truncated-SNR weighted x-loss is
backpropagated, AdamW steps. The conditions are random tensors of the real shapes (SDXL: 77 x 2048
text + 1280 pooled; SD3.5 medium: 333 x 4096 text, CLIP 77 + T5 256, + 2048 pooled). Variants:
bf16 autocast (weights fp32, as accelerate does) with and without gradient checkpointing, and a
LoRA adapter (rank 64). FSDP2 needs several GPUs and is not run here. Reported: steps/s, peak
memory (torch.cuda.max_memory_allocated), trainable parameters.
Writes benchmarks/results/large_teachers_DEVICE.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from report import command_line, device_name, timed_steps, write_report  # benchmarks/report.py (the script's folder is on sys.path)

from gdistill.diffusion import weighted_x_loss
from gdistill.models import guided_predict_x, make_student
from gdistill.models.latent import LatentUNetDenoiser
from gdistill.models.sd3 import LatentTransformerDenoiser

HERE = Path(__file__).resolve().parent
SD_SCHEDULE = {"name": "sd-discrete", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
               "beta_schedule": "scaled_linear"}
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
                 cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)
SD35_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                   num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                   pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                   dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
TINY_SDXL = dict(SDXL_UNET, sample_size=16, block_out_channels=(32, 64, 64), transformer_layers_per_block=(1, 1, 1),
                 attention_head_dim=(2, 4, 4), cross_attention_dim=64, addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=8)
TINY_SD3 = dict(SD35_MEDIUM, sample_size=16, num_layers=2, attention_head_dim=8, num_attention_heads=4,
                joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=32,
                dual_attention_layers=(0,))


def teacher_config(kind: str, tiny: bool) -> tuple[type, dict, tuple[int, int], int]:
    """(adapter class, its config, text shape, pooled size) at the published (or tiny) sizes."""
    if kind == "sdxl":
        unet = TINY_SDXL if tiny else SDXL_UNET
        text, pooled = (16, 64) if tiny else (77, 2048), 32 if tiny else 1280
        return LatentUNetDenoiser, {"unet": unet, "null_embedding_shape": [text[0] * text[1] + pooled],
                                    "sdxl": {"text_shape": list(text), "vae_scale_factor": 8},
                                    "latent_size": unet["sample_size"], "schedule": SD_SCHEDULE}, text, pooled
    network = TINY_SD3 if tiny else SD35_MEDIUM
    text, pooled = (32, 64) if tiny else (333, 4096), 64 if tiny else 2048
    return LatentTransformerDenoiser, {"transformer": network, "null_embedding_shape": [text[0] * text[1] + pooled],
                                       "text_shape": list(text), "latent_size": network["sample_size"],
                                       "schedule": {"name": "flow-match", "shift": 3.0, "num_train_timesteps": 1000}}, text, pooled


def stage1_rate(kind: str, tiny: bool, device, batch: int, checkpointing: bool, lora_rank: int, steps: int, warmup: int = 3):
    cls, config, text, pooled = teacher_config(kind, tiny)
    torch.manual_seed(0)
    with device:  # build on the device: initialising billions of parameters on the CPU takes longer than the run
        teacher = cls(config).as_frozen_teacher(device).requires_grad_(False).eval()
        student = make_student(teacher).to(device, torch.float32)
    if checkpointing:
        student.enable_gradient_checkpointing()
    if lora_rank:
        student.add_lora(lora_rank)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    shape = student.data_shape
    x = torch.randn(batch, *shape, device=device)
    condition = torch.randn(batch, text[0] * text[1] + pooled, device=device)
    bf16 = device.type == "cuda"

    def step():
        t, w = torch.rand(batch, device=device).clamp_min(0.02), 9 * torch.rand(batch, device=device)
        a, s = (v.view(-1, 1, 1, 1) for v in teacher.schedule.alpha_sigma(t))
        z = a * x + s * torch.randn_like(x)
        with torch.no_grad():
            target = guided_predict_x(teacher, z, t, condition, w)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            prediction = student(z, t, condition, w)
        loss = weighted_x_loss(prediction.float(), target, teacher.schedule.log_snr(t), "snr-trunc")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    rate, peak = timed_steps(step, device, steps, warmup)
    sizes = (sum(p.numel() for p in student.parameters()), sum(p.numel() for p in params))
    return rate, peak, sizes  # the models go with this frame; main empties the CUDA cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small shapes (CPU check of the script)")
    parser.add_argument("--teachers", default="sdxl,sd3")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variants = [(False, 0), (True, 0), (True, 64)]
    rows = []
    for kind in args.teachers.split(","):
        for checkpointing, lora in variants:
            try:
                rate, peak, (weights, trainable) = stage1_rate(kind, args.tiny, device, args.batch, checkpointing, lora, args.steps)
                rows.append((kind, "on" if checkpointing else "off", lora or "whole network", f"{rate:.2f}", f"{peak:.1f}",
                             f"{weights / 1e9:.2f}", f"{trainable / 1e6:.0f}"))
            except torch.OutOfMemoryError:
                rows.append((kind, "on" if checkpointing else "off", lora or "whole network", "out of memory", "-", "-", "-"))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(rows[-1], flush=True)
    import diffusers

    names = {"sdxl": "SDXL UNet (2.57 B weights)", "sd3": "SD3.5-medium-shaped transformer (2.24 B weights)"}
    lines = ["# SDXL- and SD3.5-medium-shaped Stage 1: steps/s and memory", "",
             f"Command: `{command_line(parser, args, 'benchmarks/large_teachers.py')}`", "",
             f"Device: {device_name(device)}; torch {torch.__version__}, diffusers {diffusers.__version__}. "
             f"{'Tiny shapes' if args.tiny else ', '.join(names[k] for k in args.teachers.split(','))}, random weights, "
             f"{'16x16' if args.tiny else '128x128'} latents, batch {args.batch}, teacher in "
             f"{'fp16' if device.type == 'cuda' else 'fp32'}, student bf16 autocast on a GPU; mean over {args.steps} "
             "steps after 3 warm-up steps.", "",
             "| teacher | gradient checkpointing | LoRA rank | steps / s | peak memory (GiB) | student weights (B) | trainable (M) |",
             "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    suffix = "tiny_cpu" if args.tiny and device.type == "cpu" else device.type
    write_report(args.out or HERE / "results" / f"large_teachers_{suffix}.md", lines)


if __name__ == "__main__":
    main()
