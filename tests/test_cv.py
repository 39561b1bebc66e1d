"""`medtfod cv` for real: 2 patient folds of a tiny synthetic set, killed during the second fold,
resumed without retraining the first; out-of-fold detections cover every image once."""
import csv
import json
import os
import signal
import subprocess
import time

import pytest

from support.cli import medtfod, medtfod_script


@pytest.mark.slow
@pytest.mark.tf
def test_cv_is_killed_in_the_second_fold_and_resumes_without_retraining_the_first(tmp_path):
    from medtfod.data import demo_data
    from medtfod.demo import DEMO_OVERRIDES
    data = demo_data.generate(str(tmp_path / "source"), num_images=40, size=128, seed=5)
    dataset, out = tmp_path / "data", tmp_path / "cv"
    medtfod("convert", "nih", "--bbox-csv", data["bbox_csv"], "--images", data["images"], "--data-entry",
            data["data_entry"], "--label-map", data["label_map"], "--out", dataset, "--folds", "2", "-q")
    command = [medtfod_script(), "cv", "--data", str(dataset), "--model", "ssd_mobilenet_v2_fpnlite_320",
               "--out", str(out), "--steps", "100", "--batch-size", "4", "--image-size", "128",
               "--learning-rate", "0.01", "--warmup-steps", "20", "--bootstrap", "20", "-q",
               *[a for k, v in DEMO_OVERRIDES.items() for a in ("--set", f"{k}={v}")]]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    fold2 = out / "fold2" / "model"
    deadline = time.time() + 900
    while time.time() < deadline and first.poll() is None and not list(fold2.glob("ckpt-*.index")):
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()[0].decode(errors="replace")[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # as a power cut would, while fold 2 trains
    first.wait()
    assert (out / "fold1" / "fold.json").is_file() and not (out / "fold2" / "fold.json").exists()
    fold1_files = {p: p.stat().st_mtime_ns for p in (out / "fold1").rglob("*") if p.is_file()}

    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "fold 1/2 (fold1): done earlier" in again.stdout and "== fold 2/2" in again.stdout
    assert "== fold 1/2" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in fold1_files} == fold1_files  # fold 1 untouched: not retrained
    result = json.loads((out / "metrics.json").read_text())
    assert result["folds"] == ["fold1", "fold2"] and result["images"] == 40
    assert {r["trained_on"][0] for r in result["per_fold"].values()} == {"fold1", "fold2"}
    assert result["out_of_fold"]["ci95"]["unit"] == "patient"
    assert set(result["per_fold_mean_sd"]) == {"ap50_mean", "ap10_mean", "froc_mean", "auc", "coco_ap"}
    splits = {fold: set((dataset / "splits" / f"{fold}.txt").read_text().split()) for fold in ("fold1", "fold2")}
    for fold in splits:  # each fold's model detected on its own held-out fold only
        with open(out / fold / "detections" / "detections.csv", newline="") as f:
            assert {row["image"] for row in csv.DictReader(f)} <= splits[fold]
    with open(out / "detections.csv", newline="") as f:
        assert {row["image"] for row in csv.DictReader(f)} == splits["fold1"] | splits["fold2"]
    assert "out of fold" in again.stdout and "mean ± sd" in again.stdout
