"""RetinaNet and CenterNet end to end through the real CLI, tiny variants on CPU: config, train
(100 steps, one block of the OD API's loop), eval, export and detect on the val split of the shared
`masked_dataset`. One run per family, shared by the tests below (marked slow: the two families run
side by side, each its chain of `python -m medtfod` subprocesses; 154 s on 2 CPU cores, 169 s for the file).

TFLite (RetinaNet) and ONNX (both) were checked by hand on these tiny runs, not here, to keep CI
time down: see the `medtfod config` section of the README."""
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from support import REPO
from support.data import MASKED_SIZE
from medtfod.cli import main
from medtfod.training.models import TINY_MAX_DETECTIONS

pytestmark = [pytest.mark.slow, pytest.mark.tf]

STEPS = 100
# model: (the losses its training reports besides Loss/total_loss, a learning rate for 100 steps at batch 1)
FAMILIES = {
    "retinanet_resnet50_v1_fpn_640": ({"Loss/classification_loss", "Loss/localization_loss"}, "0.01"),
    "centernet_resnet50_v1_fpn_512": ({"Loss/object_center", "Loss/box/scale", "Loss/box/offset"}, "0.001"),
}
COCO_METRICS = ("Precision/mAP", "Precision/mAP@.50IOU", "Precision/mAP@.75IOU", "Recall/AR@1", "Recall/AR@10",
                "Recall/AR@100")


def medtfod(*args):
    """`python -m medtfod ARGS` in a subprocess: (exit status, stdout + stderr)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "medtfod", *args], cwd=REPO, env=env, capture_output=True,
                          timeout=900)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def run_family(model, dataset, root):
    """train -> eval -> export -> detect for one family's rendered config; stops at the first failure."""
    paths = {k: str(root / k) for k in ("model", "exported", "detections")}
    paths["config"] = str(root / "pipeline.config")
    steps = [("train", ["train", "--config", paths["config"], "--model-dir", paths["model"], "--steps", str(STEPS)]),
             ("eval", ["eval", "--config", paths["config"], "--model-dir", paths["model"], "-q"]),
             ("export", ["export", "--config", paths["config"], "--model-dir", paths["model"],
                         "--out", paths["exported"], "-q"]),
             # the best detection of each image, whatever its score
             ("detect", ["detect", "--model", paths["exported"], "--dataset", dataset, "--split", "val",
                         "--out", paths["detections"], "--min-score", "0.0", "--max-per-image", "1", "-q"])]
    seconds = {}
    for name, args in steps:
        start = time.monotonic()
        code, output = medtfod(*args)
        seconds[name] = time.monotonic() - start
        if code != 0:
            return dict(paths, failed=name, output=output[-3000:], seconds=seconds)
    return dict(paths, failed=None, seconds=seconds)


@pytest.fixture(scope="module")
def runs(masked_dataset, tmp_path_factory):
    """Both families rendered (--tiny, batch 1), then run side by side: much of each step is
    single-threaded graph building, which two cores overlap with the other family's work."""
    from concurrent.futures import ThreadPoolExecutor
    roots = {}
    for model, (_, rate) in FAMILIES.items():
        roots[model] = tmp_path_factory.mktemp(model)
        assert main(["config", "--model", model, "--data", masked_dataset, "--out", str(roots[model] / "pipeline.config"),
                     "--tiny", "--batch-size", "1", "--steps", str(STEPS), "--learning-rate", rate]) == 0
    start = time.monotonic()
    with ThreadPoolExecutor(len(FAMILIES)) as pool:
        futures = {m: pool.submit(run_family, m, masked_dataset, roots[m]) for m in FAMILIES}
        done = {m: f.result() for m, f in futures.items()}
    print(f"both families trained, evaluated, exported and detected in {time.monotonic() - start:.0f} s: "
          + "; ".join(f"{m}: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items()) for m, r in done.items()))
    return done


@pytest.fixture(params=sorted(FAMILIES))
def family(request, runs, masked_dataset):
    run = runs[request.param]
    assert run["failed"] is None, (run["failed"], run.get("output"))
    return dict(run, name=request.param, losses=FAMILIES[request.param][0], dataset=masked_dataset)


def val_images(dataset):
    with open(os.path.join(dataset, "splits", "val.txt"), encoding="utf-8") as f:
        return f.read().split()


def test_training_history_has_the_familys_losses(family):
    from medtfod.training.history import read_history
    train = read_history(family["model"])["train"]
    losses = {tag for tag in train if tag.startswith("Loss/")}
    assert family["losses"] | {"Loss/total_loss"} <= losses
    # the other family's losses are not there: each config built its own meta-architecture
    others = set().union(*(v[0] for m, v in FAMILIES.items() if m != family["name"]))
    assert not losses & others
    assert max(step for step, _ in train["Loss/total_loss"]) == STEPS
    assert all(np.isfinite(value) for tag in losses for _, value in train[tag])


def test_eval_writes_box_metrics_and_the_familys_losses(family):
    with open(os.path.join(family["model"], "metrics.json"), encoding="utf-8") as f:
        result = json.load(f)
    assert result["step"] == STEPS
    metrics = result["metrics"]
    for m in COCO_METRICS:  # the val split has boxes of both classes: real figures, not -1
        assert 0.0 <= metrics[f"DetectionBoxes_{m}"] <= 1.0, (m, metrics[f"DetectionBoxes_{m}"])
    assert family["losses"] <= set(metrics)
    assert np.isfinite(metrics["Loss/total_loss"]) and metrics["Loss/total_loss"] > 0


def test_export_gives_boxes_inside_the_image_and_detect_tables_match(family):
    from medtfod.odapi import protos
    from medtfod.odapi.runtime import import_tensorflow
    import defusedxml.ElementTree as DET
    tf = import_tensorflow(verbose=False)
    kind = protos.read_pipeline_config(os.path.join(family["exported"], "pipeline.config")).model.WhichOneof("model")
    assert kind == ("center_net" if family["name"].startswith("centernet") else "ssd")
    model = tf.saved_model.load(os.path.join(family["exported"], "saved_model"))
    with open(os.path.join(family["detections"], "detections.csv"), newline="", encoding="utf-8") as f:
        rows = {row["image"]: row for row in csv.DictReader(f)}
    val = val_images(family["dataset"])
    assert sorted(rows) == sorted(val)  # --min-score 0 --max-per-image 1: one row per image
    for name in val:
        source = DET.parse(os.path.join(family["dataset"], "voc", os.path.splitext(name)[0] + ".xml")) \
            .getroot().findtext("path")
        pixels = np.asarray(Image.open(source).convert("RGB"))
        result = {k: v.numpy() for k, v in model(tf.constant(pixels[None])).items()}
        n = int(result["num_detections"][0])
        assert 1 <= n <= TINY_MAX_DETECTIONS
        boxes = result["detection_boxes"][0, :n]
        assert (boxes >= 0).all() and (boxes <= 1).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
        row = rows[name]
        assert row["label"] in {"cyst", "nodule"}
        xmin, ymin, xmax, ymax = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        assert 0 <= xmin < xmax <= MASKED_SIZE and 0 <= ymin < ymax <= MASKED_SIZE, row
        # detect kept the export's best detection: its score and its box in pixels
        assert float(row["score"]) == pytest.approx(float(result["detection_scores"][0, 0]), abs=1e-5)
        y0, x0, y1, x1 = result["detection_boxes"][0, 0] * MASKED_SIZE
        assert [xmin, ymin, xmax, ymax] == pytest.approx([x0, y0, x1, y1], abs=0.01)
