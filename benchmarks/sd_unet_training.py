"""Stable-Diffusion-1.5-shaped UNet: Stage-1 training step speed and peak memory, and sampling latency.

    python benchmarks/sd_unet_training.py              # on a GPU: about 8 minutes (3 of them compiling)
    python benchmarks/sd_unet_training.py --tiny       # a small UNet on the CPU, to check the script

Groundwork for issue 4 (SD teachers), measured before the latent-space stages exist: the UNets are
diffusers' `UNet2DConditionModel` with SD 1.5's published architecture (block widths 320/640/1280/1280,
2 layers a block, cross-attention 768, 8 heads, 4 latent channels) and random weights, which is enough
for speed and memory. The student has the same shape plus `time_cond_proj_dim` (diffusers' hook for
a guidance embedding). One Stage-1 training step at 512x512 (64x64 latents) is:

    teacher (frozen, half precision, no grad): one batched forward of the conditional and the
        unconditional prompt embeddings (2B), combined as (1 + w) eps_c - w eps_u;
    student: forward with w's embedding as timestep_cond, MSE to that target, backward, AdamW step.

Variants: bf16 or fp16 autocast for the student (its weights stay fp32, as accelerate's mixed
precision does), gradient checkpointing on or off, full UNet or a LoRA adapter (peft, rank 64 on the
attention projections). Reported: steps per second and peak GPU memory (torch.cuda.max_memory_allocated).
Sampling: UNet time only (no VAE, no text encoder) of the 4-step student (4 calls at batch 1) against
the 50-step guided teacher (50 batched calls at batch 2), fp16.
Writes benchmarks/results/sd_unet_training_DEVICE.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from report import command_line, compile_in_place, device_name, sync, timed_steps, write_report  # benchmarks/report.py (the script's folder is on sys.path)

from gdistill.models.latent import GUIDANCE_EMBEDDING_DIM, guidance_scale_embedding

HERE = Path(__file__).resolve().parent
SD15 = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
TINY = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            cross_attention_dim=32, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
W_EMBEDDING = GUIDANCE_EMBEDDING_DIM  # time_cond_proj_dim


H100_BF16_DENSE_PEAK = 989e12  # FLOP/s, NVIDIA's H100 SXM datasheet (dense, no sparsity)


def train_step_rate(config, device, batch, precision, checkpointing, lora_rank, steps, warmup=3, compile=False):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    half = torch.float16 if device.type == "cuda" else torch.float32
    with device:  # build on the device: initialising 860M parameters on the CPU takes longer than the run
        teacher = UNet2DConditionModel(**config).to(device, half).requires_grad_(False).eval()
        student = UNet2DConditionModel(**config, time_cond_proj_dim=W_EMBEDDING).to(device)
    if checkpointing:
        student.enable_gradient_checkpointing()
    if lora_rank:
        from peft import LoraConfig

        student.requires_grad_(False)
        student.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian",
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    size, text = config["sample_size"], config["cross_attention_dim"]
    z = torch.randn(batch, 4, size, size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    cond, uncond = torch.randn(batch, 77, text, device=device), torch.randn(batch, 77, text, device=device)
    w = torch.rand(batch, device=device) * 14

    def step():
        with torch.no_grad():
            eps = teacher(torch.cat([z, z]).to(half), torch.cat([t, t]), torch.cat([cond, uncond]).to(half)).sample.float()
            eps_c, eps_u = eps.chunk(2)
            target = (1 + w.view(-1, 1, 1, 1)) * eps_c - w.view(-1, 1, 1, 1) * eps_u
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = student(z, t, cond, timestep_cond=guidance_scale_embedding(w, W_EMBEDDING).to(device)).sample
        loss = torch.nn.functional.mse_loss(out.float(), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # FLOPs of one eager step (matmuls and convolutions)
        step()
    flops = counter.get_total_flops()
    if compile:  # as `--compile` does in training: the student's and the frozen teacher's forward
        compile_in_place((student, teacher), "default")
    rate, peak = timed_steps(step, device, steps, warmup)
    trainable = sum(p.numel() for p in params)
    return rate, peak, trainable, flops  # the models go with this frame; main empties the CUDA cache


@torch.no_grad()
def sampling_latency(config, device, repeats=10, compile_mode=None):
    """Median seconds of the UNet calls of one image: student 4 steps vs guided teacher 50 steps;
    with compile_mode both UNets are torch.compiled first (reduce-overhead: CUDA graphs)."""
    from diffusers import UNet2DConditionModel

    half = torch.float16 if device.type == "cuda" else torch.float32
    with device:
        teacher = UNet2DConditionModel(**config).to(device, half).eval()
        student = UNet2DConditionModel(**config, time_cond_proj_dim=W_EMBEDDING).to(device, half).eval()
    if compile_mode:
        compile_in_place((teacher, student), compile_mode)
    size, text = config["sample_size"], config["cross_attention_dim"]
    z = torch.randn(1, 4, size, size, device=device, dtype=half)
    cond = torch.randn(1, 77, text, device=device, dtype=half)
    w_emb = guidance_scale_embedding(torch.tensor([6.5]), W_EMBEDDING).to(device, half)

    def student_run():
        for t in torch.linspace(999, 0, 4).long():
            student(z, t.to(device), cond, timestep_cond=w_emb)

    def teacher_run():
        both, z2 = torch.cat([cond, cond]), torch.cat([z, z])
        for t in torch.linspace(999, 0, 50).long():
            teacher(z2, t.to(device), both)

    times = {}
    for name, fn in (("student, 4 steps (4 calls)", student_run), ("guided teacher, 50 steps (100 calls as 50 of batch 2)", teacher_run)):
        fn(), fn()  # warm-up (with compile: compilation, graph recording)
        samples = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            samples.append(time.perf_counter() - start)
        times[name] = sorted(samples)[len(samples) // 2]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a small UNet (CPU check of the script)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--variants", default="all",
                        help="all, or comma-separated indices into the variant list (0: bf16, 1: bf16 + checkpointing, ... "
                             "6: bf16 compiled), to fit a short GPU stint")
    parser.add_argument("--compile-sampling", default="reduce-overhead", metavar="MODE",
                        help="the compiled sampling rows' torch.compile mode (none: eager rows only)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = TINY if args.tiny else SD15
    variants = [("bf16", False, 0, False), ("bf16", True, 0, False), ("fp16", False, 0, False), ("fp16", True, 0, False),
                ("bf16", True, 64, False), ("fp32", True, 0, False), ("bf16", False, 0, True)]
    if args.variants != "all":
        variants = [variants[int(i)] for i in args.variants.split(",")]
    rows = []
    for precision, checkpointing, lora, compiled in variants:
        name = (precision + (" compiled" if compiled else ""), checkpointing, lora)
        try:
            rate, peak, trainable, flops = train_step_rate(config, device, args.batch, precision, checkpointing, lora,
                                                           args.steps, compile=compiled)
            mfu = f"{100 * flops * rate / H100_BF16_DENSE_PEAK:.1f} %" if device.type == "cuda" else "-"
            rows.append((*name, f"{rate:.2f}", f"{peak:.1f}", f"{trainable / 1e6:.1f}", f"{flops / 1e12:.2f}", mfu))
        except torch.OutOfMemoryError:
            rows.append((*name, "out of memory", "-", "-", "-", "-"))
        except ImportError as e:  # LoRA needs peft
            rows.append((*name, f"not run: {e}", "-", "-", "-", "-"))
        torch._dynamo.reset()  # compiled code holds its modules: free them before the next variant is measured
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(rows[-1], flush=True)
    latency = {"eager": sampling_latency(config, device)}  # mode -> {sampler: seconds per image}
    if args.compile_sampling != "none":
        latency[f"compiled ({args.compile_sampling})"] = sampling_latency(config, device, compile_mode=args.compile_sampling)
    import diffusers

    lines = ["# SD-1.5-shaped UNet: Stage-1 training step and sampling latency", "",
             f"Command: `{command_line(parser, args, 'benchmarks/sd_unet_training.py')}`", "",
             f"Device: {device_name(device)}; torch {torch.__version__}, diffusers {diffusers.__version__}. "
             f"{'Tiny UNet' if args.tiny else 'SD 1.5 UNet architecture, random weights'}, "
             f"{'16x16' if args.tiny else '64x64 latents (512x512 images)'}, batch {args.batch}, "
             f"teacher in {'fp16' if device.type == 'cuda' else 'fp32'}; mean over {args.steps} steps after 3 warm-up steps.", "",
             "| student precision | gradient checkpointing | LoRA rank | steps / s | peak memory (GiB) | trainable params (M) "
             "| TFLOP / step | model FLOPs utilisation (of 989 TFLOP/s bf16) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in (p, "on" if ck else "off", lr or "full UNet", *rest)) + " |"
              for p, ck, lr, *rest in rows]
    lines += ["", "Sampling, UNet calls only, batch 1, half precision on a GPU (median of 10):", "",
              "| sampler | seconds per image |", "|---|---|"]
    lines += [f"| {k}, {mode} | {v:.3f} |" for mode, times in latency.items() for k, v in times.items()]
    lines += ["", "TFLOP / step: matmuls and convolutions of one step (teacher forward at 2B, student forward and "
              "backward at B), counted by torch.utils.flop_counter on the eager step (recomputation under "
              "checkpointing included); utilisation = TFLOP / step x steps / s over the H100's dense bf16 peak."]
    for mode, times in latency.items():
        s4, t50 = times.values()  # student, then teacher (sampling_latency's order)
        lines.append(f"Speed-up of the 4-step student over the 50-step guided teacher, {mode}: {t50 / s4:.1f}x "
                     f"(ratio of calls 25x, batch-2 calls counted as two: {t50 / s4 / 25:.2f} of it).")
    suffix = "tiny_cpu" if args.tiny and device.type == "cpu" else device.type
    write_report(args.out or HERE / "results" / f"sd_unet_training_{suffix}.md", lines)


if __name__ == "__main__":
    main()
