"""`medtfod convert nih` on tiny synthetic data: outputs, bad rows, --strict, atomicity, determinism."""
import filecmp
import json
import os


from medtfod.cli import main

from support import write


def convert_args(data, out, *extra):
    return ["convert", "nih", "--bbox-csv", data["bbox_csv"], "--images", data["images"],
            "--data-entry", data["data_entry"], "--label-map", data["label_map"], "--out", str(out),
            "--split", "train=0.75,val=0.25", "-q", *extra]


def tree(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_outputs(tiny_nih, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(convert_args(tiny_nih, out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 24
    assert report["boxes"] == tiny_nih["boxes"]
    assert report["problems"]["count"] == 0
    assert set(report["splits"]) == {"train", "val"}
    files = tree(out)
    assert "label_map.pbtxt" in files and "splits/train.txt" in files and "splits/val.txt" in files
    assert "tfrecords/train.record-00000-of-00001" in files
    assert sum(f.startswith("voc/") for f in files) == 24
    train = (out / "splits" / "train.txt").read_text().split()
    val = (out / "splits" / "val.txt").read_text().split()
    assert len(train) + len(val) == 24
    patient = lambda name: name.split("_")[0]
    assert not {patient(n) for n in train} & {patient(n) for n in val}
    assert "converted 24 images" in capsys.readouterr().out


def test_rerun_is_byte_identical(tiny_nih, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(convert_args(tiny_nih, a)) == 0
    assert main(convert_args(tiny_nih, b)) == 0
    files = tree(a)
    assert files == tree(b)
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors


def bad_copy(tiny_nih, tmp_path):
    """The tiny table plus four bad rows (lines known) and a table path to match."""
    lines = open(tiny_nih["bbox_csv"], encoding="utf-8").read().splitlines(keepends=True)
    images = sorted({line.split(",")[0] for line in lines[1:]})
    good, other = images[0], images[1]
    bad = [f"{good},Mass,1,2,3\n",                      # missing column
           f"{good},Mass,1,abc,3,4\n",                  # non-numeric coordinate
           f"{other},Mass,50,50,40,40\n",               # outside the 64x64 image
           "99999999_000.png,Mass,1,2,3,4\n"]           # unknown image file
    table = write(tmp_path / "BBox_List_2017.csv", "".join(lines + bad))
    first = len(lines) + 1
    return dict(tiny_nih, bbox_csv=table), first, (good, other)


def test_bad_rows_reported_and_counted(tiny_nih, tmp_path, capsys):
    data, first, dropped = bad_copy(tiny_nih, tmp_path)
    out = tmp_path / "out"
    assert main(convert_args(data, out, "--max-bad", "0.5")) == 0
    report = json.loads((out / "report.json").read_text())
    items = {(p["line"], p["kind"]): p for p in report["problems"]["items"]}
    assert (first, "missing_column") in items
    assert items[(first + 1, "bad_number")]["value"] == "abc"
    assert "extends past the 64x64 image" in items[(first + 2, "bad_box")]["message"]
    assert items[(first + 3, "missing_image")]["value"] == "99999999_000.png"
    assert all(p["file"] == data["bbox_csv"] for p in items.values())
    assert report["problems"]["by_kind"] == {"bad_box": 1, "bad_number": 1, "missing_column": 1, "missing_image": 1}
    # images with a bad row are dropped whole, not kept with a box missing
    assert report["images"] == 22
    kept = (out / "splits" / "train.txt").read_text() + (out / "splits" / "val.txt").read_text()
    assert not any(name in kept for name in dropped)
    assert "skipped: 4 problems" in capsys.readouterr().out


def test_too_many_bad_rows_fail_and_write_nothing(tiny_nih, tmp_path, capsys):
    data, _, _ = bad_copy(tiny_nih, tmp_path)
    out = tmp_path / "out"
    assert main(convert_args(data, out, "--max-bad", "0.01")) == 1
    assert "more than the allowed 1%" in capsys.readouterr().err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_strict_stops_without_output(tiny_nih, tmp_path, capsys):
    data, first, _ = bad_copy(tiny_nih, tmp_path)
    out = tmp_path / "out"
    assert main(convert_args(data, out, "--strict")) == 1
    err = capsys.readouterr().err
    assert f"BBox_List_2017.csv:{first}: expected 6 fields" in err
    assert "Traceback" not in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_failed_run_keeps_previous_output(tiny_nih, tmp_path):
    out = tmp_path / "out"
    assert main(convert_args(tiny_nih, out)) == 0
    before = {f: (out / f).read_bytes() for f in tree(out)}
    data, _, _ = bad_copy(tiny_nih, tmp_path)
    assert main(convert_args(data, out, "--strict")) == 1
    assert {f: (out / f).read_bytes() for f in tree(out)} == before


def test_refuses_to_replace_foreign_folder(tiny_nih, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    assert main(convert_args(tiny_nih, out)) == 1
    assert "not written by medtfod" in capsys.readouterr().err
    assert (out / "thesis.docx").read_text() == "precious"


def test_unknown_label_suggests(tiny_nih, tmp_path):
    lines = open(tiny_nih["bbox_csv"], encoding="utf-8").read()
    table = write(tmp_path / "b.csv", lines.replace(",Nodule,", ",nodules,", 1))
    out = tmp_path / "out"
    assert main(convert_args(dict(tiny_nih, bbox_csv=table), out, "--max-bad", "0.5")) == 0
    report = json.loads((out / "report.json").read_text())
    (item,) = report["problems"]["items"]
    assert item["kind"] == "unknown_label" and "did you mean 'Nodule'" in item["message"]


def test_real_nih_sample(shared_data, tmp_path):
    """The two real NIH PNGs in ../shared with boxes made for them."""
    images = os.path.join(shared_data, "nih_chestxray14", "images")
    table = write(tmp_path / "b.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                  "00000001_000.png,Cardiomegaly,300.5,400.25,420.0,300.0\n"
                  "00000003_000.png,Nodule,100.0,200.0,50.0,60.0\n")
    out = tmp_path / "out"
    assert main(["convert", "nih", "--bbox-csv", table, "--images", images, "--out", str(out), "-q",
                 "--split", "train=0.5,val=0.5"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 2 and report["boxes"] == 2
    assert report["classes"][3] == "Infiltrate"


def test_parallel_equals_serial(tmp_path):
    """Shards written by a process pool are byte-identical to a single-process run."""
    from medtfod.data import demo_data
    data = demo_data.generate(str(tmp_path / "src"), num_images=48, size=48, seed=11)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(convert_args(data, a, "--workers", "1", "--shard-size", "10")) == 0
    assert main(convert_args(data, b, "--workers", "2", "--shard-size", "10")) == 0
    files = tree(a)
    assert files == tree(b) and sum(f.startswith("tfrecords/") for f in files) >= 4  # several shards
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors


def test_real_nih_table_counts(shared_data, tmp_path):
    """The real BBox_List + Data_Entry: 984 boxes on 880 images, 8 classes, nothing skipped.

    Only 2 of the 880 PNGs are in ../shared, so each name gets a blank 1024x1024 PNG (the
    frame the NIH boxes are in); the table, not the pixels, is what is checked here. The blanks
    are all identical, so the duplicate search is turned off (it would keep them in one split)."""
    import io
    import numpy as np
    from PIL import Image
    folder = os.path.join(shared_data, "nih_chestxray14")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1024, 1024), np.uint8)).save(buf, "PNG")
    images = tmp_path / "images"
    for i, name in enumerate(sorted({line.split(",")[0] for line in
                                     open(os.path.join(folder, "BBox_List_2017.csv")).read().splitlines()[1:]})):
        sub = images / f"images_{i % 12 + 1:03d}"     # spread like the NIH download
        sub.mkdir(parents=True, exist_ok=True)
        (sub / name).write_bytes(buf.getvalue())
    out = tmp_path / "out"
    assert main(["convert", "nih", "--bbox-csv", os.path.join(folder, "BBox_List_2017.csv"),
                 "--data-entry", os.path.join(folder, "Data_Entry_2017_v2020.bbox_images.csv"),
                 "--images", str(images), "--out", str(out), "--split", "train=0.7,val=0.1,test=0.2",
                 "--allow-duplicates-across-splits", "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 880 and report["boxes"] == 984 and report["problems"]["count"] == 0
    per_class = {}
    for split in report["splits"].values():
        for label, n in split["boxes"].items():
            per_class[label] = per_class.get(label, 0) + n
    assert per_class == {"Atelectasis": 180, "Cardiomegaly": 146, "Effusion": 153, "Infiltrate": 123,
                         "Mass": 85, "Nodule": 79, "Pneumonia": 120, "Pneumothorax": 98}
    # stratified: every class is in every split
    assert all(len(s["boxes"]) == 8 for s in report["splits"].values())
    patients = {split: {n.split("_")[0] for n in (out / "splits" / f"{split}.txt").read_text().split()}
                for split in ("train", "val", "test")}
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
