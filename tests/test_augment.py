"""Augmentation presets (config rendering, no TensorFlow) and `augment-preview` (the OD API's
own decoder and preprocessor): boxes follow the lesion through every step."""
import os

import numpy as np
import pytest
from PIL import Image

from medtfod.cli import main
from medtfod.core.errors import UserError
from medtfod.odapi import protos
from medtfod.training.augment import PRESETS, step_names
from medtfod.training.config import RenderOptions, render

from support.cli import fenced

MODEL = "ssd_mobilenet_v2_fpnlite_320"
SIZE, SQUARE = 64, 14          # image side and bright square side, pixels
BACKGROUND, BRIGHT = 40, 230   # 8-bit gray levels


@pytest.fixture(scope="module")
def square_dataset(tmp_path_factory):
    """8 gray 64-px images (one patient each), each with one bright square off the centre and its
    exact box, converted by `medtfod convert csv` (train 6, val 2)."""
    root = tmp_path_factory.mktemp("squares")
    images = root / "images"
    images.mkdir()
    rows = ["name,finding,x,y,w,h"]
    for i in range(8):
        x, y = 6 + 3 * i, 8 + 4 * (i % 4)  # left of the centre, so a missed flip shows
        pixels = np.full((SIZE, SIZE), BACKGROUND, np.uint8)
        pixels[y:y + SQUARE, x:x + SQUARE] = BRIGHT
        Image.fromarray(pixels).save(images / f"{i:03d}_0.png")
        rows.append(f"{i:03d}_0.png,lesion,{x},{y},{SQUARE},{SQUARE}")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    out = root / "data"
    assert main(["convert", "csv", "--table", str(root / "boxes.csv"), "--images", str(images),
                 "--columns", "filename=name,label=finding,x=x,y=y,w=w,h=h", "--out", str(out),
                 "--split", "train=0.75,val=0.25", "-q"]) == 0
    return str(out)


def test_presets_render_their_documented_steps(square_dataset):
    template = render(MODEL, square_dataset)
    assert render(MODEL, square_dataset, options=RenderOptions(augment_preset="default")) == template
    assert step_names(render(MODEL, square_dataset, options=RenderOptions(augment_preset="none")).train_config) == []
    cxr = render(MODEL, square_dataset, options=RenderOptions(augment_preset="cxr")).train_config
    assert step_names(cxr) == ["random_image_scale", "random_crop_image", "random_adjust_brightness",
                               "random_adjust_contrast"]
    assert "random_horizontal_flip" not in step_names(cxr)  # anatomy has a side
    assert cxr.data_augmentation_options[1].random_crop_image.min_object_covered == 1.0
    us = render(MODEL, square_dataset, options=RenderOptions(augment_preset="us")).train_config
    assert step_names(us) == ["random_horizontal_flip", "random_image_scale", "random_crop_image",
                              "random_adjust_contrast", "random_adjust_brightness"]
    assert us.data_augmentation_options[3].random_adjust_contrast.min_delta == pytest.approx(0.7)
    # a preset step's parameter is reachable with --set, applied after the preset
    tuned = render(MODEL, square_dataset, options=RenderOptions(augment_preset="us", overrides={
        "train_config.data_augmentation_options[4].random_adjust_brightness.max_delta": "0.05"}))
    assert tuned.train_config.data_augmentation_options[4].random_adjust_brightness.max_delta == pytest.approx(0.05)
    assert set(PRESETS) == {"none", "cxr", "us", "default"}


def test_preset_errors_and_cli(square_dataset, tmp_path, capsys):
    with pytest.raises(UserError, match="give one"):
        render(MODEL, square_dataset, options=RenderOptions(augment=["random_horizontal_flip"], augment_preset="cxr"))
    from medtfod.training.augment import preset_steps
    with pytest.raises(UserError, match="did you mean 'cxr'"):
        preset_steps("cxrr")
    out = tmp_path / "pipeline.config"
    assert main(["config", "--model", MODEL, "--data", square_dataset, "--out", str(out),
                 "--augment-preset", "cxr"]) == 0
    assert "random_horizontal_flip" not in step_names(protos.read_pipeline_config(str(out)).train_config)
    with pytest.raises(SystemExit):
        main(["config", "--model", MODEL, "--data", square_dataset, "--out", str(out), "--augment-preset", "mri"])
    assert "invalid choice: 'mri'" in capsys.readouterr().err


def alignment(sample):
    """(share of the bright pixels inside the sample's box, share of the box that is bright).

    Bright = above the midpoint of the image's darkest and brightest values (contrast and
    brightness steps move both; the square stays the brightest thing). The box is widened by
    one pixel for the resampling blur at the square's edge."""
    assert len(sample.boxes) == 1, sample
    gray = sample.image[..., 0].astype(float)
    bright = gray > (gray.min() + gray.max()) / 2
    box = sample.boxes[0]
    inside = np.zeros_like(bright)
    inside[max(0, int(np.floor(box.ymin)) - 1):int(np.ceil(box.ymax)) + 1,
           max(0, int(np.floor(box.xmin)) - 1):int(np.ceil(box.xmax)) + 1] = True
    core = np.zeros_like(bright)
    core[int(np.ceil(box.ymin)):int(np.floor(box.ymax)), int(np.ceil(box.xmin)):int(np.floor(box.xmax))] = True
    return (bright & inside).sum() / bright.sum(), (bright & core).sum() / core.sum()


@pytest.mark.tf
def test_boxes_stay_on_the_bright_square_through_the_us_preset(square_dataset, tmp_path):
    """Flip, scale, crop, contrast and brightness (the `us` preset) through the OD API's own
    preprocessor: in every sample, >= 90% of the bright pixels lie in the box and the box is
    >= 80% bright; and the check itself fails for a box left unflipped."""
    from medtfod.core.boxes import Box
    from medtfod.odapi.augment import AugmentedSample, augmented_samples
    config = tmp_path / "pipeline.config"
    assert main(["config", "--model", MODEL, "--data", square_dataset, "--out", str(config),
                 "--augment-preset", "us"]) == 0
    samples = augmented_samples(str(config), n=24, seed=1)
    assert len(samples) == 24 and len({s.source for s in samples}) == 6  # every train image (6 of 8), 4 times
    for sample in samples:
        in_box, covered = alignment(sample)
        assert in_box >= 0.9 and covered >= 0.8, (sample.source, sample.image.shape, sample.boxes, in_box, covered)
    # the steps did something: mirrored squares (right of the centre) and rescaled / cropped images
    centres = [(s.boxes[0].xmin + s.boxes[0].xmax) / 2 / s.image.shape[1] for s in samples]
    assert min(centres) < 0.5 < max(centres)
    assert len({s.image.shape[:2] for s in samples}) > 3
    # ... and the check would catch a box that did not follow a flip
    flipped = next(s for s, c in zip(samples, centres) if c > 0.5)
    width = flipped.image.shape[1]
    b = flipped.boxes[0]
    wrong = AugmentedSample(flipped.image, [Box(width - b.xmax, b.ymin, width - b.xmin, b.ymax)], [1], "x")
    assert alignment(wrong)[0] < 0.5


@pytest.mark.tf
def test_augment_preview_command_writes_only_its_grid(square_dataset, tmp_path):
    """`medtfod augment-preview` through the console script: one PNG grid of N tiles, written
    only at --out; an --out inside the dataset is refused."""
    config = tmp_path / "model" / "pipeline.config"
    assert main(["config", "--model", MODEL, "--data", square_dataset, "--out", str(config),
                 "--augment-preset", "cxr"]) == 0
    result = fenced(str(tmp_path), ["grid.png"], "augment-preview", "--config", str(config),
                    "--out", str(tmp_path / "grid.png"), "--n", "6", "--tile-size", "96")
    assert "6 augmented training samples" in result.stdout
    grid = Image.open(tmp_path / "grid.png")
    assert grid.format == "PNG" and grid.width == 3 * (96 + 4) + 4  # 3 columns of 96-px tiles
    assert main(["augment-preview", "--config", str(config),
                 "--out", os.path.join(square_dataset, "grid.png")]) == 1
