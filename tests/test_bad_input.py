"""One table of wrong invocations across every subcommand: each exits with status 2, prints one line
`error: …` naming the problem, and leaves nothing behind (the folder it could write to is unchanged)."""
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A toy2d Stage-1 run, one halving round (4 steps), another Stage-1 run, a run with damaged weights and one whose
    manifest lacks a field, a folder that is not a run, and config files."""
    root = tmp_path_factory.mktemp("bad-input")
    assert run_cli("match", "--teacher", "toy2d", "--train-steps", 3, "--batch-size", 16, "--out", root / "stage1") == (0,)
    assert run_cli("halve", "--from", root / "stage1", "--rounds", 1, "--start-steps", 8, "--train-steps", 2,
                   "--batch-size", 16, "--out", root / "pd") == (0,)
    assert run_cli("match", "--teacher", "toy2d", "--train-steps", 3, "--batch-size", 16, "--seed", 1,
                   "--out", root / "stage1-other") == (0,)
    assert run_cli("consistency", "--teacher", "toy2d", "--train-steps", 2, "--batch-size", 16, "--solver-steps", 8,
                   "--out", root / "cd") == (0,)
    shutil.copytree(root / "stage1", root / "truncated")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    shutil.copytree(root / "stage1", root / "no-kind")
    manifest = yaml.safe_load((root / "no-kind" / "manifest.yaml").read_text())
    del manifest["kind"]
    (root / "no-kind" / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    (root / "not-a-run").mkdir()
    (root / "unknown.yaml").write_text("learning_rate: 0.1\n")
    (root / "image.png").write_bytes((Path(__file__).parent.parent / "docs" / "images" / "edit-inputs.png").read_bytes())
    return root


CASES = [
    # teach
    (["teach", "--dataset", "{r}/nowhere", "--out", "{o}/t"], "does not exist"),
    (["teach", "--train-steps", "0", "--out", "{o}/t"], "--train-steps must be at least 1"),
    (["teach", "--parameterization", "z", "--out", "{o}/t"], "--parameterization must be one of"),
    (["teach", "--p-uncond", "1.5", "--out", "{o}/t"], "--p-uncond must be in (0, 1)"),
    (["teach", "--config", "{r}/missing.yaml", "--out", "{o}/t"], "does not exist"),
    (["teach", "--config", "{r}/unknown.yaml", "--out", "{o}/t"], "unknown option(s) learning_rate"),
    (["teach", "--train-steps", "ten", "--out", "{o}/t"], "--train-steps"),
    (["teach", "--dataset", "fashion-mnist:{r}/not-a-run", "--out", "{o}/t"], "apt-get install dataset-fashion-mnist"),
    (["teach", "--channels", "30,64", "--out", "{o}/t"], "--channels must be comma-separated widths"),
    (["teach", "--dataset", "toy2d", "--channels", "32,64", "--out", "{o}/t"], "the toy2d model is an MLP"),
    (["teach", "--channels", "32,64,64,64,64", "--out", "{o}/t"], "does not divide evenly"),
    # match
    (["match", "--teacher", "{r}/nowhere", "--out", "{o}/m"], "does not exist"),
    (["match", "--teacher", "{r}/pd/round-1", "--out", "{o}/m"], "already w-conditioned"),
    (["match", "--teacher", "toy2d", "--w-min", "3", "--w-max", "1", "--out", "{o}/m"], "--w-min <= --w-max"),
    (["match", "--teacher", "toy2d", "--w-max", "inf", "--out", "{o}/m"], "both finite"),
    (["match", "--teacher", "toy2d", "--w-min", "nan", "--out", "{o}/m"], "both finite"),
    (["match", "--teacher", "toy2d", "--w-end-fraction", "1", "--out", "{o}/m"], "--w-end-fraction must be in [0, 1)"),
    (["match", "--teacher", "toy2d", "--w-loss-power", "-1", "--out", "{o}/m"], "--w-loss-power must be a finite number >= 0"),
    (["match", "--teacher", "toy2d", "--warmup-steps", "-5", "--out", "{o}/m"], "--warmup-steps must be >= 0"),
    (["match", "--teacher", "toy2d", "--lora-rank", "4", "--out", "{o}/m"], "LoRA is for SD-family"),
    (["match", "--teacher", "toy2d", "--mixed-precision", "fp8", "--out", "{o}/m"], "--mixed-precision must be one of"),
    (["match", "--teacher", "toy2d", "--batch-size", "0", "--out", "{o}/m"], "--batch-size must be at least 1"),
    (["match", "--teacher", "{r}/truncated", "--out", "{o}/m"], "sha256"),
    (["match", "--teacher", "{r}/no-kind", "--out", "{o}/m"], "lacks kind"),
    (["match", "--teacher", "{r}/not-a-run", "--out", "{o}/m"], "is not a gdistill run"),
    (["match", "--teacher", "toy2d", "--gradient-accumulation", "3", "--batch-size", "64", "--out", "{o}/m"], "must divide"),
    (["match", "--teacher", "toy2d", "--resolution", "512", "--out", "{o}/m"], "for SD-family teachers"),
    (["match", "--teacher", "toy2d", "--cache", "{o}/cache", "--out", "{o}/m"], "--cache holds"),
    (["match", "--teacher", "toy2d", "--out", "/proc/gdistill-cannot/m"], "cannot write"),
    (["match", "--teacher", "sd15", "--data", "{r}", "--out", "{o}/m"], "hf download"),
    # halve
    (["halve", "--out", "{o}/h"], "--from is required"),
    (["halve", "--from", "toy2d", "--out", "{o}/h"], "without a w-input"),
    (["halve", "--from", "{r}/stage1", "--start-steps", "100", "--out", "{o}/h"], "power of two"),
    (["halve", "--from", "{r}/stage1", "--start-steps", "8", "--rounds", "5", "--out", "{o}/h"], "below 1 step"),
    (["halve", "--from", "{r}/pd/round-1", "--start-steps", "64", "--out", "{o}/h"], "contradicts"),
    (["halve", "--from", "{r}/pd", "--out", "{o}/h"], "holds rounds"),
    (["halve", "--from", "{r}/stage1", "--start-steps", "8", "--rounds", "1", "--resume", "never", "--out", "{r}/pd"],
     "already complete and --resume never"),
    (["halve", "--from", "{r}/stage1-other", "--start-steps", "8", "--rounds", "1", "--out", "{r}/pd"],
     "distilled from another teacher"),
    (["halve", "--from", "{r}/stage1", "--resume", "maybe", "--out", "{o}/h"], "--resume must be auto or never"),
    # consistency
    (["consistency", "--teacher", "toy2d", "--loss", "l1", "--out", "{o}/c"], "--loss must be one of"),
    (["consistency", "--teacher", "toy2d", "--solver-steps", "0", "--out", "{o}/c"], "--solver-steps must be at least 1"),
    (["consistency", "--teacher", "toy2d", "--ema-decay", "0", "--out", "{o}/c"], "the EMA is its target network"),
    (["consistency", "--teacher", "toy2d", "--huber-c", "-1", "--out", "{o}/c"], "--huber-c must be positive"),
    (["consistency", "--teacher", "{r}/pd/round-1", "--out", "{o}/c"], "starts from a guided teacher or a Stage-1 run"),
    (["consistency", "--teacher", "{r}/stage1", "--w-max", "8", "--out", "{o}/c"], "its w range and negative prompt are fixed"),
    # dmd
    (["dmd", "--teacher", "toy2d", "--generator-steps", "0", "--out", "{o}/d"], "--generator-steps must be at least 1"),
    (["dmd", "--teacher", "toy2d", "--fake-updates", "0", "--out", "{o}/d"], "--fake-updates must be at least 1"),
    (["dmd", "--teacher", "toy2d", "--train-steps", "5", "--out", "{o}/d"], "leaves no generator update"),
    (["dmd", "--teacher", "toy2d", "--regression-weight", "-1", "--out", "{o}/d"], "--regression-weight must be a finite number >= 0"),
    (["dmd", "--teacher", "toy2d", "--regression-weight", "1", "--generator-steps", "2", "--out", "{o}/d"], "is for 1-step generators"),
    (["dmd", "--teacher", "toy2d", "--pairs-from", "{o}/d0", "--out", "{o}/d"], "neither is on"),
    (["dmd", "--teacher", "toy2d", "--gan-real", "teacher", "--out", "{o}/d"], "there is no head: give --gan-weight > 0 too"),
    (["dmd", "--teacher", "toy2d", "--gan-real", "generated", "--gan-weight", "1", "--out", "{o}/d"], "--gan-real must be one of data, teacher"),
    (["dmd", "--teacher", "{r}/cd", "--out", "{o}/d"], "starts from a guided teacher or a Stage-1 run"),
    (["dmd", "--teacher", "{r}/stage1", "--w-min", "1", "--out", "{o}/d"], "its w range and negative prompt are fixed"),
    (["dmd", "--teacher", "toy2d", "--resolution", "512", "--out", "{o}/d"], "for SD-family teachers"),
    (["dmd", "--teacher", "digits", "--init", "{r}/pd/round-1", "--out", "{o}/d"], "was distilled from toy2d, not from digits"),
    (["dmd", "--teacher", "toy2d", "--init", "toy2d", "--out", "{o}/d"], "has no w-input (a teacher)"),
    (["dmd", "--teacher", "toy2d", "--init", "{r}/pd/round-1", "--w-max", "8", "--out", "{o}/d"],
     "was trained for w in [0.0, 4.0], this run is for [0.0, 8.0]: pass --w-min 0.0 --w-max 4.0"),
    (["dmd", "--teacher", "toy2d", "--init", "{r}/nowhere", "--out", "{o}/d"], "does not exist"),
    # sample
    (["sample", "--from", "{r}/pd/round-1", "--steps", "3", "--out", "{o}/s.png"], "distilled for 4 steps, not 3"),
    (["sample", "--from", "{r}/cd", "--steps", "9", "--out", "{o}/s.png"], "samples in 1 to 8 steps"),
    (["sample", "--from", "{r}/pd/round-1", "--sampler", "consistency", "--out", "{o}/s.png"], "is for consistency runs"),
    (["sample", "--from", "digits", "--out", "{o}/s.jpg"], "must end in .png"),
    (["sample", "--from", "digits", "--label", "12", "--out", "{o}/s.png"], "out of range"),
    (["sample", "--from", "digits", "--n", "0", "--out", "{o}/s.png"], "--n must be at least 1"),
    (["sample", "--from", "digits", "--w", "-1", "--out", "{o}/s.png"], "--w must be a finite number >= 0"),
    (["sample", "--from", "digits", "--w", "nan", "--out", "{o}/s.png"], "got nan"),
    (["sample", "--from", "digits", "--w", "inf", "--out", "{o}/s.png"], "got inf"),
    (["sample", "--from", "digits", "--out", "/proc/gdistill-cannot.png"], "cannot write /proc/gdistill-cannot.png"),
    (["sample", "--from", "digits", "--sampler", "magic", "--n", "2", "--out", "{o}/s.png"], "unknown sampler"),
    (["sample", "--from", "digits", "--prompt", "a cat", "--out", "{o}/s.png"], "not --prompt"),
    # eval
    (["eval", "--from", "digits", "--w", "a,b", "--out", "{o}/e"], "not a comma-separated list"),
    (["eval", "--from", "digits", "--sampler", "magic", "--out", "{o}/e"], "--sampler"),
    (["eval", "--from", "digits", "--fid", "--n", "10", "--out", "{o}/e"], "too small"),
    (["eval", "--from", "digits", "--ref", "{r}/nowhere", "--out", "{o}/e"], "nowhere"),
    (["eval", "--from", "digits", "--w", "0,nan", "--out", "{o}/e"], "got nan"),
    (["eval", "--from", "digits", "--to-teacher", "-1", "--out", "{o}/e"], "--to-teacher must be"),
    (["eval", "--from", "digits", "--fid", "--ref", "{r}/not-a-run", "--inception-weights", "{r}/unknown.yaml",
      "--n", "3000", "--out", "{o}/e"], "holds no images"),
    # edit, inpaint, export, info
    (["edit", "--from", "digits", "--image", "{r}/missing.png", "--label", "1", "--out", "{o}/x.png"], "does not exist"),
    (["edit", "--from", "digits", "--image", "{r}/image.png", "--label", "1", "--strength", "2", "--out", "{o}/x.png"], "--strength must be in [0, 1]"),
    (["inpaint", "--from", "digits", "--image", "{r}/image.png", "--mask", "{r}/missing.png", "--label", "1", "--out", "{o}/x.png"], "--mask"),
    (["export", "digits", "--out", "{o}/x"], "export writes diffusers"),
    (["edit", "--from", "digits", "--image", "{r}/image.png", "--label", "1", "--w", "inf", "--out", "{o}/x.png"], "got inf"),
    (["edit", "--from", "digits", "--image", "{r}/image.png", "--label", "1", "--out", "/proc/gdistill-cannot.png"], "cannot write"),
    (["info", "{r}/nowhere"], "does not exist"),
    (["info", "toy2d", "--w-eff"], "is a teacher run"),
    (["info", "{r}/stage1", "--w", "1"], "--w goes with --w-eff"),
    (["info", "{r}/stage1", "--w-eff", "--w", "nan"], "got nan"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input(runs, tmp_path, cli, args, message):
    before = sorted(p.name for p in runs.rglob("*"))
    code, out, err = cli(*[a.format(r=runs, o=tmp_path) for a in args])
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())  # nothing written, not even a partial folder
    assert sorted(p.name for p in runs.rglob("*")) == before
