"""The two R-CNN families end to end through the real CLI, tiny variants on CPU: train (100
steps; resuming after a kill is tested on the SSD in test_training_loop.py), eval, export, and detect with the
export; Mask R-CNN must produce masks in each. One trained model per family is shared by
the tests of that family (marked slow: several minutes on 2 CPU cores)."""
import csv
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from support import REPO
from support.data import MASKED_SIZE
from support.training import saved_step
from medtfod.cli import main
from medtfod.training.models import TINY_MASK_SIZE, TINY_PROPOSALS

pytestmark = [pytest.mark.slow, pytest.mark.tf]

FAMILIES = {"faster_rcnn_resnet50_v1_640": False, "mask_rcnn_resnet50_v1_640": True}  # model: predicts masks
STEPS = 100       # one block of the OD API's loop
COCO_METRICS = ("Precision/mAP", "Precision/mAP@.50IOU", "Precision/mAP@.75IOU", "Precision/mAP (small)",
                "Precision/mAP (medium)", "Precision/mAP (large)", "Recall/AR@1", "Recall/AR@10",
                "Recall/AR@100", "Recall/AR@100 (small)", "Recall/AR@100 (medium)", "Recall/AR@100 (large)")


def train_once(config, model_dir):
    """`python -m medtfod train` for STEPS steps, -v (the OD API's loss reports in the output)."""
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "medtfod", "train", "--config", config, "--model-dir", model_dir,
                           "--steps", str(STEPS), "-v"], cwd=REPO, env=env, capture_output=True, timeout=900)
    return {"returncode": done.returncode, "output": (done.stdout + done.stderr).decode(errors="replace"),
            "final": saved_step(model_dir)}


@pytest.fixture(scope="module")
def trained(masked_dataset, tmp_path_factory):
    """Each family's tiny config, trained by `python -m medtfod train` in a subprocess.

    The two families train at the same time: much of each run is single-threaded model
    building and tracing, which two CPU cores overlap with the other run's steps."""
    from concurrent.futures import ThreadPoolExecutor

    from medtfod.odapi.runtime import import_tensorflow
    import_tensorflow(verbose=False)  # once, before threads poll checkpoints with it
    runs = {}
    for model in FAMILIES:
        root = tmp_path_factory.mktemp(model)
        runs[model] = {"root": root, "config": str(root / "pipeline.config"), "model": str(root / "model")}
        assert main(["config", "--model", model, "--data", masked_dataset, "--out", runs[model]["config"],
                     "--tiny", "--batch-size", "1", "--steps", str(STEPS)]) == 0
    start = time.monotonic()
    with ThreadPoolExecutor(len(FAMILIES)) as pool:
        futures = {model: pool.submit(train_once, run["config"], run["model"]) for model, run in runs.items()}
        for model, future in futures.items():
            runs[model]["training"] = future.result()
    print(f"both families trained in {time.monotonic() - start:.0f} s")
    return runs


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, trained, masked_dataset):
    """The trained model of one family -> eval -> export -> detect on the val split."""
    model = request.param
    run = trained[model]
    assert run["training"]["returncode"] == 0, run["training"]["output"][-3000:]
    paths = {k: str(run["root"] / k) for k in ("exported", "detections")}
    seconds, start = {}, time.monotonic()
    assert main(["eval", "--config", run["config"], "--model-dir", run["model"], "-q"]) == 0
    seconds["eval"], start = time.monotonic() - start, time.monotonic()
    assert main(["export", "--config", run["config"], "--model-dir", run["model"],
                 "--out", paths["exported"], "-q"]) == 0
    seconds["export"], start = time.monotonic() - start, time.monotonic()
    # the best detection of each image, whatever its score
    assert main(["detect", "--model", paths["exported"], "--dataset", masked_dataset, "--split", "val",
                 "--out", paths["detections"], "--min-score", "0.0", "--max-per-image", "1", "-q"]) == 0
    seconds["detect"] = time.monotonic() - start
    print(f"{model}: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return {"model": model, "masks": FAMILIES[model], "dataset": masked_dataset, "config": run["config"],
            "model_dir": run["model"], "training": run["training"], **paths}


def val_images(dataset):
    with open(os.path.join(dataset, "splits", "val.txt"), encoding="utf-8") as f:
        return f.read().split()


def image_path(dataset, name):
    """The source image of a dataset image (the VOC XML's <path>, as `detect --dataset` reads it)."""
    import defusedxml.ElementTree as DET
    return DET.parse(os.path.join(dataset, "voc", os.path.splitext(name)[0] + ".xml")).getroot().findtext("path")


def read_rows(detections):
    with open(os.path.join(detections, "detections.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_training_reports_the_familys_losses(family):
    training = family["training"]
    assert training["final"] == STEPS
    # the loss it reported has a mask term exactly when the family predicts masks (3 stages)
    assert ("'Loss/BoxClassifierLoss/mask_loss'" in training["output"]) == family["masks"]
    assert "'Loss/RPNLoss/objectness_loss'" in training["output"]


def test_eval_writes_box_and_mask_metrics(family):
    with open(os.path.join(family["model_dir"], "metrics.json"), encoding="utf-8") as f:
        result = json.load(f)
    assert result["step"] == STEPS
    metrics = result["metrics"]
    assert {k for k in metrics if k.startswith("DetectionBoxes_")} == {f"DetectionBoxes_{m}" for m in COCO_METRICS}
    masks = {k for k in metrics if k.startswith("DetectionMasks_")}
    assert masks == ({f"DetectionMasks_{m}" for m in COCO_METRICS} if family["masks"] else set())
    # the val split has boxes (and masks) of both classes, so the overall figures are real, not -1
    for prefix in ("DetectionBoxes_", "DetectionMasks_") if family["masks"] else ("DetectionBoxes_",):
        for m in ("Precision/mAP", "Precision/mAP@.50IOU", "Recall/AR@100"):
            assert 0.0 <= metrics[prefix + m] <= 1.0, (prefix + m, metrics[prefix + m])
    assert np.isfinite(metrics["Loss/total_loss"]) and metrics["Loss/total_loss"] > 0
    assert ("Loss/BoxClassifierLoss/mask_loss" in metrics) == family["masks"]


def test_export_returns_masks_and_matches_detect(family):
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    for name in ("saved_model/saved_model.pb", "label_map.pbtxt", "pipeline.config"):
        assert os.path.isfile(os.path.join(family["exported"], name)), name
    model = tf.saved_model.load(os.path.join(family["exported"], "saved_model"))
    rows = {row["image"]: row for row in read_rows(family["detections"])}
    for name in val_images(family["dataset"]):
        pixels = np.asarray(Image.open(image_path(family["dataset"], name)).convert("RGB"))
        result = {k: v.numpy() for k, v in model(tf.constant(pixels[None])).items()}
        n = int(result["num_detections"][0])
        assert 1 <= n <= TINY_PROPOSALS
        assert ("detection_masks" in result) == family["masks"]
        if family["masks"]:
            # box-relative masks, one per detection, at the tiny variant's mask size
            assert result["detection_masks"].shape == (1, result["detection_boxes"].shape[1],
                                                       TINY_MASK_SIZE, TINY_MASK_SIZE)
            assert 0.0 <= result["detection_masks"].min() and result["detection_masks"].max() <= 1.0
        # detect kept the best detection of each image: the same score and box (pixels)
        row = rows[name]
        assert float(row["score"]) == pytest.approx(float(result["detection_scores"][0, 0]), abs=1e-5)
        ymin, xmin, ymax, xmax = result["detection_boxes"][0, 0] * MASKED_SIZE
        assert [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")] == pytest.approx([xmin, ymin, xmax, ymax],
                                                                                         abs=0.01)


def test_detect_writes_tables_and_drawn_images(family):
    val = val_images(family["dataset"])
    rows = read_rows(family["detections"])
    assert sorted(row["image"] for row in rows) == sorted(val)  # --min-score 0 --max-per-image 1
    assert {row["label"] for row in rows} <= {"cyst", "nodule"}
    with open(os.path.join(family["detections"], "detections.json"), encoding="utf-8") as f:
        listed = json.load(f)["images"]
    assert sorted(im["image"] for im in listed) == sorted(val)
    assert all(len(im["detections"]) == 1 and im["error"] is None for im in listed)
    drawn = sorted(f for f in os.listdir(family["detections"]) if f.endswith(".png"))
    assert drawn == sorted(val)


def blended_pixels(drawn, original, colour):
    """Pixels of `drawn` that are a blend of the grey `original` and `colour` (a mask overlay),
    as opposed to pure colour (box outlines, caption backgrounds), colour darkened by black
    caption text, or the white ground truth."""
    grey, colour = original.astype(float), np.asarray(colour, float)
    towards = colour - grey                                       # H x W x 3
    alpha = ((drawn - grey) * towards).sum(-1) / np.maximum((towards ** 2).sum(-1), 1)  # least squares
    residual = np.abs(grey + alpha[..., None] * towards - drawn).max(-1)
    return (alpha > 0.15) & (alpha < 0.85) & (residual <= 2.5)


def test_detect_draws_masks_inside_their_boxes(family, tmp_path):
    """`detect` blends each detection's box-relative mask into its drawn copy, inside the box
    and the right way round; Faster R-CNN's copies show outlines and captions only.

    After 200 steps from scratch the tiny Mask R-CNN's masks are all within a hair of 0.5 (its
    mask head has hardly trained) and its boxes are small, often under their caption, so the
    export's output is edited before detect sees it: the best detection's box becomes the
    image's centre (32 x 32 px) and its mask the box's left half. What is tested is the way from
    the export's `detection_boxes` and `detection_masks` (real tensors, shapes and dtypes) to
    the pixels."""
    from medtfod.inference.detect import DetectOutputs, detect
    from medtfod.inference.predictor import PredictOptions
    from medtfod.inference.draw import colour
    from medtfod.core.labelmap import read_label_map
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    model = tf.saved_model.load(os.path.join(family["exported"], "saved_model"))
    box = np.array([0.25, 0.25, 0.75, 0.75]) * MASKED_SIZE          # ymin, xmin, ymax, xmax in pixels
    left = TINY_MASK_SIZE // 2 + 1                                  # mask columns set to 1

    def edited(images):
        result = {k: v.numpy() for k, v in model(images).items()}
        result["detection_boxes"][0, 0] = box / MASKED_SIZE
        if "detection_masks" in result:
            result["detection_masks"][0, 0] = 0.0
            result["detection_masks"][0, 0, :, :left] = 1.0
        return {k: tf.constant(v) for k, v in result.items()}

    out = str(tmp_path / "drawn")
    detect(family["exported"], out, dataset=family["dataset"], split="val",
           options=PredictOptions(min_score=0.0, max_per_image=1),
           outputs=DetectOutputs(quiet=True),
           detect_fns=[edited])
    label_map = read_label_map(os.path.join(family["exported"], "label_map.pbtxt"))
    rows = {row["image"]: row for row in read_rows(out)}
    ymin, xmin, ymax, xmax = box
    for name in val_images(family["dataset"]):
        row = rows[name]
        assert [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")] == pytest.approx([xmin, ymin, xmax, ymax])
        drawn = np.asarray(Image.open(os.path.join(out, name)).convert("RGB")).astype(float)
        original = np.asarray(Image.open(image_path(family["dataset"], name)).convert("RGB")).astype(float)
        assert drawn.shape == original.shape == (MASKED_SIZE, MASKED_SIZE, 3)
        ys, xs = np.nonzero(blended_pixels(drawn, original, colour(label_map.ids[row["label"]])))
        if not family["masks"]:
            assert len(xs) == 0, name
            continue
        # the left half of the box, its full height, less what outlines and captions cover
        right = xmin + (xmax - xmin) * left / TINY_MASK_SIZE
        assert ((xs >= xmin) & (xs < right + 1) & (ys >= ymin) & (ys < ymax)).all(), name
        assert len(xs) >= 0.5 * (right - xmin) * (ymax - ymin), name
        assert ys.max() - ys.min() >= 0.8 * (ymax - ymin), name
    # detections.json and coco_results.json carry the same mask as COCO RLE, on the whole image
    from pycocotools import mask as coco_mask
    images = json.load(open(os.path.join(out, "detections.json")))["images"]
    results = json.load(open(os.path.join(out, "coco_results.json")))
    assert len(results) == len(images)
    for entry, result in zip(images, results):
        found = entry["detections"][0]
        assert ("mask" in found) == ("segmentation" in result) == family["masks"]
        if family["masks"]:
            assert found["mask"] == result["segmentation"]
            bitmap = coco_mask.decode({"size": found["mask"]["size"], "counts": found["mask"]["counts"].encode()})
            ys, xs = np.nonzero(bitmap)
            right = xmin + (xmax - xmin) * left / TINY_MASK_SIZE
            assert bitmap.shape == (MASKED_SIZE, MASKED_SIZE)
            assert (xs.min(), ys.min(), ys.max() + 1) == (xmin, ymin, ymax) and abs(xs.max() + 1 - right) <= 1.5


def test_export_to_onnx_matches_the_saved_model(family, tmp_path):
    """`to_onnx` on a copy of the family's export (image_tensor, so exported again with
    float_image_tensor from its checkpoint; parity checked on 2 val images), then `detect --runtime
    onnx` on the val split: the same best detection per image as the SavedModel's, to 1e-3 (measured:
    1e-6 in the table)."""
    import shutil

    from medtfod.inference.model import ExportedModel
    copy = str(tmp_path / "exported")
    shutil.copytree(family["exported"], copy)
    parity = ExportedModel(copy).to_onnx(count=2)["parity"]
    assert parity["passed"] and parity["counts_equal"] and parity["images"] == 2
    assert parity["max_box_difference"] <= 1e-3 and parity["max_score_difference"] <= 1e-3
    out = str(tmp_path / "detections")
    assert main(["detect", "--model", copy, "--runtime", "onnx", "--dataset", family["dataset"], "--split", "val",
                 "--out", out, "--min-score", "0.0", "--max-per-image", "1", "--no-draw", "-q"]) == 0
    saved, onnx = read_rows(family["detections"]), read_rows(out)
    assert [(r["image"], r["label"]) for r in onnx] == [(r["image"], r["label"]) for r in saved] and saved
    for a, b in zip(saved, onnx):
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-3)
        assert [float(a[k]) for k in ("xmin", "ymin", "xmax", "ymax")] == \
            pytest.approx([float(b[k]) for k in ("xmin", "ymin", "xmax", "ymax")], abs=1e-3 * MASKED_SIZE)
