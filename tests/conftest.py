import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest-xdist runs the suite in parallel processes (pyproject's addopts: -n auto --dist loadfile);
# each takes its share of the cores, so that they do not fight over them (one thread each on 2 cores).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most 4 (each holds torch and a tiny SD pipeline in memory).
    The suite's time is spent in single-threaded small-model training and in subprocess launches,
    so two workers on 2 cores finish it in well under the time one process takes."""
    return max(1, min(4, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    """The files that hold end-to-end training tests (marked slow) first: under xdist each file is one
    unit of work, handed out in this order (--no-loadscope-reorder), so the long ones start at once
    and the many short files fill in around them instead of one long file running alone at the end."""
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in heavy)  # stable: the order within each group stays


def run_cli(*args):
    """Run the gdistill console entry in-process; returns its exit code (0 when it returns)."""
    from gdistill.cli import run

    old = sys.argv
    sys.argv = ["gdistill", *map(str, args)]
    try:
        run()
    except SystemExit as e:
        return (e.code if isinstance(e.code, int) else 1,)
    finally:
        sys.argv = old
    return (0,)


@pytest.fixture
def cli(capsys):
    """run_cli plus what it printed: (exit code, stdout, stderr)."""

    def invoke(*args):
        capsys.readouterr()
        (code,) = run_cli(*args)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
