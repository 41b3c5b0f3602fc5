"""What `--cache DIR` saves: the cost of one training batch of SD data, encoded on the fly (JPEG
decode, resize + crop, SD-1.5-shaped VAE encoder at 512x512, CLIP-L-shaped text encoder) against
the same batch read back from the latent cache.

    python benchmarks/latent_cache.py                  # 2 CPU cores: about 15 minutes (the VAE at 512 px)
    python benchmarks/latent_cache.py --device cuda    # encoders in fp16, as the stages run them

The encoders have SD 1.5's published shapes (VAE 128/256/512/512, 2 layers a block; CLIP text
encoder 768 wide, 12 layers, 77 tokens) and random weights, which is enough for time. The batches
come from gdistill's own `LatentCaptionData.batch`, the function the stages call. Writes
benchmarks/results/latent_cache_DEVICE.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from report import command_line, device_name, sync, write_report  # benchmarks/report.py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def build_sd15_encoders_pipeline(folder: Path) -> Path:
    """A diffusers folder with SD-1.5-shaped VAE and text encoder (random weights) and a tiny UNet
    (the encoders are what is measured)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if (folder / "model_index.json").is_file():
        return folder
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512)
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", "<unk>"] + letters + [c + "</w>" for c in letters])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                                num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=64, layers_per_block=1, block_out_channels=(32, 64), cross_attention_dim=768,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=4, norm_num_groups=8)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              steps_offset=1)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder


def build_captions(folder: Path, count: int) -> Path:
    from PIL import Image

    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):  # smooth random images (JPEG-sized like photos), 640x512 as a typical crop source
        small = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 512), Image.BICUBIC).save(folder / f"{i:04d}.jpg", quality=90)
        (folder / f"{i:04d}.txt").write_text(f"a photo number {i} of a red fox in the snow")
    return folder


def time_batches(data, batches: int, batch_size: int, device) -> float:
    generator = torch.Generator().manual_seed(0)
    sync(device)
    start = time.perf_counter()
    for _ in range(batches):
        data.batch(batch_size, generator)
    sync(device)
    return (time.perf_counter() - start) / batches


def main():
    from gdistill.data.captions import CaptionDataset
    from gdistill.data.latents import LatentCaptionData
    from gdistill.models.sd_encoders import SDEncoders
    from gdistill.models.sd_pipeline import pipeline_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--work", default="runs/bench-latent-cache")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    work = Path(args.work)
    pipeline = build_sd15_encoders_pipeline(work / "pipeline")
    # every batch draws fresh pairs, so the cache is filled with all of them first (a warm cache)
    captions = build_captions(work / "captions", args.batch * args.batches)
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)

    def data(with_cache: bool):
        return LatentCaptionData(CaptionDataset(str(captions), args.resolution),
                                 SDEncoders(pipeline_record(str(pipeline))).to(device), cache if with_cache else None)

    time_batches(data(False), 1, args.batch, device)  # warm-up (allocations, kernels)
    encoded = time_batches(data(False), args.batches, args.batch, device)
    cold = time_batches(data(True), args.batches, args.batch, device)  # encode + write the entries
    warm_data = data(True)
    warm = time_batches(warm_data, args.batches, args.batch, device)
    entry = next(cache.rglob("*.safetensors")).stat().st_size
    per_image = lambda seconds: f"{seconds / args.batch * 1000:.1f} ms"  # noqa: E731
    lines = [
        f"# Latent cache ({device_name(device)})", "",
        f"`{command_line(parser, args, 'benchmarks/latent_cache.py')}`: batches of {args.batch} image-caption "
        f"pairs at {args.resolution}x{args.resolution} through gdistill's `LatentCaptionData.batch` "
        "(SD-1.5-shaped VAE encoder and CLIP-L-shaped text encoder, random weights"
        f"{', fp16' if device.type == 'cuda' else ', fp32'}); mean of {args.batches} batches.", "",
        "| data path | seconds per batch | per image |", "|---|---|---|",
        f"| encoded every time (no `--cache`) | {encoded:.3f} | {per_image(encoded)} |",
        f"| first pass with `--cache` (encode + write) | {cold:.3f} | {per_image(cold)} |",
        f"| later passes with `--cache` (read) | {warm:.3f} | {per_image(warm)} |", "",
        f"Cached batches are {encoded / warm:.0f}x cheaper than encoding (hits: {warm_data.cache_hits} of "
        f"{args.batch * args.batches}); an entry takes {entry / 1024:.0f} KiB on disk (latent + 77-token text embedding, float32).",
    ]
    out = args.out or HERE / "results" / f"latent_cache_{device.type}.md"
    write_report(out, lines)


if __name__ == "__main__":
    main()
