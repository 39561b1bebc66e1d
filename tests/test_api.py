"""The public Python API: `Dataset`, `ExportedModel.predict`, `evaluate`, against what the
commands write for the same data."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from medtfod import Dataset, ExportedModel, MetricsOptions, UserError, evaluate
from medtfod.cli import main


def test_importing_medtfod_is_light_and_exports_the_api():
    code = ("import sys, medtfod; heavy = [m for m in ('numpy', 'PIL', 'tensorflow') if m in sys.modules]; "
            "from medtfod import Dataset, ExportedModel, evaluate; print(heavy, Dataset.__name__, ExportedModel.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] Dataset ExportedModel"
    import medtfod
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        medtfod.Nope


def test_dataset_knows_its_layout(tiny_dataset, tmp_path, monkeypatch):
    from medtfod.data import manifest
    from medtfod.data.readers.detections import read_ground_truth
    data = Dataset(tiny_dataset)
    assert data.splits == ["train", "val"]
    assert data.label_map.names == data.label_names and len(data.label_names) == 2
    val = data.images("val")
    assert [e.name for e in val] == sorted(e.name for e in manifest.load(tiny_dataset).split("val"))
    assert data.ground_truth("val") == read_ground_truth(tiny_dataset, "val")
    assert set(data.patients("val")) == {e.name for e in val}
    first = val[0]
    assert data.image(first.name).size == (first.width, first.height)
    assert data.image_bytes(first.name)[:8] == b"\x89PNG\r\n\x1a\n"
    assert data.tfrecords("val") and all(os.path.isfile(p) for p in data.tfrecords("val"))
    with pytest.raises(UserError, match="has no split 'test'; its splits: train, val"):
        data.images("test")
    with pytest.raises(UserError, match="dataset folder not found"):
        Dataset(tmp_path / "nowhere")
    moved = tmp_path / "moved"  # a relocated dataset reads its images from its own records
    shutil.copytree(tiny_dataset, moved)
    monkeypatch.chdir(tmp_path)
    again = Dataset("moved")
    assert again.image_bytes(first.name) == data.image_bytes(first.name)
    assert again.ground_truth("val") == data.ground_truth("val")


@pytest.fixture(scope="module")
def blob_model(tmp_path_factory):
    """A stand-in export (`test_ensemble.blob_finder`: one box around the bright pixels, score
    0.9) and three images."""
    from medtfod.odapi.runtime import import_tensorflow
    from support.inference import blob_finder
    tf = import_tensorflow(verbose=False)
    root = tmp_path_factory.mktemp("api_model")
    module = blob_finder(tf)
    tf.saved_model.save(module, str(root / "export" / "saved_model"), signatures=module.__call__.get_concrete_function())
    (root / "export" / "label_map.pbtxt").write_text('item { id: 1 name: "Mass" }\n')
    images = root / "images"
    images.mkdir()
    arrays = {}
    for name, (y0, y1, x0, x1) in {"a.png": (30, 60, 70, 130), "b.png": (20, 50, 10, 60), "c.png": (5, 90, 150, 190)}.items():
        pixels = np.zeros((100, 200), np.uint8)
        pixels[y0:y1, x0:x1] = 255
        Image.fromarray(pixels).save(images / name)
        arrays[name] = pixels
    return {"export": str(root / "export"), "images": str(images), "arrays": arrays}


@pytest.mark.tf
def test_predict_on_paths_arrays_and_pil_gives_detects_boxes(blob_model, tmp_path):
    model = ExportedModel(os.path.join(blob_model["export"], "saved_model"))  # the SavedModel folder works too
    assert model.path == blob_model["export"] and model.label_map.names == ["Mass"]
    assert model.min_score() == (0.5, "the default (run medtfod calibrate to choose one for your data)")
    assert model.info == {"family": "unknown", "input": "unknown", "step": None}
    assert main(["detect", "--model", blob_model["export"], "--images", blob_model["images"], "--out",
                 str(tmp_path / "cli"), "--min-score", "0", "-q"]) == 0
    with open(tmp_path / "cli" / "detections.csv", newline="") as f:
        rows = [(r["image"], r["label"], float(r["score"]), *(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")))
                for r in csv.DictReader(f)]
    from_folder = model.predict(blob_model["images"], min_score=0)
    assert len(from_folder) == 3 and [p.name for p in from_folder] == ["a.png", "b.png", "c.png"]
    np.testing.assert_allclose([r[2:] for r in from_folder.to_rows()], [r[2:] for r in rows], atol=1e-4)
    assert [r[:2] for r in from_folder.to_rows()] == [r[:2] for r in rows]
    np.testing.assert_allclose(from_folder[0].boxes, [[70, 30, 130, 60]], atol=1e-4)
    assert from_folder[0].labels == ["Mass"]
    paths = [os.path.join(blob_model["images"], n) for n in ("a.png", "b.png", "c.png")]
    arrays = list(blob_model["arrays"].values())
    pil = [Image.fromarray(a) for a in arrays]
    for other in (model.predict(paths, min_score=0), model.predict(arrays, min_score=0), model.predict(pil)):
        np.testing.assert_allclose([r[2:] for r in other.to_rows()], [r[2:] for r in rows], atol=1e-4)
    assert model.predict(arrays, min_score=0.95).to_rows() == []  # the stand-in scores 0.9
    drawn = np.asarray(from_folder[0].draw())
    assert drawn.shape == (100, 200, 3) and (drawn[30, 70:130] != drawn[30, 0]).any()  # the box outline is drawn
    # save() writes what detect writes, byte for byte
    from_folder.save(str(tmp_path / "api"))
    for name in ("detections.csv", "detections.json", "coco_results.json", "images.csv", "a.png", "b.png"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name


@pytest.mark.tf
def test_predict_reports_bad_input_per_image(blob_model, tiny_dataset):
    model = ExportedModel(blob_model["export"])
    bad = model.predict([np.zeros((10, 10), np.float32), blob_model["arrays"]["a.png"]], min_score=0)
    assert "must be uint8" in bad[0].error and bad[0].detections == [] and bad[1].error is None
    with pytest.raises(UserError, match="needs split="):
        model.predict(Dataset(tiny_dataset))
    with pytest.raises(UserError, match="no SavedModel"):
        ExportedModel(blob_model["images"])


def test_evaluate_equals_the_metrics_command(tiny_nih, tiny_dataset, tmp_path):
    val = {e.name for e in Dataset(tiny_dataset).images("val")}
    rows = [r for r in list(csv.reader(open(tiny_nih["bbox_csv"])))[1:] if r[0] in val]
    dets = tmp_path / "detections.csv"
    rng = np.random.default_rng(0)
    with open(dets, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "score", "xmin", "ymin", "xmax", "ymax"])
        for image, label, x, y, bw, bh in rows:  # a noisy detector: shifted boxes, random scores, a miss or two
            x, y, bw, bh = map(float, (x, y, bw, bh))
            dx = float(rng.normal(0, min(3, bw / 4)))
            w.writerow([image, label, f"{rng.uniform(0.2, 1):.6f}", f"{x + dx:.2f}", f"{y:.2f}", f"{x + bw + dx:.2f}",
                        f"{y + bh:.2f}"])
    out = tmp_path / "m.json"
    assert main(["metrics", "--detections", str(dets), "--ground-truth", tiny_dataset, "--split", "val",
                 "--out", str(out), "--bootstrap", "20"]) == 0
    expected = json.loads(out.read_text())
    assert json.loads(json.dumps(evaluate(tiny_dataset, "val", str(dets), options=MetricsOptions(bootstrap=20)))) == expected
    from medtfod.data.readers.detections import read_detections_csv
    assert json.loads(json.dumps(evaluate(Dataset(tiny_dataset), "val", read_detections_csv(str(dets)),
                                          options=MetricsOptions(bootstrap=20)))) == expected


def test_dataset_convert_writes_what_the_convert_command_writes(tiny_nih, tiny_dataset, tmp_path):
    data = Dataset.convert("nih", tiny_nih["images"], str(tmp_path / "data"), bbox_csv=tiny_nih["bbox_csv"],
                           data_entry=tiny_nih["data_entry"], label_map=tiny_nih["label_map"])
    assert isinstance(data, Dataset) and data.path == str(tmp_path / "data")
    ours = sorted(os.path.relpath(os.path.join(d, f), data.path) for d, _, fs in os.walk(data.path) for f in fs)
    theirs = sorted(os.path.relpath(os.path.join(d, f), tiny_dataset) for d, _, fs in os.walk(tiny_dataset) for f in fs)
    assert ours == theirs and len(ours) > 10
    for rel in ours:
        with open(os.path.join(data.path, rel), "rb") as a, open(os.path.join(tiny_dataset, rel), "rb") as b:
            assert a.read() == b.read(), rel
    with pytest.raises(UserError, match="never writes over its inputs"):
        Dataset.convert("nih", tiny_nih["images"], tiny_nih["images"], bbox_csv=tiny_nih["bbox_csv"])


@pytest.mark.tf
def test_predict_takes_single_images_and_16_bit_ones(blob_model, tmp_path):
    model = ExportedModel(blob_model["export"])
    gray = blob_model["arrays"]["a.png"]
    expected = [[70, 30, 130, 60]]
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "a16.png")  # a 16-bit PNG (mode I;16)
    with open(os.path.join(blob_model["images"], "a.png"), "rb") as f:
        encoded = f.read()
    singles = [gray, np.stack([gray] * 3, -1), Image.fromarray(gray), encoded, gray.astype(np.uint16) * 257,
               str(tmp_path / "a16.png")]
    for single in singles:
        found = model.predict(single, min_score=0)
        assert len(found) == 1 and found[0].error is None, type(single)
        np.testing.assert_allclose(found[0].boxes, expected, atol=1e-4)
    batch = model.predict(np.stack([np.stack([gray] * 3, -1)] * 2), min_score=0)  # [N, H, W, 3]
    assert len(batch) == 2 and [p.name for p in batch] == ["image0.png", "image1.png"]


@pytest.mark.tf
def test_api_outputs_never_touch_inputs_and_bad_options_are_named(blob_model, tmp_path):
    import medtfod
    images = tmp_path / "images"
    shutil.copytree(blob_model["images"], images)
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    model = ExportedModel(blob_model["export"])
    found = model.predict(str(images), min_score=0)
    with pytest.raises(UserError, match="is the input images"):
        found.save(str(images))
    with pytest.raises(UserError, match="inside the input folder images"):
        found[0].save(str(images / "a.png"))
    with pytest.raises(UserError, match="give a .png or .jpg"):
        found[0].save(str(tmp_path / "a.bmp"))
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before
    found[:2].save(str(tmp_path / "out"))  # a slice is still Predictions
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png", "coco_results.json", "detections.csv",
                                                    "detections.json", "images.csv"]
    for bad, message in ((dict(min_score=1.5), "min_score=1.5"), (dict(min_score="0.3"), "min_score='0.3'"),
                         (dict(batch_size=0), "batch_size=0"), (dict(fuse="vote"), "fuse='vote'")):
        with pytest.raises(UserError, match=message):
            medtfod.PredictOptions(**bad)
    assert medtfod.PredictOptions(tta="hflip", classes="Mass").tta == ("hflip",)
    with pytest.raises(UserError, match="options must be a medtfod.PredictOptions"):
        model.predict(str(images), options={"min_score": 0.3})
    with pytest.raises(UserError, match="no such image file or folder"):
        model.predict(str(tmp_path / "nope.png"))
    with pytest.raises(UserError, match="split='val' is for a dataset"):
        model.predict(str(images), split="val")
    with pytest.raises(UserError, match=r"source 'ddti' takes no 'xml' .*did you mean 'xml_dir'"):
        Dataset.convert("ddti", str(images), str(tmp_path / "d"), xml="x")
    with pytest.raises(UserError, match="unknown source 'dicom'"):
        Dataset.convert("dicom", str(images), str(tmp_path / "d"))
    assert not (tmp_path / "d").exists()


def test_convert_options_made_in_code_get_the_command_lines_checks():
    from medtfod import ConvertOptions
    assert ConvertOptions(folds=3).fractions == {f"fold{k}": pytest.approx(1 / 3) for k in (1, 2, 3)}
    with pytest.raises(UserError, match="add up to 1.8, expected 1"):
        ConvertOptions(fractions={"train": 0.9, "val": 0.9})
    with pytest.raises(UserError, match=r"each must be in \(0, 1\]"):
        ConvertOptions(fractions={"train": 1.2})
    with pytest.raises(UserError, match="folds=3 needs the fractions of fold1, fold2, fold3"):
        ConvertOptions(folds=3, fractions={"train": 0.5, "test": 0.5})


@pytest.mark.tf
def test_detect_again_into_its_out_keeps_only_this_runs_files(blob_model, tmp_path):
    """A second detect over the first one's --out: drawn copies of images no longer in the input go,
    the user's own file stays; a failed rerun removes nothing."""
    import shutil
    out = tmp_path / "out"
    assert main(["detect", "--model", blob_model["export"], "--images", blob_model["images"], "--out", str(out),
                 "-q"]) == 0
    drawn = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".jpg"))
    assert len(drawn) == 3
    (out / "my_notes.txt").write_text("mine")
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    shutil.copy(os.path.join(blob_model["images"], "a.png"), fewer / "a.png")
    assert main(["detect", "--model", str(tmp_path / "missing"), "--images", str(fewer), "--out", str(out), "-q"]) != 0
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".jpg")) == drawn  # nothing lost
    assert main(["detect", "--model", blob_model["export"], "--images", str(fewer), "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".jpg")) == [d for d in drawn if d.startswith("a")]
    assert (out / "my_notes.txt").read_text() == "mine"
    with open(out / "detections.csv", newline="") as f:
        assert {r["image"] for r in csv.DictReader(f)} == {"a.png"}
