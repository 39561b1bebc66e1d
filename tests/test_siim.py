"""SIIM-ACR reader: relative column-major RLE, checked against an independent reference encoder."""
import os

import numpy as np
import pytest

from medtfod.core.boxes import Box
from medtfod.core.errors import UserError
from medtfod.core.problems import Problems
from medtfod.data.readers.siim import decode_rle, image_name, read_siim

from support import write

SAMPLE = os.path.join("siim_acr_pneumothorax", "train-rle-sample.kaggle_stage1_sample__JonnoFTW.csv")


def reference_encode(bitmap):
    """SIIM's encoding, written independently: walk pixels column by column (x outer, y inner),
    emit (gap since the previous run's end, run length) pairs."""
    height, width = bitmap.shape
    out, run_start, prev_end, n = [], None, 0, 0
    for x in range(width):
        for y in range(height):
            if bitmap[y, x] and run_start is None:
                run_start = n
            elif not bitmap[y, x] and run_start is not None:
                out += [run_start - prev_end, n - run_start]
                prev_end, run_start = n, None
            n += 1
    if run_start is not None:  # a run reaching the last pixel (Kaggle's mask2rle drops it; we keep it)
        out += [run_start - prev_end, n - run_start]
    return " " + " ".join(map(str, out))


def shapes(width=40, height=30):
    rng = np.random.default_rng(1)
    a = np.zeros((height, width), np.uint8)
    a[3:9, 5:12] = 1           # a rectangle
    a[20:25, 30] = 1           # a vertical line in one column
    a[0, 0] = a[height - 1, width - 1] = 1  # first and last pixel
    b = (rng.random((height, width)) < 0.3).astype(np.uint8)
    return a, b


def test_decode_inverts_reference_encoder():
    for bitmap in shapes():
        decoded = decode_rle(reference_encode(bitmap), width=40, height=30)
        assert decoded.shape == (30, 40) and (decoded == bitmap).all()


def test_column_major_and_relative():
    # pixel offset 1024 is x=1, y=0 (column-major); the second run starts 2 pixels after the first ends
    bitmap = decode_rle("1024 2 2 1")
    assert list(zip(*np.nonzero(bitmap))) == [(0, 1), (1, 1), (4, 1)]


def test_read_synthetic_table(tmp_path):
    a, b = shapes()
    text = ("\ufeffImageId, EncodedPixels\n"
            f"case_1,{reference_encode(a)}\n"
            f"case_1, {reference_encode(b)}\n"
            "case_2, -1\n"
            "case_3.dcm,-1\n")
    problems = Problems()
    table = read_siim(write(tmp_path / "rle.csv", text), problems, width=40, height=30)
    assert len(problems) == 0 and table.source == "siim" and table.patients == {}
    assert [(r.image, r.label, r.line) for r in table.rows] == [("case_1.png", "Pneumothorax", 2),
                                                              ("case_1.png", "Pneumothorax", 3)]
    for row, bitmap in zip(table.rows, (a, b)):
        assert (row.mask.to_bitmap(40, 30) == bitmap).all()
        assert row.box == row.mask.bounds(40, 30)
    assert table.rows[0].box == Box(0.0, 0.0, 40.0, 30.0)
    assert table.negatives == ["case_2.png", "case_3.dcm"]


def test_header_variants(tmp_path):
    body = "img_a,-1\nimg_b, 3 1\n"
    for header in ("fname,mask\n", ""):  # the Kaggle sample's header, and none at all
        table = read_siim(write(tmp_path / "rle.csv", header + body), Problems(), width=4, height=4)
        assert table.negatives == ["img_a.png"] and [r.box for r in table.rows] == [Box(0.0, 3.0, 1.0, 4.0)]
    table = read_siim(write(tmp_path / "rle.csv", body), Problems(), width=4, height=4, extension=".dcm")
    assert table.negatives == ["img_a.dcm"]
    with pytest.raises(UserError, match="3 columns"):
        read_siim(write(tmp_path / "rle.csv", "ImageId,EncodedPixels,x\n" + body), Problems())
    assert image_name("1.2.276.0.7230010.3.1.4.8323329.1000.1517875165.878027") == \
        "1.2.276.0.7230010.3.1.4.8323329.1000.1517875165.878027.png"


def test_bad_rows_are_named(tmp_path):
    text = ("ImageId, EncodedPixels\n"
            "a, 1 2 3\n"          # 2: odd count
            "b, 1 x 3 4\n"        # 3: not an integer
            "c, 10 4 2 5\n"       # 4: second run ends at 21 > 16 pixels
            "d, -1, 5\n"          # 5: extra column
            "e\n"                 # 6: missing column
            "f, 0 0\n"            # 7: empty mask
            "g, \n"               # 8: missing value
            "h, 1 2\n"            # 9: good mask ...
            "h, -1\n"             # 10: ... and '-1' for the same image
            "i, 1 2\n"            # 11: good, but the image has a bad row
            "i, 1 -2\n"           # 12: negative length
            "j, 0 1\n")           # 13: good
    problems = Problems()
    table = read_siim(write(tmp_path / "rle.csv", text), problems, width=4, height=4)
    kept = [r for r in table.rows if r.image not in problems.bad_images()]  # what convert keeps
    assert [(r.image, r.line) for r in kept] == [("h.png", 9), ("j.png", 13)]
    assert table.negatives == []
    found = [(p.line, p.kind, p.value) for p in problems.items]
    assert found == [(2, "bad_rle", "3 integers"), (3, "bad_number", "x"), (4, "run_outside_image", "2 5"),
                     (5, "extra_column", "d, -1, 5"), (6, "missing_column", "e"), (7, "empty_mask", "0 0"),
                     (8, "missing_value", "g, "), (12, "bad_number", "-2"), (10, "conflicting_rows", "h.png")]
    assert all(p.file == str(tmp_path / "rle.csv") for p in problems.items)
    assert "ends at pixel 21, past the 4x4 image (16 pixels)" in problems.items[2].message


def test_real_kaggle_sample(shared_data):
    path = os.path.join(shared_data, SAMPLE)
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().splitlines()[1:]
    values = [line.split(",", 1)[1].strip() for line in lines]
    negatives = sum(v == "-1" for v in values)
    positives = [v for v in values if v != "-1"]
    problems = Problems()
    table = read_siim(path, problems)
    assert len(problems) == 0
    assert (len(lines), negatives, len(positives)) == (10, 5, 5)
    assert len(table.negatives) == negatives and len(table.rows) == len(positives)
    for row, value in zip(table.rows, positives):
        lengths = list(map(int, value.split()))[1::2]
        assert row.mask.area(1024, 1024) == sum(lengths)  # runs never overlap
        assert row.box == row.mask.bounds(1024, 1024)
        first = int(value.split()[0])  # the first run starts at column first // 1024, row first % 1024
        assert row.box.xmin == first // 1024 and row.box.ymin <= first % 1024
    assert table.rows[0].box == Box(171.0, 99.0, 434.0, 255.0)


def test_convert_then_coco_round_trip(tmp_path):
    """SIIM rows -> convert_table -> coco/train.json -> read_coco: the same masks come back."""
    from PIL import Image
    from medtfod.data.convert import ConvertOptions, convert_table
    from medtfod.core.labelmap import LabelMap
    from medtfod.data.readers.coco import read_coco
    os.makedirs(tmp_path / "img")
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "img" / f"{name}.png")
    a, b = shapes()
    text = f"ImageId, EncodedPixels\na,{reference_encode(a)}\nb, -1\nc,{reference_encode(b)}\n"
    problems = Problems()
    table = read_siim(write(tmp_path / "rle.csv", text), problems, width=40, height=30)
    report = convert_table(table, str(tmp_path / "img"), str(tmp_path / "out"),
                           LabelMap.from_names(["Pneumothorax"]),
                           ConvertOptions(fractions={"train": 1.0}, workers=1), problems, quiet=True)
    assert report["splits"]["train"]["masks"] == 2 and report["problems"]["count"] == 0
    back = read_coco(str(tmp_path / "out" / "coco" / "train.json"), problems)
    assert len(problems) == 0 and back.negatives == ["b.png"]
    for row, bitmap in zip(back.rows, (a, b)):
        assert (row.mask.to_bitmap(40, 30) == bitmap).all()
        assert row.box == row.mask.bounds(40, 30)
