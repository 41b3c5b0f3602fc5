"""Killed with SIGKILL mid-training, the same command resumes and ends bit-identical to an
uninterrupted run (CPU, fixed seed): Stage 1 killed midway, and halve killed in its third round."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gdistill.run_folder import load_model

ROOT = Path(__file__).resolve().parent.parent


def gdistill(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "gdistill", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(process, ready, timeout=120):
    """SIGKILL the process as soon as ready() holds (a checkpoint is on disk)."""
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, f"finished before it could be killed: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def checkpoint_step(work: Path) -> int:
    try:
        return torch.load(work / "resume" / "state.pt", weights_only=False)["step"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def finish(*args, cwd):
    process = gdistill(*args, cwd=cwd)
    assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]


def assert_same_weights(a: Path, b: Path):
    ma, mb = load_model(a)[0], load_model(b)[0]
    for (k, x), y in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(x, y), k


@pytest.mark.slow
def test_match_killed_midway_resumes_bit_identical(tmp_path):
    args = ["match", "--teacher", "toy2d", "--train-steps", 600, "--batch-size", 64, "--checkpoint-every", 100]
    finish(*args, "--out", "whole", cwd=tmp_path)
    process = gdistill(*args, "--out", "killed", cwd=tmp_path)
    kill_when(process, lambda: checkpoint_step(tmp_path / ".killed.partial") >= 200)
    assert not (tmp_path / "killed").exists()
    step = checkpoint_step(tmp_path / ".killed.partial")
    refused = gdistill(*args, "--out", "killed", "--resume", "never", cwd=tmp_path)
    assert refused.wait(timeout=120) == 2 and f"checkpoint at step {step} and --resume never" in refused.stderr.read()
    assert checkpoint_step(tmp_path / ".killed.partial") == step  # refusing touched nothing
    info = subprocess.run([sys.executable, "-m", "gdistill", "info", "killed"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert info.returncode == 0 and f"killed is not finished: its last checkpoint is at step {step} of 600" in info.stdout
    finish(*args, "--out", "killed", "--resume", "auto", cwd=tmp_path)
    assert_same_weights(tmp_path / "whole", tmp_path / "killed")


@pytest.mark.slow
def test_halve_killed_in_its_third_round_resumes_bit_identical(tmp_path):
    finish("match", "--teacher", "toy2d", "--train-steps", 50, "--batch-size", 64, "--out", "stage1", cwd=tmp_path)
    args = ["halve", "--from", "stage1", "--rounds", 3, "--start-steps", 16, "--train-steps", 300,
            "--batch-size", 64, "--checkpoint-every", 100]
    finish(*args, "--out", "whole", cwd=tmp_path)
    process = gdistill(*args, "--out", "killed", cwd=tmp_path)
    kill_when(process, lambda: checkpoint_step(tmp_path / "killed" / ".round-3.partial") >= 100)
    assert (tmp_path / "killed" / "round-2").is_dir() and not (tmp_path / "killed" / "round-3").exists()
    finish(*args, "--out", "killed", cwd=tmp_path)
    for k in (1, 2, 3):
        assert_same_weights(tmp_path / "whole" / f"round-{k}", tmp_path / "killed" / f"round-{k}")
