import os

import pytest

from medtfod.core.errors import UserError
from medtfod.core.problems import Problems
from medtfod.data.readers.csv_table import parse_columns, read_csv_table

from support import write


def test_xywh_and_negatives(tmp_path):
    path = write(tmp_path / "t.csv", "img,cls,bx,by,bw,bh,pid\n"
                 "a.png,nodule,1,2,3,4,P1\n"
                 "a.png,nodule,10,20,5,5,P1\n"
                 "b.png,,,,,,P2\n"
                 "c,mass,0,0,2,2,P3\n")
    problems = Problems()
    table = read_csv_table(path, parse_columns("filename=img,label=cls,x=bx,y=by,w=bw,h=bh,patient=pid"), problems)
    assert [(r.image, r.label, r.box.to_xywh(), r.line) for r in table.rows] == [
        ("a.png", "nodule", (1, 2, 3, 4), 2), ("a.png", "nodule", (10, 20, 5, 5), 3), ("c", "mass", (0, 0, 2, 2), 5)]
    assert table.negatives == ["b.png"]
    assert table.patients == {"a.png": "P1", "b.png": "P2", "c": "P3"}
    assert not problems.items


def test_corners_fixed_label_and_bad_rows(tmp_path):
    path = write(tmp_path / "t.csv", "file,x0,y0,x1,y1\na.jpg,1,2,3,4\nb.jpg,5,x,7,8\nc.jpg,5,5,5,8\n")
    problems = Problems()
    table = read_csv_table(path, parse_columns("filename=file,xmin=x0,ymin=y0,xmax=x1,ymax=y1"), problems, label="nodule")
    assert [(r.image, r.label, (r.box.xmin, r.box.ymax)) for r in table.rows] == [("a.jpg", "nodule", (1, 4))]
    assert [(p.line, p.kind, p.value) for p in problems.items] == [(3, "bad_number", "x"), (4, "bad_box", "5,5,5,8")]


@pytest.mark.parametrize("spec, message", [
    ("filename=a,x=b,y=c,w=d", "either x=,y=,w=,h="),
    ("filename=a,x=b,y=c,w=d,h=e,xmin=f,ymin=g,xmax=h,ymax=i", "either"),
    ("file=a,x=b,y=c,w=d,h=e", "unknown key 'file'"),
    ("filename", "not KEY=COLUMN"),
])
def test_bad_column_specs(spec, message):
    with pytest.raises(UserError, match=message):
        parse_columns(spec)


def test_missing_column_and_label(tmp_path):
    path = write(tmp_path / "t.csv", "file,x,y,w,h\n")
    with pytest.raises(UserError, match="'cls'.* not in the header"):
        read_csv_table(path, parse_columns("filename=file,label=cls,x=x,y=y,w=w,h=h"), Problems())
    with pytest.raises(UserError, match="no label column"):
        read_csv_table(path, parse_columns("filename=file,x=x,y=y,w=w,h=h"), Problems())


def test_raccoon_tables(shared_data):
    folder = os.path.join(shared_data, "tf_od_api", "raccoon_dataset")
    columns = parse_columns("filename=filename,label=class,xmin=xmin,ymin=ymin,xmax=xmax,ymax=ymax")
    problems = Problems()
    train = read_csv_table(os.path.join(folder, "train_labels.csv"), columns, problems)
    test = read_csv_table(os.path.join(folder, "test_labels.csv"), columns, problems)
    lines = sum(len(open(os.path.join(folder, f)).read().strip().splitlines()) - 1
                for f in ("train_labels.csv", "test_labels.csv"))
    assert len(train.rows) + len(test.rows) == lines and not problems.items
    assert {r.label for r in train.rows} == {"raccoon"}


def test_convert_csv_matches_stems(tmp_path):
    """`convert csv` end to end, with a table naming images without their extension."""
    import json
    import numpy as np
    from PIL import Image
    from medtfod.cli import main
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        noise = np.random.default_rng(i).integers(0, 256, (40, 50), dtype=np.uint8)  # 6 different pictures
        Image.fromarray(noise).save(images / f"case_{i}.png")
    rows = "".join(f"case_{i},lesion,{i},{i},10,12,{i // 2}\n" for i in range(5))
    table = write(tmp_path / "t.csv", "name,finding,x,y,w,h,patient\n" + rows + "case_5,,,,,,2\n")
    out = tmp_path / "out"
    assert main(["convert", "csv", "--table", table, "--columns",
                 "filename=name,label=finding,x=x,y=y,w=w,h=h,patient=patient",
                 "--images", str(images), "--out", str(out), "--split", "train=0.67,val=0.33", "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 6 and report["boxes"] == 5 and report["classes"] == ["lesion"]
    assert report["problems"]["count"] == 0
    assert sum(s["patients"] for s in report["splits"].values()) == 3
    names = (out / "splits" / "train.txt").read_text().split() + (out / "splits" / "val.txt").read_text().split()
    assert sorted(names) == [f"case_{i}.png" for i in range(6)]


def test_a_table_without_boxes_converts_with_a_warning_and_config_says_why(tmp_path, capsys):
    """Only negatives: convert writes the dataset (a test set of images without findings is
    legitimate) but warns that nothing can train on it; config's error names the cause."""
    import numpy as np
    from PIL import Image
    from medtfod.cli import main
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 50), dtype=np.uint8)).save(images / f"n{i}.png")
    table = write(tmp_path / "t.csv", "file,label,x0,y0,x1,y1\n" + "".join(f"n{i}.png,,,,,\n" for i in range(3)))
    out = tmp_path / "out"
    assert main(["convert", "csv", "--table", table, "--columns",
                 "filename=file,label=label,xmin=x0,ymin=y0,xmax=x1,ymax=y1", "--images", str(images),
                 "--out", str(out), "--split", "train=1", "-q"]) == 0
    assert "the table has no boxes, so label_map.pbtxt has no classes" in capsys.readouterr().out
    assert main(["config", "--data", str(out), "--model", "ssd_mobilenet_v2_fpnlite_320",
                 "--out", str(tmp_path / "p.config")]) == 1
    assert "converted from a table without boxes has no classes" in capsys.readouterr().err
