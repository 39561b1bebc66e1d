"""A `convert` rerun into its own earlier output never deletes files a user added there (issue 21)."""
import os

import pytest

from medtfod.cli import main
from medtfod.core import atomic
from medtfod.data.convert import LAYOUT

from test_convert import convert_args, tree


@pytest.mark.parametrize("added", ["notes.txt", "voc/notes.txt"])
def test_rerun_refuses_to_delete_user_files(tiny_nih, tmp_path, capsys, added):
    out = tmp_path / "out"
    assert main(convert_args(tiny_nih, out)) == 0
    (out / added).write_text("my notes\n")
    before = tree(out)
    assert main(convert_args(tiny_nih, out)) == 1
    err = capsys.readouterr().err
    assert added in err and str(out) in err and "did not write" in err and len(err.strip().splitlines()) == 1
    assert tree(out) == before and (out / added).read_text() == "my notes\n"
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]  # refused before the work
    os.remove(out / added)
    assert main(convert_args(tiny_nih, out)) == 0  # once moved out, the rerun replaces the output


def test_rerun_replaces_its_own_files(tiny_nih, tmp_path):
    """Files the earlier run wrote and this one does not (another split, fewer shards) go."""
    out = tmp_path / "out"
    assert main(convert_args(tiny_nih, out, "--shard-size", "10")) == 0
    assert "tfrecords/train.record-00001-of-00002" in tree(out)
    assert main(convert_args(tiny_nih, out)) == 0
    assert "tfrecords/train.record-00001-of-00002" not in tree(out)


def test_marker_lists_the_files_written(tiny_nih, tmp_path):
    out = tmp_path / "out"
    assert main(convert_args(tiny_nih, out)) == 0
    listed = (out / atomic.MARKER).read_text().splitlines()
    assert [f for f in tree(out) if f != atomic.MARKER] == listed[2:]


def test_marker_without_a_list_falls_back_to_the_layout():
    """An output written before the marker listed its files: convert's layout decides."""
    present = [".medtfod", "dataset.json", "report.json", "voc/a.xml", "voc/sub/b.xml", "voc/notes.txt",
               "tfrecords/train.record-00000-of-00001", "notes.txt", "splits/train.txt"]
    assert atomic.foreign_files(present, atomic.MARKER_TEXT, LAYOUT) == ["voc/notes.txt", "notes.txt"]
    assert atomic.foreign_files(present, atomic.MARKER_TEXT) == []  # no layout: all medtfod's, as before


def _same_stem_inputs(tmp_path):
    """x.png and x.jpg, each with its own box, in a csv table (and y.png, unrelated)."""
    from PIL import Image
    import numpy as np
    images = tmp_path / "images"
    images.mkdir()
    for name in ("x.png", "x.jpg", "y.png"):
        Image.fromarray(np.full((32, 32), 90, np.uint8)).save(images / name)
    table = tmp_path / "t.csv"
    table.write_text("name,finding,x,y,w,h\nx.png,lesion,1,1,9,9\nx.jpg,lesion,5,5,9,9\ny.png,lesion,2,2,9,9\n")
    return ["convert", "csv", "--table", str(table), "--columns", "filename=name,label=finding,x=x,y=y,w=w,h=h",
            "--images", str(images), "--split", "train=1", "-q"]


def test_same_stem_images_refused_before_writing(tmp_path, capsys):
    """x.png and x.jpg would both be voc/x.xml: one annotation would be lost."""
    out = tmp_path / "out"
    assert main(_same_stem_inputs(tmp_path) + ["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "x.png" in err and "x.jpg" in err and "voc/x.xml" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["images", "t.csv"]


def test_table_names_with_folders_find_their_files(tmp_path, capsys):
    """A table written elsewhere names 'scans/a.png', '../images/scans/b.png' or 'C:\\data\\c.png':
    each is the file of that name under --images when its folders agree (or, for an absolute name,
    when only one file has the name); 'other/a.png' names another file, and stays missing."""
    import json
    from PIL import Image
    import numpy as np
    images = tmp_path / "images"
    (images / "scans").mkdir(parents=True)
    for name in ("scans/a.png", "scans/b.png", "c.png"):
        Image.fromarray(np.full((32, 32), 90, np.uint8)).save(images / name)
    table = tmp_path / "t.csv"
    table.write_text("name,finding,x,y,w,h\nscans/a.png,lesion,1,1,9,9\n../images/scans/b.png,lesion,5,5,9,9\n"
                     "C:\\data\\c.png,lesion,2,2,9,9\nother/a.png,lesion,2,2,9,9\n")
    out = tmp_path / "out"
    assert main(["convert", "csv", "--table", str(table), "--columns", "filename=name,label=finding,x=x,y=y,w=w,h=h",
                 "--images", str(images), "--split", "train=1", "--max-bad", "0.5", "-q", "--out", str(out)]) == 0
    assert sorted((out / "splits" / "train.txt").read_text().split()) == ["a.png", "b.png", "c.png"]
    report = json.loads((out / "report.json").read_text())
    assert [(p["kind"], p["value"]) for p in report["problems"]["items"]] == [("missing_image", "other/a.png")]
    # a dataset of one split: config says so (it said the folder was not convert's)
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", str(out), "--out",
                 str(tmp_path / "p.config")]) == 1
    assert "has no split 'val' (its splits: train)" in capsys.readouterr().err
