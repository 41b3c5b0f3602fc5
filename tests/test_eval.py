"""gdistill eval: metric formulas, the reference feature cache, sweeps through the CLI, CLIP score,
bad input, and (where torch-fidelity imports) Inception metrics."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gdistill.data import digits
from gdistill.errors import GdistillError
from gdistill.metrics import frechet_distance_of, precision_recall
from gdistill.metrics.digits import DigitsClassifier
from gdistill.metrics.reference import FeatureCache, load_reference
from gdistill.metrics.scores import inception_score, kernel_distance
from gdistill.run_folder import WEIGHTS, read_manifest

TINY = ["--batch-size", "32", "--log-every", "2"]


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    """Stage 1 and two rounds (8 -> 4 -> 2 steps) from the shipped digits teacher, a few steps each."""
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("eval")
    assert run_cli("match", "--teacher", "digits", "--out", root / "s1", "--train-steps", 6, *TINY)[0] == 0
    assert run_cli("halve", "--from", root / "s1", "--rounds", 2, "--start-steps", 8, "--out", root / "pd",
                   "--train-steps", 4, *TINY)[0] == 0
    return root


def write_digit_folder(folder, per_class=8, classes=(0, 1, 2)):
    real = digits()
    for k in classes:
        (folder / f"c{k}").mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(real.labels.numpy() == k)[:per_class]:
            Image.fromarray(((real.x[i, 0].numpy() + 1) * 127.5).astype(np.uint8)).save(folder / f"c{k}" / f"{i}.png")
    return folder


# --- formulas ---------------------------------------------------------------------------------

def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    features = DigitsClassifier().features(digits().x)
    assert abs(frechet_distance_of(features, features)) < 1e-6
    distances = [frechet_distance_of(features, features + shift) for shift in (0.1, 0.5, 1.0)]
    # a pure mean shift s in every one of the 64 dimensions adds exactly 64 s^2
    assert distances == pytest.approx([64 * 0.01, 64 * 0.25, 64 * 1.0], rel=1e-6)


def test_inception_score_bounds():
    assert inception_score(torch.zeros(100, 10))[0] == pytest.approx(1.0)  # no class information
    confident = torch.full((100, 10), -1e4)
    confident[torch.arange(100), torch.arange(100) % 10] = 0
    assert inception_score(confident)[0] == pytest.approx(10.0, rel=1e-6)  # sure and evenly spread
    one_class = torch.full((100, 10), -1e4)
    one_class[:, 3] = 0
    assert inception_score(one_class)[0] == pytest.approx(1.0)  # sure but all the same class
    with pytest.raises(GdistillError, match="at least 10 samples"):
        inception_score(torch.zeros(5, 10))


def test_kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(600, 8, generator=g), torch.randn(600, 8, generator=g)
    same, spread = kernel_distance(a, b, subset_size=300, subsets=20)
    shifted, _ = kernel_distance(a, b + 0.5, subset_size=300, subsets=20)
    assert abs(same) < 3 * spread + 1e-3 and shifted > 10 * abs(same) and shifted > 0.05


def test_precision_counts_samples_on_the_data_and_recall_the_data_the_samples_cover():
    """Four Gaussian modes: a sample of all four scores high on both; one of two modes keeps its
    precision and loses half its recall (mode dropping); a shifted one loses both; a narrowed one
    (all modes, half the spread: what a mode-seeking loss does within a mode) loses recall only."""
    g = torch.Generator().manual_seed(0)
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])

    def draw(centres, spread=1.0, n=400):
        return centres[torch.randint(0, len(centres), (n,), generator=g)] + spread * torch.randn(n, 2, generator=g)

    real = draw(modes)
    same, dropped, shifted, narrow = (precision_recall(real, fake) for fake in
                                      (draw(modes), draw(modes[:2]), draw(modes) + 5, draw(modes, spread=0.5)))
    assert min(same) > 0.9
    assert dropped[0] > 0.95 and 0.4 < dropped[1] < 0.6
    assert max(shifted) < 0.1
    assert narrow[0] > 0.95 and narrow[1] < same[1] - 0.2


# --- reference sets and the cache --------------------------------------------------------------

def test_reference_features_are_cached_by_content(tmp_path):
    folder = write_digit_folder(tmp_path / "ref")
    network = DigitsClassifier()
    cache = FeatureCache(tmp_path / "cache")
    reference = load_reference(str(folder), (1, 8, 8))
    assert reference.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    first, hit = cache.features(network.id, reference, network.features)
    assert not hit and len(list((tmp_path / "cache").iterdir())) == 1
    again, hit = cache.features(network.id, load_reference(str(folder), (1, 8, 8)), network.features)
    assert hit and torch.equal(first, again)
    # a changed image is a new reference: recomputed, under a new key
    image = folder / "c0" / sorted(os.listdir(folder / "c0"))[0]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    changed = load_reference(str(folder), (1, 8, 8))
    features, hit = cache.features(network.id, changed, network.features)
    assert not hit and not torch.equal(features, first) and len(list((tmp_path / "cache").iterdir())) == 2
    # other network weights: another key as well
    assert not cache.features("other-network", changed, network.features)[1]
    # a damaged cache file is recomputed, not trusted
    path = cache.path(network.id, changed)
    path.write_bytes(b"not safetensors")
    features_again, hit = cache.features(network.id, changed, network.features)
    assert not hit and torch.equal(features_again, features)


# --- the CLI ---------------------------------------------------------------------------------

def test_sweep_has_a_row_per_combination_with_the_right_call_counts(rounds, cli, tmp_path):
    out = tmp_path / "report"
    code, stdout, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd", "--teacher-steps", "2,4", "--w", "0,2",
                            "--sampler", "deterministic,stochastic", "--fid", "--isc", "--kid", "--ed",
                            "--n", 80, "--out", out, "--cache-dir", tmp_path / "cache", "--device", "cpu", "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    # teacher: 2 step counts x 2 w (guided DDIM only); rounds: 2 runs x 2 samplers x their own steps x 2 w
    assert len(rows) == 4 + 8
    combos = {(r["model"], r["sampler"], r["steps"], r["w"]) for r in rows}
    assert len(combos) == len(rows)
    calls = {(r["model"], r["steps"]): r["calls_per_image"] for r in rows}
    assert calls == {("teacher", 2): 4, ("teacher", 4): 8, ("round-1", 4): 4, ("round-2", 2): 2}
    for r in rows:
        assert r["n"] == 80 and r["seed"] == 0 and r["seconds_per_image"] > 0
        assert r["digits_fd"] > 0 and 1 <= r["digits_is"] <= 10 and 0 <= r["class_accuracy"] <= 1
        assert np.isfinite(r["digits_kid"]) and np.isfinite(r["class_ed"])
    # the shipped teacher at 4 guided steps draws the asked-for digit
    assert min(r["class_accuracy"] for r in rows if r["model"] == "teacher" and r["steps"] == 4) > 0.8
    files = {p.name for p in out.iterdir()}
    assert {"report.csv", "report.json", "report.md", "fd_vs_w.png", "fd_is_tradeoff.png", "fd_vs_calls.png",
            "grids"} <= files
    grids = {p.name for p in (out / "grids").iterdir()}
    assert len(grids) == len(rows)
    # a round's folder already names its kind: round-1-..., not round-1-round-1-...
    assert {"round-1-deterministic-4steps-w0.png", "round-2-stochastic-2steps-w2.png"} <= grids, sorted(grids)
    assert (out / "report.csv").read_text().count("\n") == len(rows) + 1
    assert json.loads((out / "report.json").read_text())["rows"] == rows
    assert not (tmp_path / ".report.partial").exists()
    # the reference features were computed once and are reused
    assert len(list((tmp_path / "cache").iterdir())) == 1
    code, _, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--w", 1, "--n", 80, "--out", tmp_path / "again",
                       "--cache-dir", tmp_path / "cache", "--device", "cpu")
    assert code == 0 and "features from the cache" in err


def test_same_seed_same_numbers(rounds, cli, tmp_path):
    args = ["--from", rounds / "pd" / "round-2", "--w", 1, "--n", 70, "--fid", "--to-teacher", 0, "--cache-dir", tmp_path / "c",
            "--device", "cpu", "--json"]
    first = json.loads(cli("eval", *args, "--out", tmp_path / "a")[1])
    second = json.loads(cli("eval", *args, "--out", tmp_path / "b")[1])
    assert first[0]["digits_fd"] == second[0]["digits_fd"]
    assert (tmp_path / "a" / "grids").iterdir().__next__().read_bytes() == \
        (tmp_path / "b" / "grids").iterdir().__next__().read_bytes()


def test_every_row_is_also_scored_against_the_teachers_own_samples(rounds, cli, tmp_path):
    """--to-teacher: each distance gets a *_to_teacher twin, against the guided teacher at the same w
    (its steps, another seed). The teacher's own rows show the noise floor, and the teacher at more
    steps is closer to its many-step samples than at fewer."""
    code, stdout, err = cli("eval", "--from", rounds / "pd", "--teacher-steps", "2,16", "--to-teacher", 16, "--w", "1",
                            "--fid", "--kid", "--ed", "--n", 100, "--out", tmp_path / "r", "--cache-dir", tmp_path / "c", "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    for r in rows:
        assert {"digits_fd_to_teacher", "digits_kid_to_teacher", "class_ed_to_teacher"} <= set(r)
        assert r["digits_fd_to_teacher"] >= 0 and np.isfinite(r["class_ed_to_teacher"])
    by_model = {(r["model"], r["steps"]): r for r in rows}
    assert by_model["teacher", 16]["digits_fd_to_teacher"] < by_model["teacher", 2]["digits_fd_to_teacher"]
    # the same reference samples serve every row: the reference columns do not change with it on
    code, stdout_off, err = cli("eval", "--from", rounds / "pd", "--teacher-steps", "2,16", "--to-teacher", 0, "--w", "1",
                                "--fid", "--kid", "--ed", "--n", 100, "--out", tmp_path / "off", "--cache-dir", tmp_path / "c", "--json")
    off = json.loads(stdout_off)
    assert [r["digits_fd"] for r in off] == [r["digits_fd"] for r in rows]
    assert not any(k.endswith("_to_teacher") for k in off[0])
    assert "_to_teacher: the same measure (distance, or precision and recall) against the guided teacher's samples at the same w (16 steps, seed 1)" in (tmp_path / "r" / "report.md").read_text()


def test_toy2d_is_scored_by_energy_distance_to_exact_samples(cli, tmp_path):
    code, stdout, err = cli("eval", "--to-teacher", 0, "--from", "toy2d", "--teacher-steps", "2,64", "--w", 1, "--n", 400,
                            "--out", tmp_path / "r", "--device", "cpu", "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    assert [r["steps"] for r in rows] == [2, 64] and set(rows[0]) >= {"class_ed"}
    assert rows[1]["class_ed"] < rows[0]["class_ed"]  # 64 guided steps are closer than 2
    assert (tmp_path / "r" / "grids").is_dir() and not (tmp_path / "r" / "fd_vs_w.png").exists()


def test_prc_shows_guidance_trading_coverage_for_fidelity_on_toy2d(cli, tmp_path):
    """--prc on toy2d's points: the unguided teacher covers the data (recall near 1), guidance at
    w = 4 concentrates it (recall falls, precision stays); 1 step lands off the data (precision
    near 0). Each gets its to-teacher twin, where the teacher at 64 steps covers its own samples."""
    code, stdout, err = cli("eval", "--from", "toy2d", "--teacher-steps", "1,64", "--to-teacher", 64, "--w", "0,4",
                            "--n", 400, "--prc", "--ed", "--device", "cpu", "--out", tmp_path / "r", "--json")
    assert code == 0, err
    rows = {(r["steps"], r["w"]): r for r in json.loads(stdout)}
    assert set(rows[64, 0.0]) >= {"class_ed", "precision", "recall", "precision_to_teacher", "recall_to_teacher"}
    assert rows[64, 0.0]["recall"] > 0.9 and rows[64, 0.0]["precision"] > 0.8
    assert rows[64, 4.0]["recall"] < 0.5 and rows[64, 4.0]["precision"] > 0.5
    assert rows[1, 0.0]["precision"] < 0.2
    assert rows[64, 0.0]["recall_to_teacher"] > 0.9 and rows[64, 4.0]["recall_to_teacher"] > 0.8


def test_repeats_score_every_row_from_several_seeds_and_report_the_spread(cli, tmp_path):
    """--repeats 3: each row from seeds 0, 2, 4, each against its own teacher reference (1, 3, 5);
    the first repeat is the plain eval's row, and the summary holds the seeds' mean and std."""
    args = ["eval", "--from", "toy2d", "--teacher-steps", 4, "--to-teacher", 16, "--w", 1, "--n", 200,
            "--device", "cpu", "--json"]
    code, stdout, err = cli(*args, "--repeats", 3, "--out", tmp_path / "r")
    assert code == 0, err
    rows = json.loads(stdout)
    assert [r["seed"] for r in rows] == [0, 2, 4]
    eds = [r["class_ed"] for r in rows]
    assert len(set(eds)) == 3
    # a teacher row is never scored against its own noise: its reference always comes from another seed
    assert min(r["class_ed_to_teacher"] for r in rows) > 0
    plain = json.loads(cli(*args, "--out", tmp_path / "plain")[1])
    assert plain[0]["class_ed"] == eds[0] and plain[0]["class_ed_to_teacher"] == rows[0]["class_ed_to_teacher"]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["rows"] == rows and report["settings"]["repeats"] == 3
    [summary] = report["summary"]
    assert summary["repeats"] == 3 and "seed" not in summary
    assert summary["class_ed"] == pytest.approx(np.mean(eds))
    assert summary["class_ed_std"] == pytest.approx(np.std(eds, ddof=1))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "over 3 seeds (0, 2, 4" in md and "seeds 1, 3, 5" in md and f"{summary['class_ed']:.4g} ± " in md
    assert len(list((tmp_path / "r" / "grids").iterdir())) == 1  # the first seed's grid
    assert "summary" not in json.loads((tmp_path / "plain" / "report.json").read_text())


def test_a_summary_averages_a_metric_over_the_seeds_where_it_was_computed():
    from gdistill.metrics.report import summarize_repeats

    base = {"run": "r", "model": "round-1", "sampler": "deterministic", "steps": 4, "w": 1.0, "calls_per_image": 4,
            "n": 10}
    rows = [{**base, "seconds_per_image": 0.1 * k, "seed": 2 * k, "fid": fid, "kid": None}
            for k, fid in enumerate([3.0, None, 5.0])]
    [summary] = summarize_repeats(rows)
    assert summary["fid"] == 4.0 and summary["fid_std"] == pytest.approx(np.sqrt(2))
    assert summary["kid"] is None and summary["kid_std"] is None
    assert summary["seconds_per_image"] == pytest.approx(0.1) and summary["repeats"] == 3


def test_a_metric_that_cannot_be_computed_exits_1_with_the_report(rounds, cli, tmp_path):
    """A run whose weights are NaN (a diverged model) gives n/a values and exit code 1."""
    from gdistill.run_folder import commit_run, load_weights

    source = rounds / "pd" / "round-2"
    manifest = read_manifest(source)
    state = {k: torch.full_like(v, float("nan")) for k, v in load_weights(source, manifest).items()}
    work = tmp_path / ".broken.partial"
    work.mkdir()
    kept = {k: v for k, v in manifest.items() if k not in ("files", "gdistill_version", "created")}
    commit_run(work, tmp_path / "broken", kept, {WEIGHTS: state})
    code, _, err = cli("eval", "--to-teacher", 0, "--from", tmp_path / "broken", "--w", 1, "--n", 70, "--out", tmp_path / "r",
                       "--cache-dir", tmp_path / "c", "--device", "cpu")
    assert code == 1 and "could not be computed" in err
    assert "n/a" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--ref", "{tmp}/missing"], "does not exist"),
    (["--ref", "{tmp}/empty"], "holds no images"),
    (["--n", "50"], "too small for digits-FD"),
    (["--fdi"], "No such option"),
    (["--w", "one"], "comma-separated list"),
    (["--sampler", "euler"], "--sampler"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--prc", "--n", "3"], "--prc needs more than 3 samples"),
    (["--isc", "--clip", "--prompts", "{tmp}/missing.txt"], "cannot read --prompts"),
])
def test_bad_input_gives_one_line_and_no_report(rounds, cli, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--fid", "--out", tmp_path / "report",
                       "--cache-dir", tmp_path / "cache", "--device", "cpu", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "report").exists() and not (tmp_path / ".report.partial").exists()


def test_bad_runs_and_existing_output(rounds, cli, tmp_path):
    code, _, err = cli("eval", "--to-teacher", 0, "--from", tmp_path / "nothing", "--out", tmp_path / "r")
    assert code == 2 and "does not exist" in err
    (tmp_path / "r").mkdir()
    code, _, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd", "--out", tmp_path / "r")
    assert code == 2 and "--overwrite" in err
    code, _, err = cli("eval", "--to-teacher", 0, "--from", "toy2d", "--fid", "--out", tmp_path / "r2")
    assert code == 2 and "use --ed" in err


# --- CLIP score --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A CLIP model with random weights and a tiny tokenizer, saved as a local folder (offline)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip")
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", "<unk>"] + letters + [c + "</w>" for c in letters])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                         vocab_size=len(vocab), max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                           image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_clip_score_from_a_local_folder(tiny_clip):
    from gdistill.metrics.clip import ClipScorer

    scorer = ClipScorer(str(tiny_clip))
    images = digits().x[:20]
    prompts = [f"digit {k}" for k in range(20)]
    scores = scorer.scores(images, prompts)
    assert scores.shape == (20,) and (scores >= 0).all() and (scores <= 100).all()
    # the score depends on the pairing: swapping the prompts changes it
    assert not torch.allclose(scores, scorer.scores(images, prompts[::-1]))
    assert scorer.score(images, prompts) == pytest.approx(scores.mean().item())


def test_eval_clip_column_and_offline_error(rounds, tiny_clip, cli, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"a handwritten {k}" for k in range(10)))
    code, stdout, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--clip", "--clip-model", tiny_clip,
                            "--prompts", prompts, "--w", 1, "--n", 20, "--out", tmp_path / "r", "--device", "cpu", "--json")
    assert code == 0, err
    (row,) = json.loads(stdout)
    assert 0 <= row["clip_score"] <= 100
    prompts.write_text("only one prompt\n")
    code, _, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--clip", "--clip-model", tiny_clip,
                       "--prompts", prompts, "--out", tmp_path / "r2", "--device", "cpu")
    assert code == 2 and "one prompt per class" in err
    code, _, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--clip", "--clip-model", "nobody/no-such-clip",
                       "--out", tmp_path / "r3", "--device", "cpu")
    assert code == 2 and "--clip-model DIR" in err and len(err.strip().splitlines()) == 1


# --- torch-fidelity (Inception) ----------------------------------------------------------------

def _torch_fidelity_or_skip():
    try:
        import torch_fidelity  # noqa: F401
    except Exception as e:  # torchvision missing or built for another torch
        pytest.skip(f"torch-fidelity does not import here ({e.__class__.__name__}); "
                    "the Inception path runs where `pip install 'gdistill[fid]'` works")


def test_inception_metrics_through_torch_fidelity(rounds, cli, tmp_path, monkeypatch):
    """The real torch-fidelity pipeline, with a weights file of the right format (random values:
    this checks the plumbing, not the Inception numbers)."""
    _torch_fidelity_or_skip()
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    monkeypatch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    weights = tmp_path / "inception.pth"
    torch.save(FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty)).state_dict(), weights)
    monkeypatch.undo()
    folder = write_digit_folder(tmp_path / "ref", per_class=20, classes=range(10))
    code, stdout, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--isc", "--kid", "--ref", folder,
                            "--inception-weights", weights, "--w", 1, "--n", 60, "--out", tmp_path / "r",
                            "--cache-dir", tmp_path / "cache", "--json")
    assert code == 0, err
    (row,) = json.loads(stdout)
    assert row["is"] >= 1 and np.isfinite(row["kid"])
    assert (tmp_path / "cache" / "torch-fidelity").is_dir()  # the reference's statistics, cached
    code, _, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--fid", "--ref", folder,
                       "--inception-weights", weights, "--n", 60, "--out", tmp_path / "r2")
    assert code == 2 and "more than 2048 samples" in err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-hub"))
    code, _, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--isc", "--ref", folder, "--n", 60,
                       "--out", tmp_path / "r3")
    if code != 0:  # offline: the message names the file and the option
        assert code == 2 and "--inception-weights PATH" in err and "weights-inception-2015-12-05" in err


def test_inception_metrics_say_what_to_install_where_torch_fidelity_is_missing(rounds, cli, tmp_path):
    try:
        import torch_fidelity  # noqa: F401
        pytest.skip("torch-fidelity imports here")
    except Exception:
        pass
    folder = write_digit_folder(tmp_path / "ref")
    code, _, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--isc", "--ref", folder, "--out", tmp_path / "r")
    assert code == 2 and "gdistill[fid]" in err and not (tmp_path / "r").exists()


def test_prc_on_inception_features_asks_for_a_torchscript_file(rounds, cli, tmp_path):
    """torch-fidelity keeps its Inception features to itself, so --prc against an image folder needs
    the TorchScript file; said before any import or sampling."""
    folder = write_digit_folder(tmp_path / "ref")
    code, _, err = cli("eval", "--to-teacher", 0, "--from", rounds / "pd" / "round-2", "--prc", "--ref", folder,
                       "--out", tmp_path / "r")
    assert code == 2 and "--inception-weights" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_unknown_metric_name_is_refused_by_the_scorer():
    from gdistill.tasks.evaluate import Scorer

    with pytest.raises(GdistillError, match="unknown metric fdi"):
        Scorer({"fdi"}, "digits", (1, 8, 8), 100, "/tmp", "cpu")

