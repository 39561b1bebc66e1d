"""One rule for bad rows, for every source: an image with one good and one bad row is dropped
whole (never kept with a finding missing), the problem names it; and empty input is an error."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from medtfod.cli import main

from support import write

SIZE = 64


def png(folder, name):
    """A noise picture of its own for each name: copies (or flat images, which all share one
    perceptual hash) would be kept in one split by convert's duplicate grouping."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(list(name.encode()))
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(os.path.join(folder, name))


def voc_xml(name, objects):
    boxes = "".join(f"<object><name>{label}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                    f"<ymax>{d}</ymax></bndbox></object>" for label, (a, b, c, d) in objects)
    return (f"<annotation><filename>{name}</filename><size><width>{SIZE}</width><height>{SIZE}</height>"
            f"<depth>1</depth></size>{boxes}</annotation>")


def inputs(source, root):
    """(command-line arguments, the image with a good and a bad row) for `source`; the other
    image ('good') has only good rows."""
    images = str(root / "images")
    if source == "nih":
        for name in ("00000001_000.png", "00000002_000.png"):
            png(images, name)
        table = write(root / "bbox.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                      "00000001_000.png,Mass,10,10,20,20\n00000001_000.png,Nodule,30,30,0,5\n"
                      "00000002_000.png,Nodule,5,5,10,10\n")
        return ["--bbox-csv", table, "--images", images], "00000001_000.png"
    if source == "thyroid-csv":
        for name in ("5_1.png", "6_1.png"):
            png(images, name)
        table = write(root / "t.csv", "Image ID,Directory Path,BBox X,BBox Y,BBox Width,BBox Height\n"
                      "5_1,5_1.png,10,10,20,20\n5_1,5_1.png,30,30,0,20\n6_1,6_1.png,5,5,10,10\n")
        return ["--table", table, "--images", images], "5_1.png"
    if source == "csv":
        for name in ("a.png", "b.png"):
            png(images, name)
        table = write(root / "t.csv", "name,finding,x,y,w,h\na.png,lesion,10,10,20,20\na.png,lesion,abc,1,2,2\n"
                      "b.png,lesion,5,5,10,10\n")
        return ["--table", table, "--columns", "filename=name,label=finding,x=x,y=y,w=w,h=h",
                "--images", images], "a.png"
    if source == "voc":
        for name in ("a.png", "b.png"):
            png(images, name)
        os.makedirs(root / "xml")
        write(root / "xml" / "a.xml", voc_xml("a.png", [("lesion", (10, 10, 30, 30)), ("lesion", ("x", 1, 5, 5))]))
        write(root / "xml" / "b.xml", voc_xml("b.png", [("lesion", (5, 5, 15, 15))]))
        return ["--xml-dir", str(root / "xml"), "--images", images], "a.png"
    if source == "coco":
        for name in ("a.png", "b.png"):
            png(images, name)
        data = {"images": [{"id": 1, "file_name": "a.png", "width": SIZE, "height": SIZE},
                           {"id": 2, "file_name": "b.png", "width": SIZE, "height": SIZE}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 30, 0, 20]},
                                {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10]}],
                "categories": [{"id": 1, "name": "lesion"}]}
        return ["--json", write(root / "c.json", json.dumps(data)), "--images", images], "a.png"
    if source == "siim":
        for name in ("a.png", "b.png"):
            png(images, name)
        # column-major runs on a 64x64 image: start offset, length (relative starts)
        table = write(root / "rle.csv", f"ImageId,EncodedPixels\na,{5 * SIZE + 5} 10\na,1 -2\nb,{7 * SIZE + 3} 8\n")
        return ["--rle-csv", table, "--images", images, "--width", str(SIZE), "--height", str(SIZE)], "a.png"
    if source == "ddti":
        from test_ddti import case, mark, region
        os.makedirs(root / "xml")
        for name in ("1_1.jpg", "2_1.jpg"):
            os.makedirs(images, exist_ok=True)
            Image.fromarray(np.full((SIZE, SIZE), 80, np.uint8)).save(os.path.join(images, name))
        square = [(10, 10), (30, 10), (30, 30), (10, 30)]
        write(root / "xml" / "1.xml", case(1, mark(1, [region(square), region([(40, 40), (50, 50)])])))
        write(root / "xml" / "2.xml", case(2, mark(1, [region(square)])))
        return ["--xml-dir", str(root / "xml"), "--images", images], "1_1.jpg"
    raise AssertionError(source)


@pytest.mark.parametrize("source", ["nih", "thyroid-csv", "csv", "voc", "coco", "siim", "ddti"])
def test_an_image_with_one_bad_row_is_dropped_whole(source, tmp_path, capsys):
    args, bad_image = inputs(source, tmp_path)
    out = tmp_path / "out"
    assert main(["convert", source, *args, "--out", str(out), "--split", "train=1", "--max-bad", "0.9",
                 "--workers", "1", "-q"]) == 0
    kept = (out / "splits" / "train.txt").read_text().split()
    assert bad_image not in kept and len(kept) == 1, kept
    assert not (out / "voc" / (os.path.splitext(bad_image)[0] + ".xml")).exists()
    report = json.loads((out / "report.json").read_text())
    assert bad_image in {p["image"] for p in report["problems"]["items"]}
    manifest = json.loads((out / "dataset.json").read_text())
    assert [e["name"] for e in manifest["images"]] == kept


def test_header_only_bbox_list_is_an_error(tmp_path, capsys):
    png(str(tmp_path / "images"), "00000001_000.png")
    table = write(tmp_path / "bbox.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    out = tmp_path / "out"
    assert main(["convert", "nih", "--bbox-csv", table, "--images", str(tmp_path / "images"),
                 "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "bbox.csv" in err and "table is empty" in err and "nothing was written" in err
    assert not out.exists()


def test_a_split_left_empty_is_an_error(tmp_path, capsys):
    """One patient cannot fill train and val: the message names the split and what to change."""
    args, _ = inputs("thyroid-csv", tmp_path)
    table = write(tmp_path / "one.csv", "Image ID,Directory Path,BBox X,BBox Y,BBox Width,BBox Height\n"
                  "6_1,6_1.png,5,5,10,10\n")
    out = tmp_path / "out"
    assert main(["convert", "thyroid-csv", "--table", table, "--images", args[3], "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "split 'val' would have 0 images" in err and "--split train=1" in err and "1 patients" in err
    assert not out.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_strict_stops_at_the_first_problem(workers, tmp_path, capsys, monkeypatch):
    """--strict stops at the first bad image, with one process or several, not after every
    shard is written. Every image looked at is logged to a file (worker processes are forked
    with the patched function), and far fewer than all 80 must have been."""
    from medtfod.data import convert
    seen = tmp_path / "seen.txt"
    original = convert._build_record  # noqa: SLF001

    def logged(item, *args):
        with open(seen, "a") as f:
            f.write(item.image + "\n")
        return original(item, *args)
    monkeypatch.setattr(convert, "_build_record", logged)
    images = tmp_path / "images"
    rows = []
    for i in range(80):
        name = f"{i:08d}_000.png"
        if i != 3:  # image 3 is listed but missing
            png(str(images), name)
        rows.append(f"{name},Mass,10,10,20,20\n")
    table = write(tmp_path / "bbox.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + "".join(rows))
    out = tmp_path / "out"
    assert main(["convert", "nih", "--bbox-csv", table, "--images", str(images), "--out", str(out),
                 "--strict", "--workers", str(workers), "--shard-size", "4", "-q"]) == 1
    err = capsys.readouterr().err
    assert "00000003_000.png" in err and "stopped by --strict" in err
    assert len(seen.read_text().split()) < 40  # image 3 is in the 4th of 20 shards
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out")]


@pytest.mark.parametrize("split, words", [
    ("../../escape=1", "may hold only letters"), ("/tmp/ABS=1", "may hold only letters"), ("a/b=1", "may hold only"),
    ("train=1,val=0", "0 < FRACTION"), ("train=0.8,train=0.2", "named twice")])
def test_split_names_cannot_escape_or_be_empty(split, words, tmp_path, capsys):
    args, _ = inputs("csv", tmp_path)
    assert main(["convert", "csv", *args, "--out", str(tmp_path / "out"), "--split", split, "-q"]) == 1
    assert words in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["images", "t.csv"]  # nothing written anywhere


def test_an_input_label_map_inside_out_is_refused(tmp_path, capsys):
    args, _ = inputs("csv", tmp_path)
    (tmp_path / "out").mkdir()
    label_map = tmp_path / "out" / "label_map.pbtxt"
    label_map.write_text("item { id: 1 name: 'lesion' }\n")
    assert main(["convert", "csv", *args, "--out", str(tmp_path / "out"), "--label-map", str(label_map), "-q"]) == 1
    assert "contains the input --label-map" in capsys.readouterr().err
    assert label_map.read_text() == "item { id: 1 name: 'lesion' }\n"


def test_nih_findings_without_a_box_are_not_negatives(tmp_path):
    """Data_Entry says 'Mass' but BBox_List has no box: the image is left out (an expected skip),
    not trained as an image without findings; 'No Finding' images are negatives."""
    args, _ = inputs("nih", tmp_path)
    for name in ("00000003_000.png", "00000004_000.png"):
        png(str(tmp_path / "images"), name)
    entry = write(tmp_path / "entry.csv", "Image Index,Finding Labels,Follow-up #,Patient ID\n"
                  "00000001_000.png,Mass,0,1\n00000002_000.png,Nodule,0,2\n"
                  "00000003_000.png,Mass|Effusion,0,3\n00000004_000.png,No Finding,0,4\n")
    out = tmp_path / "out"
    assert main(["convert", "nih", *args, "--data-entry", entry, "--out", str(out), "--split", "train=1",
                 "--max-bad", "0.9", "-q"]) == 0
    kept = (out / "splits" / "train.txt").read_text().split()
    assert kept == ["00000002_000.png", "00000004_000.png"]  # 1 has a bad row, 3 a finding without a box
    skips = json.loads((out / "report.json").read_text())["problems"]["expected_skips"]
    assert skips["by_kind"] == {"skipped_unlocalized": 1} and skips["items"][0]["image"] == "00000003_000.png"


def test_an_image_found_twice_is_dropped_not_guessed(tmp_path):
    for folder in ("images", "images/other"):
        png(str(tmp_path / folder), "c.png")  # which c.png does the table mean?
    png(str(tmp_path / "images"), "d.png")
    table = write(tmp_path / "t.csv", "name,finding,x,y,w,h\nc.png,lesion,1,1,9,9\nd.png,lesion,2,2,9,9\n")
    out = tmp_path / "out"
    assert main(["convert", "csv", "--table", table, "--columns", "filename=name,label=finding,x=x,y=y,w=w,h=h",
                 "--images", str(tmp_path / "images"), "--out", str(out), "--split", "train=1", "--max-bad", "0.9",
                 "-q"]) == 0
    assert (out / "splits" / "train.txt").read_text().split() == ["d.png"]
    items = json.loads((out / "report.json").read_text())["problems"]["items"]
    assert [(p["kind"], p["image"]) for p in items] == [("ambiguous_image", "c.png")]


@pytest.mark.parametrize("option, value", [("--shard-size", "0"), ("--max-bad", "nan"), ("--max-bad", "2"),
                                           ("--clip-tolerance", "-3"), ("--workers", "0")])
def test_numeric_options_are_checked(option, value, tmp_path, capsys):
    args, _ = inputs("csv", tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["convert", "csv", *args, "--out", str(tmp_path / "out"), option, value, "-q"])
    assert stop.value.code == 1  # a usage mistake is a user error like any other
    assert f"argument {option}" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_folder_given_as_the_table_is_a_clear_error(tmp_path, capsys):
    args, _ = inputs("csv", tmp_path)
    args[1] = str(tmp_path / "images")
    assert main(["convert", "csv", *args, "--out", str(tmp_path / "out"), "-q"]) == 1
    assert "is a folder; expected a table file" in capsys.readouterr().err
