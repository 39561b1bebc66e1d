"""The whole path through the real CLI on a tiny config: convert -> config -> train -> eval ->
export -> detect (marked slow: a few minutes on 2 CPU cores)."""
import csv
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from medtfod.cli import main
from medtfod.inference.draw import colour

pytestmark = [pytest.mark.slow, pytest.mark.tf]


@pytest.fixture
def run(trained):
    """conftest's `trained`: convert -> config -> train -> eval -> export -> detect, run once."""
    return trained


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
    record = json.load(open(os.path.join(run["exported"], "export.json")))
    assert record["step"] == 100 and record["checkpoint"].startswith("the latest checkpoint")
    assert (record["window"], record["clahe"]) == ("header", False)  # copied from the dataset's manifest


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


def test_tflite_export_gives_the_saved_models_boxes(run):
    """The TFLite model (resized and normalized as model.json says) finds the same boxes as the
    SavedModel: on the export's own check image and on every image of the val split."""
    from medtfod.odapi import tflite
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)

    meta = json.load(open(os.path.join(run["exported"], "tflite", "model.json")))
    assert meta["input_size"] == [128, 128] and meta["labels"] == {"1": "Mass", "2": "Nodule"}
    assert meta["scale"] == pytest.approx([2 / 255] * 3) and meta["offset"] == pytest.approx([-1] * 3)
    assert meta["check"]["compared"] == 20 and meta["check"]["max_box_difference"] < tflite.BOX_TOLERANCE
    detector = tflite.TFLiteDetector(os.path.join(run["exported"], "tflite"))
    saved = tf.saved_model.load(os.path.join(run["exported"], "saved_model")).signatures["serving_default"]
    names = open(os.path.join(run["dataset"], "splits", "val.txt")).read().split()
    assert names
    for name in names:
        pixels = np.asarray(Image.open(os.path.join(run["images"], name)).convert("RGB"))
        expected = {k: v.numpy() for k, v in saved(input_tensor=tf.constant(pixels[None])).items()}
        got = tflite.compare(detector(pixels), expected)
        assert got["compared"] == 20, name
        assert got["max_box_difference"] < 1e-3 and got["max_score_difference"] < 1e-3, (name, got)


def test_calibrate_then_detect_uses_the_operating_point(run, tmp_path, capsys):
    """Calibrate on val for an FP budget, then detect without --min-score: detect must keep
    exactly the detections of the chosen point on the FROC curve.

    100 steps from scratch can leave the model scoring every image alike, so the budget is read
    off the model's own curve (a point halfway down it), which any model can meet."""
    import shutil

    from medtfod.evaluation.metrics import froc_curve, read_detections_csv, read_ground_truth
    gt = read_ground_truth(run["dataset"], "val")
    every = tmp_path / "every"
    assert main(["detect", "--model", run["exported"], "--dataset", run["dataset"], "--split", "val",
                 "--out", str(every), "--min-score", "0", "--no-draw", "-q"]) == 0
    full = froc_curve(gt, read_detections_csv(str(every / "detections.csv")), 0.1)
    budget = full["avg_fp"][len(full["avg_fp"]) // 2]
    chosen = max(k for k, fp in enumerate(full["avg_fp"]) if fp <= budget)  # the lowest threshold within it
    exported = tmp_path / "exported"
    shutil.copytree(run["exported"], exported)
    assert main(["calibrate", "--model", str(exported), "--dataset", run["dataset"], "--split", "val",
                 "--fp-per-image", repr(budget), "-q"]) == 0
    point = json.load(open(exported / "operating_point.json"))
    assert point["min_score"] == pytest.approx(full["threshold"][chosen])
    assert point["avg_fp"] == pytest.approx(full["avg_fp"][chosen]) and point["avg_fp"] <= budget
    assert 0 < point["min_score"] <= 1
    out = tmp_path / "detected"
    assert main(["detect", "--model", str(exported), "--dataset", run["dataset"], "--split", "val",
                 "--out", str(out), "-q"]) == 0
    assert "from the calibrated operating point" in capsys.readouterr().out
    with open(out / "detections.csv", newline="") as f:
        kept = list(csv.DictReader(f))
    assert kept and all(float(r["score"]) >= point["min_score"] - 1e-6 for r in kept)
    # the same detections as the metrics of the val split at that threshold say
    curve = froc_curve(gt, read_detections_csv(str(out / "detections.csv")), 0.1)
    assert curve["avg_fp"][-1] == pytest.approx(point["avg_fp"])
    assert curve["sensitivity"][-1] == pytest.approx(point["sensitivity"])
    # A whole-image point does not hold for tiled scores; calibrate --tile runs the model tiled
    # and its point is the one detect --tile (with the same tiling) then uses.
    from medtfod.inference.model import ExportedModel
    tile = ["--tile", str(ExportedModel(str(exported)).input_pixels), "--tile-overlap", "0.5"]
    assert main(["detect", "--model", str(exported), "--dataset", run["dataset"], "--split", "val",
                 "--out", str(tmp_path / "tiled0"), "--no-draw", "-q", *tile]) == 0
    assert "the default (the calibrated operating point was chosen on whole images" in capsys.readouterr().out
    assert main(["calibrate", "--model", str(exported), "--dataset", run["dataset"], "--split", "val",
                 "--fp-per-image", repr(budget), "-q", *tile]) == 0
    tiled_point = json.load(open(exported / "operating_point.json"))
    assert tiled_point["tiling"] == {"tile": int(tile[1]), "overlap": 0.5, "merge": "nms", "full": False}
    assert tiled_point["avg_fp"] <= budget
    assert main(["detect", "--model", str(exported), "--dataset", run["dataset"], "--split", "val",
                 "--out", str(tmp_path / "tiled"), "--no-draw", "-q", *tile]) == 0
    assert "from the calibrated operating point" in capsys.readouterr().out
    tiled = froc_curve(gt, read_detections_csv(str(tmp_path / "tiled" / "detections.csv")), 0.1)
    assert tiled["avg_fp"][-1] == pytest.approx(tiled_point["avg_fp"])
    assert tiled["sensitivity"][-1] == pytest.approx(tiled_point["sensitivity"])
    assert main(["report", "--model", str(exported), "--dataset", run["dataset"], "--split", "val", "--out",
                 str(tmp_path / "report.html"), "--bootstrap", "0", "-q", *tile]) == 0  # the model runs tiled
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"detected on {tile[1]} px tiles (overlap 0.5, nms merge)" in page
    assert f"score &ge; {tiled_point['min_score']:g}, from {exported}" in page


def test_demo_command(tmp_path):
    """The README's demo command at its defaults (300 images, 600 steps; about 4 minutes on 2
    cores), in a fresh process: `python3 scripts/bootstrap.py demo` on the environment running
    these tests (its install step is skipped: the locks are already installed), or, outside an
    environment bootstrap.py made, the installed `medtfod demo`. Every stage runs, the tutorial
    layout is there, and the model learns: runs on 2 CPU cores gave COCO mAP@0.5 0.988-0.999 on
    the held-out patients; 0.8 leaves room for run-to-run noise and still fails when the data,
    records or config stop teaching anything."""
    import subprocess
    import sys

    from support import REPO
    from support.cli import medtfod
    from medtfod.demo import MODEL_DIR_NAME
    workspace = str(tmp_path / "ws")
    if os.path.isfile(os.path.join(sys.prefix, "medtfod-install.sha256")):
        result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "bootstrap.py"), "demo",
                                 "--workspace", workspace, "-q"], capture_output=True, text=True, timeout=1800,
                                env=dict(os.environ, MEDTFOD_VENV=sys.prefix))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "pip install" not in result.stdout, "bootstrap reinstalled an environment that was up to date"
    else:
        result = medtfod("demo", "--workspace", workspace, "-q", timeout=1800)
    out = result.stdout
    assert "== demo finished ==" in out and "DetectionBoxes_Precision/mAP@.50IOU" in out
    # quiet by default: TensorFlow's and the OD API's own lines go to medtfod.log, not the terminal
    import re
    lines = [l for l in (result.stdout + result.stderr).replace("\r", "\n").splitlines() if l.strip()]
    foreign = [l for l in lines if re.search(r"tensorflow|^(WARNING|INFO|ERROR)|^[EWI]\d{4} |cuInit|^\d{4}-\d\d-\d\d |"
                                            r"Average (Precision|Recall)|index created|Traceback", l)]
    assert len(foreign) <= 5, foreign
    assert not [l for l in lines if re.match(r"^(E |ERROR|E\d{4} )", l) or "cuInit" in l], lines
    assert os.path.getsize(os.path.join(workspace, "medtfod.log")) > 0
    assert os.listdir(tmp_path) == ["ws"]  # the demo writes inside its workspace only
    ws = tmp_path / "ws"
    for sub in ("annotations", "images", "models", "pre-trained-models", "exported-models"):
        assert (ws / sub).is_dir()
    metrics = json.load(open(ws / "models" / MODEL_DIR_NAME / "metrics.json"))["metrics"]
    assert metrics["DetectionBoxes_Precision/mAP@.50IOU"] >= 0.8, metrics
    with open(ws / "detections" / "detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    drawn = [f for f in os.listdir(ws / "detections") if f.endswith(".png")]
    assert rows and {r["image"] for r in rows} <= set(drawn)


def test_fine_tune_from_a_zoo_style_checkpoint(run, tmp_path):
    """Pack the trained export the way the zoo packs its models, import it, restore it through
    the OD API's own fine-tune path, and check the restored weights equal the checkpoint's."""
    import tarfile

    from medtfod.training import pretrained
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    from object_detection import inputs, model_lib_v2
    from object_detection.builders import model_builder
    from object_detection.utils import config_util

    name = "tiny_ssd_coco17_tpu-8"
    archive = tmp_path / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(os.path.join(run["exported"], "checkpoint"), arcname=f"{name}/checkpoint")
        tar.add(os.path.join(run["exported"], "pipeline.config"), arcname=f"{name}/pipeline.config")
    folder = pretrained.import_archive(str(archive), str(tmp_path / "ws"))
    prefix = pretrained.checkpoint_prefix(folder)

    config = str(tmp_path / "finetune.config")
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", run["dataset"], "--out", config,
                 "--steps", "100", "--batch-size", "4", "--image-size", "128", "--checkpoint", prefix]) == 0
    configs = config_util.get_configs_from_pipeline_file(config)
    assert configs["train_config"].fine_tune_checkpoint == prefix.replace("\\", "/")
    model = model_builder.build(model_config=configs["model"], is_training=True)
    dataset = inputs.train_input(configs["train_config"], configs["train_input_config"], configs["model"], model=model)
    model_lib_v2.load_fine_tune_checkpoint(model, prefix, "detection", "V2", True, dataset, False)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    # 'detection' fine-tuning restores the feature extractor (backbone + FPN); the OD API leaves
    # the box/class heads fresh on purpose, so a new set of classes can be learned.
    restored = 0
    for variable in model._feature_extractor.trainable_variables:  # noqa: SLF001
        value = variable.numpy()
        same_shape = [k for k, s in shapes.items() if tuple(s) == value.shape and "OPTIMIZER_SLOT" not in k]
        assert any(np.array_equal(value, reader.get_tensor(k)) for k in same_shape), variable.name
        restored += 1
    assert restored > 100  # the whole backbone, not a few layers (fresh random weights would not match)
    # and `medtfod train` fine-tunes from it
    assert main(["train", "--config", config, "--model-dir", str(tmp_path / "ft"), "-q"]) == 0
    assert any(f.startswith("ckpt-") for f in os.listdir(tmp_path / "ft"))


def test_detect_writes_json_coco_and_image_rows(run):
    rows = read_rows(run)
    data = json.load(open(os.path.join(run["detections"], "detections.json")))
    assert sum(len(im["detections"]) for im in data["images"]) == len(rows)
    first = data["images"][0]["detections"][0]
    assert len(first["box"]) == 4 and all(0 <= v <= 1 for v in first["box_normalized_yxyx"])
    results = json.load(open(os.path.join(run["detections"], "coco_results.json")))
    assert len(results) == len(rows) and {"image_id", "category_id", "score", "bbox"} <= set(results[0])
    with open(os.path.join(run["detections"], "images.csv"), newline="") as f:
        images = list(csv.DictReader(f))
    assert len(images) == 40 and set(images[0]) >= {"image", "detections", "max_score_Mass", "max_score_Nodule", "finding"}


def test_detect_dataset_split_list_file_and_corrupt_image(run, tmp_path, capsys):
    out = tmp_path / "split"
    assert main(["detect", "--model", run["exported"], "--dataset", run["dataset"], "--split", "val",
                 "--out", str(out), "--min-score", "0.0", "--max-per-image", "3", "--classes", "Mass", "-q"]) == 0
    rows = list(csv.DictReader(open(out / "detections.csv")))
    val = open(os.path.join(run["dataset"], "splits", "val.txt")).read().split()
    assert {r["image"] for r in rows} <= set(val) and {r["label"] for r in rows} == {"Mass"}
    assert max(sum(1 for r in rows if r["image"] == name) for name in val) <= 3
    gt = json.load(open(os.path.join(run["dataset"], "coco", "val.json")))
    ann = gt["annotations"][0]
    name = next(im["file_name"] for im in gt["images"] if im["id"] == ann["image_id"])
    x, y, w, h = ann["bbox"]
    drawn = np.asarray(Image.open(out / name)).astype(int)
    original = np.asarray(Image.open(os.path.join(run["images"], name)).convert("RGB")).astype(int)
    changed = (drawn != original).any(axis=-1)
    white = changed & (drawn == 255).all(axis=-1)
    mass_id = next(c["id"] for c in gt["categories"] if c["name"] == "Mass")
    mass = changed & (drawn == colour(mass_id)).all(axis=-1)   # a Mass detection's outline
    # ground truth outlined in white along its left and right edges, within a pixel of where the
    # box is; a Mass detection drawn on top of it (a good one lies right on it) may cover a stretch
    x0, x1, y0, y1 = int(x), int(round(x + w)) - 1, int(y), int(y + h)
    for edge in (x0, x1):
        cols = slice(max(0, edge - 1), edge + 2)
        assert white[y0:y1, cols].any(), (name, edge)
        band = (white | mass)[y0:y1, cols].any(axis=1)
        assert band.mean() > 0.5, (name, edge, band.mean())
    # a list file with a corrupt image: reported, skipped, the batch goes on
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    listing = tmp_path / "list.txt"
    listing.write_text(f"broken.png\n{os.path.join(run['images'], val[0])}\n")
    assert main(["detect", "--model", run["exported"], "--images", str(listing), "--out", str(tmp_path / "l"), "-q"]) == 0
    # named below the folder the listed images share (here the pytest temp root)
    assert re.search(r"skipped \S*broken\.png: ", capsys.readouterr().out)
    per_image = list(csv.DictReader(open(tmp_path / "l" / "images.csv")))
    assert per_image[0]["finding"].startswith("unreadable") and len(per_image) == 2


def md5s(folder):
    import hashlib
    return {os.path.relpath(os.path.join(d, f), folder): hashlib.md5(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(folder) for f in files}


def test_detect_never_writes_over_or_beside_its_inputs(run, tmp_path, capsys):
    """A list file with an absolute path and a '../' path: the drawn copies land inside --out
    under names without the shared root, and the inputs keep their bytes. An --out inside an
    input folder is refused before anything runs."""
    import shutil
    names = sorted(f for f in os.listdir(run["images"]) if f.endswith(".png"))[:2]
    (tmp_path / "in").mkdir()
    shutil.copyfile(os.path.join(run["images"], names[0]), tmp_path / "in" / "a.png")
    shutil.copyfile(os.path.join(run["images"], names[1]), tmp_path / "x.png")
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "list.txt"
    listing.write_text(f"{tmp_path / 'in' / 'a.png'}\n../x.png\n")
    before = md5s(tmp_path)
    out = tmp_path / "out"
    assert main(["detect", "--model", run["exported"], "--images", str(listing), "--out", str(out), "-q"]) == 0
    after = md5s(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out" + os.sep)} == before
    drawn = sorted(p for p in md5s(out) if p.endswith(".png"))
    assert drawn == [os.path.join("in", "a.png"), "x.png"]
    capsys.readouterr()
    assert main(["detect", "--model", run["exported"], "--images", str(tmp_path / "in"),
                 "--out", str(tmp_path / "in" / "detections"), "-q"]) == 1
    assert "is inside the input folder --images" in capsys.readouterr().err
    assert not (tmp_path / "in" / "detections").exists()


def test_detect_on_a_dataset_whose_folder_moved_and_images_are_gone(run, tmp_path):
    """The dataset holds its images' bytes: after moving the dataset and deleting the images
    it was made from, detect --dataset still runs on every image of the split."""
    import shutil
    images = tmp_path / "images"
    shutil.copytree(run["images"], images)
    assert main(["convert", "nih", "--bbox-csv", run["bbox_csv"], "--images", str(images),
                 "--data-entry", run["data_entry"], "--label-map", run["label_map"],
                 "--out", str(tmp_path / "made"), "-q"]) == 0
    os.rename(tmp_path / "made", tmp_path / "moved")
    shutil.rmtree(images)
    out = tmp_path / "det"
    assert main(["detect", "--model", run["exported"], "--dataset", str(tmp_path / "moved"), "--split", "val",
                 "--out", str(out), "--min-score", "0", "-q"]) == 0
    val = (tmp_path / "moved" / "splits" / "val.txt").read_text().split()
    assert val and sorted(f for f in os.listdir(out) if f.endswith(".png")) == sorted(val)
    with open(out / "images.csv", newline="") as f:
        assert all(not row["finding"].startswith("unreadable") for row in csv.DictReader(f))
