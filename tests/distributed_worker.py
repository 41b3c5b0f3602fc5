"""Run under torchrun or `accelerate launch` by tests/test_distributed.py: trains a small denoiser
with the shared loop and the stages' sharded batch draws, then every rank saves the weights (and the
EMA weights) it ended with.

--fsdp: accelerate offers FSDP on accelerators only and on CPUs silently trains with DDP instead;
this worker lifts that gate (it sets accelerate's distributed type to FSDP with the plugin that
`accelerate launch --config_file examples/accelerate/fsdp_8gpus.yaml` put in the environment), so
the loop's FSDP2 path (sharded weights, gathered checkpoints and results) runs on CPU processes (gloo).
--stop-after K: every rank raises after K optimizer steps, as a crashed run would stop.
--model sd-tiny:DIR: the student UNet of the tiny SD pipeline in DIR (to check how FSDP wraps it);
--lora R: a LoRA adapter of it trains instead (frozen and trained weights in one shard group).
--model toy-consistency: consistency distillation of the built-in toy2d teacher, the real objective,
whose target network is the EMA read as a network (under FSDP: the averaged shards).
--model toy-dmd: DMD of the toy2d teacher with the GAN head (two networks in turns, the critic
frozen in the generator's turn).
"""
import argparse
from pathlib import Path

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin, PartialState
from accelerate.utils import DistributedType

from gdistill.data import Toy2D
from gdistill.diffusion import alpha_sigma_like, diffuse, weighted_x_loss
from gdistill.models import build_denoiser
from gdistill.files import save_safetensors_atomic
from gdistill.stages.common import draw_batch, draw_t, process_share
from gdistill.train import LoopSettings, Objective, train


class Stop(Exception):
    pass


def toy_student():
    torch.manual_seed(0)
    model = build_denoiser({"kind": "toy-mlp", "dim": 2, "num_classes": 4, "parameterization": "v",
                            "schedule": {"name": "cosine"}})
    data = Toy2D()

    def loss_fn(net, generator, device, batch):
        x, labels, eps = draw_batch(data, batch, generator, device)
        t = draw_t(model.schedule, batch, generator).to(device)
        a, s = alpha_sigma_like(model.schedule, t, x)
        return weighted_x_loss(net(diffuse(x, eps, a, s), t, labels), x, model.schedule.log_snr(t), "v-mse")

    return model, loss_fn


def toy_consistency_student(batch: int):
    """The student of the built-in toy2d teacher and the stage's ConsistencyDistillation objective."""
    from gdistill.config import ConsistencyConfig, apply_preset
    from gdistill.models import make_student
    from gdistill.run_folder import load_model
    from gdistill.stages.objectives import ConsistencyDistillation

    torch.manual_seed(0)
    teacher, _, _ = load_model("toy2d")
    config = apply_preset(ConsistencyConfig(teacher="toy2d", batch_size=batch, solver_steps=8), "toy-mlp", "consistency")
    return make_student(teacher), ConsistencyDistillation(Toy2D(), teacher, config, 0.0, 4.0)


def toy_dmd_networks(batch: int):
    """DMD of the built-in toy2d teacher with the GAN head: the generator and the fake score as one
    module, trained in turns (the fake score twice, then the generator)."""
    from gdistill.config import DMDConfig, apply_preset
    from gdistill.models import make_student
    from gdistill.run_folder import load_model
    from gdistill.stages.objectives import DistributionMatching, GeneratorAndFakeScore

    torch.manual_seed(0)
    teacher, _, _ = load_model("toy2d")
    config = apply_preset(DMDConfig(teacher="toy2d", batch_size=batch, fake_updates=2, gan_weight=0.1), "toy-mlp", "dmd")
    networks = GeneratorAndFakeScore(make_student(teacher), make_student(teacher), gan_head=True)
    return networks, DistributionMatching(Toy2D(), teacher, config, 0.0, 4.0)


def sd_tiny_student(folder: str, lora_rank: int):
    """The w-conditioned student of a tiny SD pipeline, trained to denoise random latents given
    random text embeddings (what the UNet computes is the real one; the data need not be)."""
    from gdistill.models import make_student
    from gdistill.models.sd_pipeline import load_pipeline_teacher

    torch.manual_seed(0)
    teacher, _, _ = load_pipeline_teacher(folder)
    model = make_student(teacher)
    if lora_rank:
        model.add_lora(lora_rank)
    unet = model.unet.config

    def loss_fn(net, generator, device, batch):
        share = process_share(batch)
        size = unet.sample_size
        x = torch.randn((batch, unet.in_channels, size, size), generator=generator)[share].to(device)
        text = torch.randn((batch, 77, unet.cross_attention_dim), generator=generator)[share].to(device)
        eps = torch.randn((batch, *x.shape[1:]), generator=generator)[share].to(device)
        t = draw_t(model.schedule, batch, generator).to(device)
        w = torch.rand(batch, generator=generator)[share].to(device)
        a, s = alpha_sigma_like(model.schedule, t, x)
        return weighted_x_loss(net(diffuse(x, eps, a, s), t, text, w), x, model.schedule.log_snr(t), "snr-trunc")

    return model, loss_fn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--stop-after", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--lora", type=int, default=0, help="sd-tiny: train a LoRA adapter of this rank")
    args = parser.parse_args()

    batch, calls = 64 // args.accumulation, []
    objective = None
    if args.model in ("toy-consistency", "toy-dmd"):
        model, objective = (toy_consistency_student if args.model == "toy-consistency" else toy_dmd_networks)(batch)
        loss_of_batch = lambda net, generator, device, _: objective(net, generator, device)[0]  # noqa: E731
    else:
        model, loss_of_batch = toy_student() if args.model == "toy" else sd_tiny_student(args.model.split(":", 1)[1], args.lora)

    class Loss(Objective):
        trains_in_turns = getattr(objective, "trains_in_turns", False)

        def prepare(self, device, model, ema):
            if objective is not None:
                objective.prepare(device, model, ema)

        def at_step(self, step):
            if objective is not None:
                objective.at_step(step)

        def __call__(self, net, generator, device):
            calls.append(1)
            if args.stop_after and len(calls) > args.stop_after * args.accumulation:
                raise Stop(f"stopped after {args.stop_after} steps")
            return loss_of_batch(net, generator, device, batch), {}

    loss_fn = Loss()

    accelerator = None
    if args.fsdp:
        PartialState(cpu=True)
        plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch set
        accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
        accelerator.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # AcceleratorState re-reads it
        accelerator.state.fsdp_plugin = plugin
    settings = LoopSettings(steps=args.steps, lr=1e-3, ema_decay=0.9, grad_clip=1.0, seed=0, log_every=5,
                            checkpoint_every=args.checkpoint_every, accumulation=args.accumulation)
    trained, ema = train(model, loss_fn, settings, args.out / "work", "worker", {"run": "fp"}, accelerator)
    rank = PartialState().process_index
    if args.fsdp and rank == 0:  # how FSDP cut the model: one shard group per wrapped block
        from torch.distributed.fsdp import FSDPModule

        groups = sum(isinstance(m, FSDPModule) for m in accelerator._models[0].modules())
        (args.out / "fsdp_groups.txt").write_text(str(groups))
    save_safetensors_atomic(trained.state_dict(), args.out / f"rank{rank}.safetensors")
    save_safetensors_atomic(ema.state_dict(), args.out / f"rank{rank}-ema.safetensors")


if __name__ == "__main__":
    main()
