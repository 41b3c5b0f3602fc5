"""`gdistill edit` (SDEdit) and `gdistill inpaint` (replacement), in pixel space with the shipped
digits teacher and in latent space with a student of the tiny SD pipeline: strength 0 gives the
input, strength 1 the plain sample; inpainting keeps the known pixels exactly and fills the rest in
the requested class; input handling and one-line errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from gdistill.diffusion import snap_strength
from gdistill.metrics.digits import DigitsClassifier, classifier_split
from gdistill.run_folder import load_model
from gdistill.images import read_image
from gdistill.tasks.sample import InputImage, sample
from tests.conftest import run_cli
from tests.sd_tiny import build_tiny_sd, write_caption_folder


def save_digit(x: torch.Tensor, path):
    Image.fromarray(((x[0] + 1) * 127.5).round().byte().numpy()).save(path)
    return path


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-in")
    digits, labels, _, held_out = classifier_split()
    three = held_out[(labels[held_out] == 3).nonzero()[0, 0]]
    mask = np.zeros((8, 8), np.uint8)
    mask[4:] = 255
    Image.fromarray(mask).save(root / "lower.png")
    return {"three": save_digit(digits[three], root / "three.png"), "mask": root / "lower.png", "root": root,
            "x": digits[three]}


def test_snap_strength_to_the_grid():
    assert [snap_strength(s, 4) for s in (0, 0.1, 0.5, 0.62, 0.75, 1, 1.5)] == [0, 0, 2, 2, 3, 4, 4]
    assert snap_strength(0.5, 1) == 1 and snap_strength(0.3, 1) == 0 and snap_strength(0.25, 2) == 1


def test_edit_strength_zero_is_the_input_and_one_is_the_plain_sample(digit_files, tmp_path, cli):
    code, _, err = cli("edit", "--from", "digits", "--image", digit_files["three"], "--label", 8, "--strength", 0,
                       "--steps", 4, "--out", tmp_path / "s0.npz")
    assert code == 0 and "the last 0 step(s)" in err, err
    as_read = read_image(digit_files["three"], 1)  # the PNG, i.e. the digit at 8 bits
    assert torch.equal(torch.tensor(np.load(tmp_path / "s0.npz")["samples"][0]), as_read)
    code, _, err = cli("edit", "--from", "digits", "--image", digit_files["three"], "--label", 8, "--strength", 1,
                       "--steps", 4, "--seed", 3, "--out", tmp_path / "s1.npz")
    assert code == 0 and "8 network calls" in err, err
    code, _, _ = cli("sample", "--from", "digits", "--label", 8, "--n", 1, "--steps", 4, "--seed", 3,
                     "--out", tmp_path / "plain.npz")
    assert code == 0
    assert np.array_equal(np.load(tmp_path / "s1.npz")["samples"], np.load(tmp_path / "plain.npz")["samples"])
    code, _, err = cli("edit", "--from", "digits", "--image", digit_files["three"], "--label", 8, "--strength", 0.5,
                       "--steps", 4, "--out", tmp_path / "half.npz")
    assert code == 0 and "the last 2 step(s) from t0 = 0.5 (4 network calls per image)" in err, err
    half = torch.tensor(np.load(tmp_path / "half.npz")["samples"][0])
    assert 0 < (half - as_read).abs().max()


def test_inpaint_keeps_the_known_pixels_exactly(digit_files, tmp_path, cli):
    code, _, err = cli("inpaint", "--from", "digits", "--image", digit_files["three"], "--mask", digit_files["mask"],
                       "--label", 3, "--steps", 8, "--n", 3, "--out", tmp_path / "filled")
    assert code == 0 and "replacement" in err, err
    x = np.asarray(Image.open(digit_files["three"]))
    outputs = [np.asarray(Image.open(tmp_path / "filled" / f"three-{k}.png")) for k in range(3)]
    for out in outputs:
        assert np.array_equal(out[:4], x[:4])
    assert any(not np.array_equal(out[4:], x[4:]) for out in outputs)


def test_inpainting_the_lower_half_gives_the_requested_digit():
    """Numbers, not shapes: the teacher at 8 guided steps regenerates the lower halves of 60 held-out
    digits so that the classifier still reads their class far more often than with the half blanked."""
    digits, labels, _, held_out = classifier_split()
    x, y = digits[held_out[:60]], labels[held_out[:60]]
    mask = torch.zeros(len(x), 1, 8, 8)
    mask[..., 4:, :] = 1
    teacher = load_model("digits")[0]
    filled = sample(teacher, y, 8, 1.0, seed=0, data_range=(-1.0, 1.0), input_image=InputImage(x, 0, mask)).samples
    blanked = torch.where(mask.bool(), torch.full_like(x, -1.0), x)
    classifier = DigitsClassifier()
    assert torch.equal(filled[..., :4, :], x[..., :4, :])
    assert classifier.accuracy(filled, y) >= 0.85 > classifier.accuracy(blanked, y) + 0.2


def test_folders_of_images_and_masks_and_input_errors(digit_files, tmp_path, cli):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for name in ("a", "b"):
        save_digit(digit_files["x"], images / f"{name}.png")
    Image.open(digit_files["mask"]).save(masks / "a.png")
    Image.open(digit_files["mask"]).resize((16, 16)).save(masks / "b.png")  # another size: resized, warned
    code, _, err = cli("inpaint", "--from", "digits", "--image", images, "--mask", masks, "--label", 3,
                       "--steps", 4, "--out", tmp_path / "out")
    assert code == 0 and "mask b.png is 16x16, the image 8x8: resized" in err, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    (masks / "b.png").unlink()
    code, _, err = cli("inpaint", "--from", "digits", "--image", images, "--mask", masks, "--label", 3,
                       "--out", tmp_path / "out2")
    assert code == 2 and "no mask for 1 image(s), first b.png" in err and not (tmp_path / "out2").exists()
    (tmp_path / "broken.png").write_text("not an image")
    for args, message in [
        (["--image", tmp_path / "broken.png", "--label", 1], "cannot read image"),
        (["--image", digit_files["three"], "--label", 1, "--strength", 1.5], "--strength must be in [0, 1]"),
        (["--image", digit_files["three"], "--label", 12], "--label between 0 and 9"),
        (["--image", digit_files["three"], "--prompt", "a cat"], "pass --label, not --prompt"),
        (["--image", tmp_path / "missing.png", "--label", 1], "does not exist"),
        (["--image", digit_files["three"], "--label", 1, "--n", 2], "go into a folder"),
    ]:
        out = tmp_path / "x.png"
        code, _, err = cli("edit", "--from", "digits", *args, "--out", out)
        assert code == 2 and message in err and err.strip().count("\n") <= 1, (args, err)
        assert not out.exists()


@pytest.fixture(scope="module")
def sd_student(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd-edit")
    teacher = build_tiny_sd(root / "teacher")
    pairs = write_caption_folder(root / "pairs", [f"picture {i}" for i in range(4)], seed=1, size=(16, 16))
    rng = np.random.default_rng(1)
    assert run_cli("match", "--teacher", teacher, "--data", pairs, "--resolution", 16, "--train-steps", 2,
                   "--batch-size", 2, "--out", root / "stage1") == (0,)
    photo = rng.integers(0, 256, (15, 17, 3), dtype=np.uint8)  # odd sizes: centre-cropped to 14x16
    Image.fromarray(photo).save(root / "photo.png")
    mask = np.zeros((15, 17), np.uint8)
    mask[:, 9:] = 255
    Image.fromarray(mask).save(root / "mask.png")
    return root


def test_latent_edit_and_inpaint(sd_student, tmp_path, cli):
    from gdistill.models.sd_encoders import SDEncoders

    run = sd_student / "stage1"
    photo = sd_student / "photo.png"
    code, _, err = cli("edit", "--from", run, "--image", photo, "--prompt", "a cat", "--strength", 0, "--steps", 4,
                       "--out", tmp_path / "s0.png")
    assert code == 0 and "centre-cropped to 16x14" in err, err
    manifest = load_model(run)[1]
    encoders = SDEncoders(manifest["pipeline"])
    image = read_image(photo, 3)[:, :14, :16]
    round_trip = encoders.decode(encoders.encode_images(image[None]))
    expected = ((round_trip[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s0.png")), expected)  # the VAE's round trip

    square = sd_student / "square.png"
    Image.open(photo).crop((0, 0, 16, 16)).save(square)
    code, _, err = cli("edit", "--from", run, "--image", square, "--prompt", "a cat", "--strength", 1, "--steps", 4,
                       "--w", 2, "--seed", 5, "--out", tmp_path / "s1.png")
    assert code == 0, err
    code, _, err = cli("sample", "--from", run, "--prompt", "a cat", "--steps", 4, "--w", 2, "--seed", 5,
                       "--out", tmp_path / "plain.png")
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s1.png")), np.asarray(Image.open(tmp_path / "plain.png")))

    code, _, err = cli("inpaint", "--from", run, "--image", photo, "--mask", sd_student / "mask.png",
                       "--prompt", "a cat", "--steps", 4, "--out", tmp_path / "filled.png")
    assert code == 0, err
    assert "outside the trained range" not in err
    code, _, err = cli("edit", "--from", run, "--image", square, "--prompt", "a cat", "--strength", 0.5, "--steps", 4,
                       "--w", 20, "--out", tmp_path / "far.png")
    assert code == 0 and "warning: w=20.0 is outside the trained range [0.0, 14.0]" in err, err
    filled = np.asarray(Image.open(tmp_path / "filled.png"))
    source = np.asarray(Image.open(photo))[:14, :16]  # the same centre crop
    keep = np.asarray(Image.open(sd_student / "mask.png"))[:14, :16] < 128
    assert filled.shape == (14, 16, 3) and np.array_equal(filled[keep], source[keep])
    assert not np.array_equal(filled[~keep], source[~keep])


def test_training_masks_are_seeded_and_follow_sds_recipe():
    from gdistill.data.masks import training_masks

    masks = training_masks(400, 16, 16, torch.Generator().manual_seed(0))
    again = training_masks(400, 16, 16, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again) and set(masks.unique().tolist()) <= {0.0, 1.0}
    whole = (masks.flatten(1).mean(1) == 1).float().mean().item()
    assert 0.18 < whole < 0.32  # a quarter repaint everything
    partial = masks.flatten(1).mean(1)
    assert ((partial > 0) & (partial < 1)).float().mean() > 0.6  # the rest: rectangles and strokes


def test_inpainting_teacher_matches_diffusers_and_distils_into_an_inpainting_student(tmp_path, cli):
    """SD's 9-channel inpainting UNet as a teacher: gdistill's guided DDIM on its packed condition
    (text, latent mask, masked-image latents) gives diffusers' StableDiffusionInpaintPipeline
    latents; match and a halving round run on it; `inpaint` then uses the student's own mask input
    and keeps the known pixels exactly."""
    from diffusers import DDIMScheduler

    from gdistill.models.sd_encoders import SDEncoders

    from gdistill.models.sd_pipeline import load_sd_pipeline

    teacher_dir = build_tiny_sd(tmp_path / "inpainting", inpainting=True)
    teacher, manifest, _ = load_model(teacher_dir)
    assert teacher.inpainting and teacher.data_shape == (4, 8, 8)
    encoders = SDEncoders(manifest["pipeline"])
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 6:16] = 1
    text = encoders.encode_prompts(["a green sofa"])
    ours = sample(teacher, encoders.inpaint_condition(text, image, mask), 4, 2.0, seed=7).samples
    pipe = load_sd_pipeline(str(teacher_dir))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True)
    theirs = pipe(prompt_embeds=text, negative_prompt_embeds=teacher.null_embedding[None], image=(image + 1) / 2,
                  mask_image=mask, masked_image_latents=encoders.encode_images(image * (mask < 0.5)),
                  latents=torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(7)), height=16, width=16,
                  num_inference_steps=4, guidance_scale=3.0, output_type="latent").images
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()

    pairs = write_caption_folder(tmp_path / "pairs", [f"room {i}" for i in range(4)], size=(16, 16))
    assert run_cli("match", "--teacher", teacher_dir, "--data", pairs, "--resolution", 16, "--train-steps", 3,
                   "--batch-size", 2, "--out", tmp_path / "stage1") == (0,)
    assert run_cli("halve", "--from", tmp_path / "stage1", "--rounds", 1, "--start-steps", 4, "--train-steps", 2,
                   "--batch-size", 2, "--out", tmp_path / "pd") == (0,)
    photo = ((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    Image.fromarray(photo).save(tmp_path / "room.png")
    Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    code, _, err = cli("inpaint", "--from", tmp_path / "pd" / "round-1", "--image", tmp_path / "room.png",
                       "--mask", tmp_path / "mask.png", "--prompt", "a green sofa", "--out", tmp_path / "filled.png")
    assert code == 0 and "inpainting model" in err and "2 steps" in err, err
    filled, keep = np.asarray(Image.open(tmp_path / "filled.png")), mask[0, 0].numpy() == 0
    assert np.array_equal(filled[keep], photo[keep]) and not np.array_equal(filled[~keep], photo[~keep])
    code, _, err = cli("edit", "--from", tmp_path / "pd" / "round-1", "--image", tmp_path / "room.png",
                       "--prompt", "a sofa", "--out", tmp_path / "edited.png")
    assert code == 2 and "use `gdistill inpaint`" in err
