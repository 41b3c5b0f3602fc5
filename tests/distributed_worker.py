"""Run under torchrun by tests/test_distributed.py: trains a small toy2d denoiser with the shared loop
and the stages' sharded batch draws, then every rank saves the weights it ended with."""
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from gdistill.data import Toy2D
from gdistill.diffusion import alpha_sigma_like, diffuse, weighted_x_loss
from gdistill.models import build_denoiser
from gdistill.run import save_safetensors_atomic
from gdistill.stages.common import draw_batch, draw_t
from gdistill.train import LoopSettings, train


def main(out: str, accumulation: int) -> None:
    out = Path(out)
    torch.manual_seed(0)
    model = build_denoiser({"kind": "toy-mlp", "dim": 2, "num_classes": 4, "parameterization": "v",
                            "schedule": {"name": "cosine"}})
    data, batch = Toy2D(), 64 // accumulation

    def loss_fn(net, generator, device):
        x, labels, eps = draw_batch(data, batch, generator, device)
        t = draw_t(model.schedule, batch, generator).to(device)
        a, s = alpha_sigma_like(model.schedule, t, x)
        return weighted_x_loss(net(diffuse(x, eps, a, s), t, labels), x, model.schedule.log_snr(t), "v-mse"), {}

    settings = LoopSettings(steps=20, lr=1e-3, ema_decay=0.9, grad_clip=1.0, seed=0, log_every=5,
                            checkpoint_every=1000, accumulation=accumulation)
    trained, ema = train(model, loss_fn, settings, out / "work", "worker", {"run": "fp"})
    rank = PartialState().process_index
    save_safetensors_atomic(trained.state_dict(), out / f"rank{rank}.safetensors")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
