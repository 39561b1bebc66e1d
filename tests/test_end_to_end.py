"""The whole path through the real CLI on a tiny config: convert -> config -> train -> eval ->
export -> detect (marked slow: a few minutes on 2 CPU cores)."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from medtfod.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.tf]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from medtfod import demo_data
    from medtfod.demo import DEMO_OVERRIDES

    root = tmp_path_factory.mktemp("e2e")
    data = demo_data.generate(str(root / "source"), num_images=40, size=128, seed=5)
    paths = {k: str(root / k) for k in ("dataset", "model", "exported", "detections")}
    paths["config"] = str(root / "model" / "pipeline.config")
    assert main(["convert", "nih", "--bbox-csv", data["bbox_csv"], "--images", data["images"],
                 "--data-entry", data["data_entry"], "--label-map", data["label_map"],
                 "--out", paths["dataset"], "-q"]) == 0
    overrides = [a for k, v in DEMO_OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", paths["dataset"],
                 "--out", paths["config"], "--steps", "100", "--batch-size", "4", "--image-size", "128",
                 "--learning-rate", "0.04", "--warmup-steps", "20",
                 "--augment", "random_horizontal_flip", *overrides]) == 0
    assert main(["train", "--config", paths["config"], "--model-dir", paths["model"], "-q"]) == 0
    assert main(["eval", "--config", paths["config"], "--model-dir", paths["model"], "-q"]) == 0
    assert main(["export", "--config", paths["config"], "--model-dir", paths["model"],
                 "--out", paths["exported"], "-q"]) == 0
    assert main(["detect", "--model", paths["exported"], "--images", data["images"],
                 "--out", paths["detections"], "--min-score", "0.0", "-q"]) == 0
    paths["images"] = data["images"]
    return paths


def test_training_wrote_checkpoint_and_logs(run):
    files = os.listdir(run["model"])
    assert "checkpoint" in files and any(f.startswith("ckpt-") for f in files)
    assert os.path.isdir(os.path.join(run["model"], "train"))  # TensorBoard events


def test_eval_metrics_json(run):
    result = json.load(open(os.path.join(run["model"], "metrics.json")))
    assert result["step"] == 100
    metrics = result["metrics"]
    for key in ("DetectionBoxes_Precision/mAP", "DetectionBoxes_Precision/mAP@.50IOU", "DetectionBoxes_Recall/AR@100"):
        assert -1.0 <= metrics[key] <= 1.0
    assert metrics["Loss/total_loss"] > 0
    assert os.path.isdir(os.path.join(run["model"], "eval"))


def test_export_layout(run):
    assert os.path.isfile(os.path.join(run["exported"], "saved_model", "saved_model.pb"))
    assert os.path.isfile(os.path.join(run["exported"], "label_map.pbtxt"))
    assert os.path.isfile(os.path.join(run["exported"], "pipeline.config"))


def read_rows(run):
    with open(os.path.join(run["detections"], "detections.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_drawn_images(run):
    rows = read_rows(run)
    inputs = sorted(f for f in os.listdir(run["images"]) if f.endswith(".png"))
    drawn = sorted(f for f in os.listdir(run["detections"]) if f.endswith(".png"))
    assert drawn == inputs
    assert rows, "expected detections at score >= 0"
    name = rows[0]["image"]
    with Image.open(os.path.join(run["detections"], name)) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (128, 128)
        out = np.asarray(im).astype(int)
    # the box outline is coloured, where the gray input had R == G == B
    x = int(float(rows[0]["xmin"]))
    y = min(127, int(float(rows[0]["ymin"])) + 1)
    assert len(set(out[y, min(127, x)])) > 1 or len(set(out[max(0, y - 2), min(127, x + 1)])) > 1


def test_csv_matches_saved_model(run):
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    rows = read_rows(run)
    name = rows[0]["image"]
    model = tf.saved_model.load(os.path.join(run["exported"], "saved_model"))
    pixels = np.asarray(Image.open(os.path.join(run["images"], name)).convert("RGB"))
    result = model(tf.constant(pixels[None]))
    scores = result["detection_scores"][0].numpy()
    keep = scores >= 0.0
    boxes = result["detection_boxes"][0].numpy()[keep] * 128
    mine = [r for r in rows if r["image"] == name]
    assert len(mine) == int(keep.sum())
    for row, (ymin, xmin, ymax, xmax), score in zip(mine, boxes, scores[keep]):
        assert float(row["score"]) == pytest.approx(score, abs=1e-5)
        got = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        assert got == pytest.approx([xmin, ymin, xmax, ymax], abs=0.01)
        assert row["label"] in ("Mass", "Nodule")


def test_demo_command(tmp_path, capsys):
    assert main(["demo", "--workspace", str(tmp_path / "ws"), "--num-images", "24", "--steps", "100", "-q"]) == 0
    out = capsys.readouterr().out
    assert "== demo finished ==" in out and "DetectionBoxes_Precision/mAP@.50IOU" in out
    ws = tmp_path / "ws"
    for sub in ("annotations", "images", "models", "pre-trained-models", "exported-models"):
        assert (ws / sub).is_dir()
    assert (ws / "detections" / "detections.csv").is_file()
