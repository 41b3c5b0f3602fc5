"""N processes train as one: under torchrun with 2 CPU processes (gloo), every rank ends with the same
weights, and those equal a 1-process run with the same global batch (up to float tolerance: the
gradient all-reduce sums in another order); gradient accumulation likewise. Through the CLI, a
2-process `gdistill match` on toy2d writes one run equal to the 1-process run's. Under FSDP2, launched
with the shipped examples/accelerate/fsdp_8gpus.yaml on 2 CPU processes (the worker lifts accelerate's
GPU-only gate, see tests/distributed_worker.py): the same weights as 1 process, a crashed run resumes
bit-identical, its checkpoint resumes in a single process, consistency distillation (whose target
network is the EMA) and DMD with its GAN head train as in one process, and the SD UNet (whole, or with a LoRA
adapter) is sharded block by block."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gdistill.run_folder import load_model

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_launcher(command: list, expect_failure: bool = False):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", *map(str, command)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert (done.returncode != 0) == expect_failure, done.stderr[-3000:]
    return done


def launch(nproc: int, *args):
    """`python -m torch.distributed.run --nproc_per_node N ...`: the launcher torch ships."""
    return run_launcher(["torch.distributed.run", "--nproc_per_node", nproc, "--master_addr", "127.0.0.1",
                         "--master_port", free_port(), *args])


def accelerate_launch(config: str, nproc: int, *args, expect_failure: bool = False):
    """`accelerate launch --config_file CONFIG --num_processes N ...`."""
    return run_launcher(["accelerate.commands.launch", "--config_file", ROOT / config, "--num_processes", nproc,
                         "--main_process_port", free_port(), *args], expect_failure)


def weights(path):
    return load_file(str(path))


def assert_close(a: dict, b: dict, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), (k, (a[k] - b[k]).abs().max())


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path):
    launch(2, "tests/distributed_worker.py", tmp_path / "two")
    launch(1, "tests/distributed_worker.py", tmp_path / "one")
    launch(2, "tests/distributed_worker.py", tmp_path / "two-accumulated", "--accumulation", 2)
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


@pytest.mark.slow
def test_two_process_dmd_trains_its_two_networks_in_turns_as_one_process(tmp_path):
    """DMD's steps reach one network each (generator or fake score): DDP must expect unused weights.
    With the GAN head the generator's turn runs the critic frozen (its weights are no part of that
    step's graph)."""
    args = ["dmd", "--teacher", "toy2d", "--train-steps", 12, "--fake-updates", 2, "--batch-size", 64, "--log-every", 6,
            "--gan-weight", 0.1]
    launch(2, "-m", "gdistill", *args, "--out", tmp_path / "two")
    launch(1, "-m", "gdistill", *args, "--out", tmp_path / "one")
    two, manifest, _ = load_model(tmp_path / "two")
    one, _, _ = load_model(tmp_path / "one")
    assert manifest["kind"] == "dmd"
    assert_close(two.state_dict(), one.state_dict())


FSDP = "examples/accelerate/fsdp_8gpus.yaml"


@pytest.mark.slow
def test_fsdp_trains_as_one_process_and_resumes(tmp_path):
    worker = "tests/distributed_worker.py"
    accelerate_launch(FSDP, 2, worker, tmp_path / "fsdp", "--fsdp", "--checkpoint-every", 10)
    launch(1, worker, tmp_path / "one")
    sharded, single = weights(tmp_path / "fsdp" / "rank0.safetensors"), weights(tmp_path / "one" / "rank0.safetensors")
    assert all(torch.equal(sharded[k], v) for k, v in weights(tmp_path / "fsdp" / "rank1.safetensors").items())
    assert_close(sharded, single)
    assert_close(weights(tmp_path / "fsdp" / "rank0-ema.safetensors"), weights(tmp_path / "one" / "rank0-ema.safetensors"))
    # every rank stops at step 15 (a checkpoint was written at step 10); the same launch resumes
    crashed = accelerate_launch(FSDP, 2, worker, tmp_path / "crash", "--fsdp", "--checkpoint-every", 10,
                                "--stop-after", 15, expect_failure=True)
    assert "stopped after 15 steps" in crashed.stderr
    shutil.copytree(tmp_path / "crash", tmp_path / "crash-single")
    accelerate_launch(FSDP, 2, worker, tmp_path / "crash", "--fsdp", "--checkpoint-every", 10)
    for name in ("rank0.safetensors", "rank0-ema.safetensors"):
        resumed, whole = weights(tmp_path / "crash" / name), weights(tmp_path / "fsdp" / name)
        assert all(torch.equal(resumed[k], whole[k]) for k in whole), name
    # the checkpoint holds whole tensors: one process without FSDP resumes it
    launch(1, worker, tmp_path / "crash-single", "--checkpoint-every", 10)
    assert_close(weights(tmp_path / "crash-single" / "rank0.safetensors"), sharded)


@pytest.mark.slow
def test_fsdp_consistency_targets_the_averaged_shards(tmp_path):
    """Consistency distillation's target network is the EMA read as a network: under FSDP the
    averaged shards go in for the target and the trained ones come back for the student's step."""
    worker = "tests/distributed_worker.py"
    accelerate_launch(FSDP, 2, worker, tmp_path / "fsdp", "--fsdp", "--model", "toy-consistency", "--steps", 10)
    launch(1, worker, tmp_path / "one", "--model", "toy-consistency", "--steps", 10)
    for name in ("rank0.safetensors", "rank0-ema.safetensors"):
        assert_close(weights(tmp_path / "fsdp" / name), weights(tmp_path / "one" / name))
    # the run trained, and the EMA target lags the weights (a target equal to the student would not)
    trained, averaged = weights(tmp_path / "one" / "rank0.safetensors"), weights(tmp_path / "one" / "rank0-ema.safetensors")
    assert max((trained[k] - averaged[k]).abs().max() for k in trained) > 1e-4


@pytest.mark.slow
def test_fsdp_dmd_with_the_gan_head_trains_as_one_process(tmp_path):
    """DMD's generator and fake score sharded as one module; the generator's turn reads the frozen
    critic's logit (its requires_grad off and back on) through FSDP's gathers."""
    worker = "tests/distributed_worker.py"
    accelerate_launch(FSDP, 2, worker, tmp_path / "fsdp", "--fsdp", "--model", "toy-dmd", "--steps", 12)
    launch(1, worker, tmp_path / "one", "--model", "toy-dmd", "--steps", 12)
    for name in ("rank0.safetensors", "rank0-ema.safetensors"):
        assert_close(weights(tmp_path / "fsdp" / name), weights(tmp_path / "one" / name))
    trained = weights(tmp_path / "one" / "rank0.safetensors")
    assert any(k.startswith("gan_head.") for k in trained)


@pytest.mark.slow
def test_fsdp_shards_the_sd_unet_block_by_block(tmp_path):
    from tests.sd_tiny import build_tiny_sd

    pipeline = build_tiny_sd(tmp_path / "sd")
    worker, model = "tests/distributed_worker.py", f"sd-tiny:{pipeline}"
    accelerate_launch(FSDP, 2, worker, tmp_path / "fsdp", "--fsdp", "--model", model, "--steps", 4)
    launch(1, worker, tmp_path / "one", "--model", model, "--steps", 4)
    # TRANSFORMER_BASED_WRAP found the UNet's blocks (_no_split_modules): a shard group per block
    assert int((tmp_path / "fsdp" / "fsdp_groups.txt").read_text()) > 10
    sharded, single = weights(tmp_path / "fsdp" / "rank0.safetensors"), weights(tmp_path / "one" / "rank0.safetensors")
    assert_close(sharded, single, atol=1e-4)
    assert max((sharded[k] - v).abs().max() for k, v in weights(tmp_path / "fsdp" / "rank1.safetensors").items()) == 0
    # a LoRA adapter: frozen and trained weights share the shard groups
    accelerate_launch(FSDP, 2, worker, tmp_path / "fsdp-lora", "--fsdp", "--model", model, "--lora", 4, "--steps", 4)
    launch(1, worker, tmp_path / "one-lora", "--model", model, "--lora", 4, "--steps", 4)
    sharded, single = weights(tmp_path / "fsdp-lora" / "rank0.safetensors"), weights(tmp_path / "one-lora" / "rank0.safetensors")
    assert_close(sharded, single, atol=1e-4)
    assert max(v.abs().max() for k, v in sharded.items() if "lora_B" in k) > 1e-3  # the adapter trained (B starts at 0)
