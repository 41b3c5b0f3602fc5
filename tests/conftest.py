import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


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
