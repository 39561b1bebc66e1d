"""Shared fixtures: tiny synthetic data made in code; ../shared only when it exists. The helper
functions tests import are in `support/`."""
import importlib
import os
import subprocess
import sys

import pytest

from support import SHARED
from support.cli import fenced
from support.data import masked_coco


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips the test when the checkout has no ../shared."""
    path = os.path.join(SHARED, "data")
    if not os.path.isdir(path):
        pytest.skip("../shared/data is not present (only in the developers' checkout)")
    return path


@pytest.fixture(scope="session")
def tiny_nih(tmp_path_factory):
    """24 synthetic 64-px images with NIH-format tables (read-only: copy before changing)."""
    from medtfod.data import demo_data
    root = tmp_path_factory.mktemp("tiny_nih")
    return demo_data.generate(str(root), num_images=24, size=64, seed=3)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_nih, tmp_path_factory):
    """`tiny_nih` converted by `medtfod convert nih` (read-only: tests must not change it)."""
    from medtfod.cli import main
    out = tmp_path_factory.mktemp("tiny_dataset") / "data"
    assert main(["convert", "nih", "--bbox-csv", tiny_nih["bbox_csv"], "--images", tiny_nih["images"],
                 "--data-entry", tiny_nih["data_entry"], "--label-map", tiny_nih["label_map"],
                 "--out", str(out), "-q"]) == 0
    return str(out)


@pytest.fixture(scope="session")
def masked_dataset(tmp_path_factory):
    """`masked_coco` converted by `medtfod convert coco`, split 12/4, with instance masks in
    both splits (read-only: tests must not change it)."""
    import json

    from medtfod.cli import main
    root = tmp_path_factory.mktemp("masked")
    json_path, images = masked_coco(root)
    out = root / "data"
    assert main(["convert", "coco", "--json", json_path, "--images", images, "--out", str(out),
                 "--split", "train=0.75,val=0.25", "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert all(split["masks"] > 0 for split in report["splits"].values())
    return str(out)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The README's path through the installed `medtfod` command on a tiny config, once per run:
    convert nih -> config -> train (100 steps) -> eval -> export (+ TFLite) -> detect.

    Every step runs from an empty working folder and is checked by `fenced`: it writes only
    into its declared outputs, and the source tables and images (like every other file) stay
    byte-identical. Returns a dict of paths: dataset, model, config, exported, detections,
    images (read-only: tests copy what they change)."""
    from medtfod.data import demo_data
    from medtfod.demo import DEMO_OVERRIDES

    root = str(tmp_path_factory.mktemp("e2e"))
    data = demo_data.generate(os.path.join(root, "source"), num_images=40, size=128, seed=5)
    paths = {k: os.path.join(root, k) for k in ("dataset", "model", "exported", "detections")}
    paths["config"] = os.path.join(root, "model", "pipeline.config")
    fenced(root, ["dataset"], "convert", "nih", "--bbox-csv", data["bbox_csv"], "--images", data["images"],
           "--data-entry", data["data_entry"], "--label-map", data["label_map"], "--out", paths["dataset"], "-q")
    overrides = [a for k, v in DEMO_OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    fenced(root, ["model/pipeline.config"], "config", "--model", "ssd_mobilenet_v2_fpnlite_320",
           "--data", paths["dataset"], "--out", paths["config"], "--steps", "100", "--batch-size", "4",
           "--image-size", "128", "--learning-rate", "0.04", "--warmup-steps", "20",
           "--augment", "random_horizontal_flip", *overrides)
    config = ["model/pipeline.config"]
    fenced(root, ["model"], "train", "--config", paths["config"], "--model-dir", paths["model"], "-q", keep=config)
    fenced(root, ["model"], "eval", "--config", paths["config"], "--model-dir", paths["model"], "-q", keep=config)
    fenced(root, ["exported"], "export", "--config", paths["config"], "--model-dir", paths["model"],
           "--out", paths["exported"], "--tflite", "-q")
    fenced(root, ["detections"], "detect", "--model", paths["exported"], "--images", data["images"],
           "--out", paths["detections"], "--min-score", "0.0", "-q")
    paths.update(images=data["images"], bbox_csv=data["bbox_csv"], data_entry=data["data_entry"],
                 label_map=data["label_map"], root=root)
    return paths


@pytest.fixture(scope="session")
def pascal_voc_io(tmp_path_factory):
    """labelImg's `libs.pascal_voc_io`, installed (without PyQt) into a temp folder if needed."""
    try:
        return importlib.import_module("libs.pascal_voc_io")
    except ImportError:
        pass
    target = tmp_path_factory.mktemp("labelimg")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                             "--disable-pip-version-check", "--target", str(target), "labelImg==1.8.6"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"labelImg 1.8.6 could not be installed here: {result.stderr.strip()[-300:]}")
    sys.path.insert(0, str(target))
    return importlib.import_module("libs.pascal_voc_io")
