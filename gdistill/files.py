"""File helpers every writer shares: content hashes, and outputs that are whole or absent.

A safetensors file is written to a temporary name, synced and renamed; an output folder is built
in a sibling work folder `.NAME.partial/` and renamed into place (publish_dir), so a crash leaves
the old output or none, never half of one.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import GdistillError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def work_dir_for(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def prepare_output(out: Path, overwrite: bool, resumable: bool = True) -> Path:
    """Check that `out` may be written and return its work folder: kept if it exists, for a
    training run to resume; emptied with --overwrite, and always for outputs that are not
    resumed (reports, exports, edits: a leftover is half-written)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise GdistillError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = work_dir_for(out)
        if overwrite or not resumable:  # start again: an interrupted run's checkpoint is not resumed
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(exist_ok=True)
    except OSError as e:
        raise GdistillError(f"cannot write to {out.parent}: {e.strerror}; choose a writable --out") from None
    return work


def check_writable(path: Path) -> None:
    """Fail before any work when `path` (a file or folder to write later) could not be written: a
    probe file is created and removed in its nearest existing folder, which leaves nothing behind
    (the folders on the way are made only when the output is written)."""
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    probe = folder / f".gdistill-probe-{os.getpid()}"
    try:
        if not folder.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise GdistillError(f"cannot write {path}: {folder} does not accept files ({e.strerror}); "
                            "choose a writable --out") from None


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_safetensors_atomic(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file whole or not at all: to a temporary name, synced, then renamed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    fsync_file(tmp)
    os.chmod(tmp, 0o644)  # safetensors writes 0600; runs and the classifier are shared and shipped
    os.replace(tmp, path)


def publish_dir(work: Path, out: Path) -> Path:
    """Rename a finished work folder to `out`, replacing an old `out` without ever leaving neither."""
    if out.exists():  # --overwrite: move the old one aside first
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old)
    else:
        work.rename(out)
    return out
