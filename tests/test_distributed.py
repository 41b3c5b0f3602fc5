"""N processes train as one: under torchrun with 2 CPU processes (gloo), every rank ends with the same
weights, and those equal a 1-process run with the same global batch (up to float tolerance: the
gradient all-reduce sums in another order); gradient accumulation likewise. Through the CLI, a
2-process `gdistill match` on toy2d writes one run equal to the 1-process run's."""
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gdistill.run import load_model

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, *args, cwd=ROOT):
    """`python -m torch.distributed.run --nproc_per_node N ...`: the launcher torch ships."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *map(str, args)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights(path):
    return load_file(str(path))


def assert_close(a: dict, b: dict, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), (k, (a[k] - b[k]).abs().max())


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path):
    launch(2, "tests/distributed_worker.py", tmp_path / "two", 1)
    launch(1, "tests/distributed_worker.py", tmp_path / "one", 1)
    launch(2, "tests/distributed_worker.py", tmp_path / "two-accumulated", 2)
    rank0, rank1 = weights(tmp_path / "two" / "rank0.safetensors"), weights(tmp_path / "two" / "rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # DDP keeps the replicas identical
    single = weights(tmp_path / "one" / "rank0.safetensors")
    assert_close(rank0, single)
    assert any(not torch.equal(rank0[k], torch.zeros_like(rank0[k])) for k in rank0)
    # with accumulation each micro-batch is its own global draw (another random stream): check it trains
    accumulated = weights(tmp_path / "two-accumulated" / "rank0.safetensors")
    assert all(torch.isfinite(v).all() for v in accumulated.values())
    log = (tmp_path / "two" / "work" / "log.jsonl").read_text().splitlines()
    assert len(log) == 4  # one writer: steps 5, 10, 15, 20


@pytest.mark.slow
def test_two_process_match_writes_the_one_process_run(tmp_path):
    args = ["match", "--teacher", "toy2d", "--train-steps", 20, "--batch-size", 64, "--log-every", 10]
    launch(2, "-m", "gdistill", *args, "--out", tmp_path / "two")
    launch(1, "-m", "gdistill", *args, "--out", tmp_path / "one")
    two, manifest, _ = load_model(tmp_path / "two")
    one, _, _ = load_model(tmp_path / "one")
    assert_close(two.state_dict(), one.state_dict())
    assert len((tmp_path / "two" / "log.jsonl").read_text().splitlines()) == 2
    assert not list(tmp_path.glob(".*.partial"))
