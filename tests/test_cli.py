"""The command line end to end on toy2d (seconds), and its one-line errors."""
import numpy as np
import pytest
import yaml

from gdistill.run_folder import read_manifest

FAST = ["--batch-size", "64", "--log-every", "10"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """teach -> match -> halve (2 rounds) on toy2d with a handful of steps, through the CLI."""
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("cli")
    assert run_cli("teach", "--dataset", "toy2d", "--out", root / "teacher", "--train-steps", 60, *FAST)[0] == 0
    assert run_cli("match", "--teacher", root / "teacher", "--out", root / "s1", "--train-steps", 30, *FAST)[0] == 0
    assert run_cli("halve", "--from", root / "s1", "--rounds", 2, "--start-steps", 16, "--out", root / "pd",
                   "--train-steps", 20, *FAST)[0] == 0
    return root


def test_pipeline_writes_runs_with_lineage(pipeline, cli):
    teacher, s1 = read_manifest(pipeline / "teacher"), read_manifest(pipeline / "s1")
    r1, r2 = read_manifest(pipeline / "pd" / "round-1"), read_manifest(pipeline / "pd" / "round-2")
    assert (teacher["kind"], s1["kind"], r1["kind"]) == ("teacher", "stage1", "round")
    assert (r1["steps"], r2["steps"], r2["round"], r2["teacher_steps"]) == (8, 4, 2, 8)
    assert s1["w_range"] == [0.0, 4.0] and s1["model"]["w_conditioned"]
    assert s1["parent"]["sha256"] == teacher["files"]["model.safetensors"]
    assert r2["parent"]["sha256"] == r1["files"]["model.safetensors"]
    assert [e["kind"] for e in r2["lineage"]] == ["teacher", "stage1", "round"]
    assert s1["settings"]["train_steps"] == 30 and s1["settings"]["batch_size"] == 64
    log = (pipeline / "s1" / "log.jsonl").read_text().splitlines()
    assert len(log) == 3 and {"step", "loss", "steps_per_s", "peak_memory_gib"} <= set(yaml.safe_load(log[0]))
    # on a CPU: the process's peak resident set, torch included (well over 0.1 GiB, under the machine's memory)
    assert all(0.1 < yaml.safe_load(line)["peak_memory_gib"] < 1024 for line in log)
    code, out, _ = cli("info", pipeline / "pd" / "round-2")
    assert code == 0 and "teacher -> stage1 -> round r1 (8 steps) -> round r2 (4 steps)" in out


def test_sample_npz_and_png(pipeline, cli, tmp_path):
    code, _, err = cli("sample", "--from", pipeline / "pd" / "round-2", "--n", 10, "--w", 2, "--out", tmp_path / "s.npz")
    assert code == 0 and "4 network calls per sample" in err and "outside the trained range" not in err
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["samples"].shape == (10, 2) and arrays["labels"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    code, _, err = cli("sample", "--from", pipeline / "teacher", "--steps", 8, "--n", 8, "--label", 3,
                       "--sampler", "stochastic", "--out", tmp_path / "t.png")
    assert code == 0 and "16 network calls per sample" in err and (tmp_path / "t.png").stat().st_size > 0
    again = tmp_path / "again.npz"
    cli("sample", "--from", pipeline / "pd" / "round-2", "--n", 10, "--w", 2, "--out", again)
    assert np.array_equal(np.load(again)["samples"], arrays["samples"])  # same seed, same samples
    code, _, err = cli("sample", "--from", pipeline / "pd" / "round-2", "--n", 4, "--w", 6, "--out", tmp_path / "far.npz")
    assert code == 0 and "warning: w=6.0 is outside the trained range [0.0, 4.0]" in err


def test_halve_continues_from_a_round_and_skips_finished_rounds(pipeline, cli):
    code, _, err = cli("halve", "--from", pipeline / "pd" / "round-1", "--rounds", 1, "--out", pipeline / "pd",
                       "--train-steps", 20, *FAST)
    assert code == 0 and "already complete" in err + _  # round-2 exists with the same parent
    code, _, _ = cli("halve", "--from", pipeline / "pd" / "round-2", "--rounds", 1, "--out", pipeline / "pd",
                     "--train-steps", 10, *FAST)
    r3 = read_manifest(pipeline / "pd" / "round-3")
    assert code == 0 and (r3["round"], r3["steps"]) == (3, 2)


def test_config_file_with_command_line_winning(pipeline, cli, tmp_path):
    cfg = tmp_path / "match.yaml"
    cfg.write_text("train-steps: 7\nbatch_size: 32\nw_max: 2.5\nlog_every: 1\n")
    code, _, err = cli("match", "--teacher", pipeline / "teacher", "--out", tmp_path / "s1", "--config", cfg,
                       "--train-steps", 5)
    assert code == 0, err
    settings = read_manifest(tmp_path / "s1")["settings"]
    assert (settings["train_steps"], settings["batch_size"], settings["w_max"]) == (5, 32, 2.5)


BAD = [
    (["match", "--teacher", "{tmp}/missing", "--out", "{tmp}/o"], "does not exist"),
    (["match", "--teacher", "sd99", "--out", "{tmp}/o"], "does not exist"),
    (["match", "--teacher", "{root}/s1", "--out", "{tmp}/o"], "already w-conditioned"),
    (["match", "--teacher", "{root}/teacher", "--out", "{tmp}/o", "--w-min", "3", "--w-max", "1"], "--w-min"),
    (["match", "--teacher", "{root}/teacher", "--out", "{tmp}/o", "--train-steps", "0"], "--train-steps"),
    (["match", "--teacher", "{root}/teacher", "--out", "{tmp}/o", "--weighting", "l1"], "--weighting"),
    (["match", "--teacher", "{root}/teacher", "--out", "{root}/s1"], "--overwrite"),
    (["match", "--teacher", "{root}/teacher", "--out", "{tmp}/o", "--config", "{tmp}/none.yaml"], "does not exist"),
    (["match", "--teacher", "{root}/teacher", "--out", "{tmp}/o", "--data", "digits"], "classes"),
    (["halve", "--from", "{root}/teacher", "--out", "{tmp}/o"], "w-conditioned"),
    (["halve", "--from", "{root}/s1", "--out", "{tmp}/o", "--start-steps", "100"], "power of two"),
    (["halve", "--from", "{root}/s1", "--out", "{tmp}/o", "--rounds", "9"], "below 1 step"),
    (["halve", "--from", "{root}/pd", "--out", "{tmp}/o"], "round-1"),
    (["halve", "--from", "{root}/pd/round-1", "--out", "{tmp}/o", "--start-steps", "64"], "contradicts"),
    (["teach", "--dataset", "{tmp}/no-such-folder", "--out", "{tmp}/o"], "does not exist"),
    (["teach", "--dataset", "digits", "--out", "{tmp}/o", "--p-uncond", "0"], "--p-uncond"),
    (["teach", "--dataset", "digits", "--out", "{tmp}/o", "--parameterization", "score"], "--parameterization"),
    (["sample", "--from", "{root}/teacher", "--out", "{tmp}/o.jpg"], ".png"),
    (["sample", "--from", "{root}/teacher", "--out", "{tmp}/o.png", "--label", "7"], "--label 7"),
    (["sample", "--from", "{root}/teacher", "--out", "{tmp}/o.png", "--n", "0"], "--n"),
    (["sample", "--from", "{root}/teacher", "--out", "{tmp}/o.png", "--w", "-1"], "--w"),
    (["sample", "--from", "{root}/teacher", "--out", "{tmp}/o.png", "--sampler", "ancestral"], "sampler"),
    (["sample", "--from", "{root}/teacher", "--out", "{tmp}/o.png", "--n", "many"], "--n"),
    (["info", "{tmp}"], "manifest.yaml is missing"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_bad_input_one_line_error_exit_2_nothing_written(pipeline, cli, tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("lr: [1, 2]\n")
    args = [a.format(tmp=tmp_path, root=pipeline) for a in args]
    before = {p for p in tmp_path.rglob("*")}
    code, out, err = cli(*args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert {p for p in tmp_path.rglob("*")} == before  # nothing half-written


def test_unknown_config_option_is_named(pipeline, cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 0.1\n")
    code, _, err = cli("match", "--teacher", pipeline / "teacher", "--out", tmp_path / "o", "--config", cfg)
    assert code == 2 and "unknown option(s) learning_rate" in err and not (tmp_path / "o").exists()


def test_help_imports_neither_torch_nor_diffusers():
    """`gdistill --help` and a command's --help answer without importing torch or diffusers: 0.7 s
    on the 2-core development machine, where importing them took about 5 s."""
    import subprocess
    import sys

    check = ("import sys; from gdistill.cli import run\n"
             "try:\n    run()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
             "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    for args in ([], ["sample"]):
        done = subprocess.run([sys.executable, "-c", check, *args, "--help"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "Usage" in done.stdout and done.stdout.strip().endswith("[]"), done.stdout[-300:]
