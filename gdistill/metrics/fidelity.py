"""FID, IS and KID with torch-fidelity's Inception-v3 (the optional extra `gdistill[fid]`).

torch-fidelity needs torchvision, which cannot be installed beside a CPU-only torch on every
machine, so it is imported only here and only when an Inception metric is asked for.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import GdistillError
from ..images import to_uint8
from .reference import ReferenceSet

INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_WEIGHTS_FILE = INCEPTION_WEIGHTS_URL.rsplit("/", 1)[1]
INCEPTION_FEATURES = 2048
# torch-fidelity's result keys -> gdistill's column names
RESULT_KEYS = {"frechet_inception_distance": "fid", "inception_score_mean": "is",
               "kernel_inception_distance_mean": "kid"}


def import_torch_fidelity():
    try:
        import torch_fidelity
    except Exception as e:  # ImportError, or torchvision failing to load against this torch
        raise GdistillError(
            f"Inception FID/IS/KID need torch-fidelity, which does not import here ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}): install it with pip install 'gdistill[fid]' "
            "(it needs a torchvision build that matches your torch), or use --ref digits for the offline digits metric"
        ) from None
    return torch_fidelity


def ensure_inception_weights(path: Path | None) -> str | None:
    """The weights file to hand torch-fidelity, checked before any sampling: the given file, or
    None when torch hub's cache holds the file or it can be downloaded now."""
    if path is not None:
        if not Path(path).is_file():
            raise GdistillError(f"--inception-weights {path} does not exist: pass the file {INCEPTION_WEIGHTS_FILE}")
        return str(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if cached.is_file():
        return None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_WEIGHTS_URL, str(cached), progress=False)
    except Exception as e:  # no network: URLError, timeouts, proxies
        raise GdistillError(
            f"cannot download torch-fidelity's Inception weights ({e.__class__.__name__}): on a machine with "
            f"internet fetch {INCEPTION_WEIGHTS_URL} and pass the file with --inception-weights PATH") from None
    return None


class Uint8Images(torch.utils.data.Dataset):
    """Samples in [-1, 1] as the uint8 (3, H, W) tensors torch-fidelity reads (grey repeated to RGB)."""

    def __init__(self, samples: torch.Tensor):
        self.images = to_uint8(samples)
        if self.images.shape[1] == 1:
            self.images = self.images.repeat(1, 3, 1, 1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def inception_metrics(samples: torch.Tensor, reference: ReferenceSet, metrics: set[str], weights: str | None,
                      cache_dir: Path, device: torch.device) -> dict[str, float]:
    """{'fid', 'is', 'kid'} (those asked for) of `samples` against `reference`. torch-fidelity
    caches the reference's Inception features under a name made from its content hash."""
    torch_fidelity = import_torch_fidelity()
    n = min(len(samples), len(reference.samples))
    result = torch_fidelity.calculate_metrics(
        input1=Uint8Images(samples), input2=Uint8Images(reference.samples),
        fid="fid" in metrics, isc="is" in metrics, kid="kid" in metrics,
        kid_subset_size=min(1000, n), cuda=torch.device(device).type == "cuda",
        feature_extractor_weights_path=weights, cache=True, cache_root=str(Path(cache_dir) / "torch-fidelity"),
        input2_cache_name=f"gdistill-ref-{reference.content_hash[:32]}", verbose=False)
    return {ours: float(result[key]) for key, ours in RESULT_KEYS.items() if key in result}
