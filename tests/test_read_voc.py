"""Pascal VOC reader: round trip with our writer, the real raccoon annotations, bad files."""
import os
import re

import pytest

from medtfod.core.annotations import ImageRecord, Object
from medtfod.core.boxes import Box
from medtfod.core.errors import UserError
from medtfod.core.problems import Problems
from medtfod.data.readers.voc import read_voc, voc_box
from medtfod.data.writers.voc import voc_xml

from support import write

VOC = """<annotation>
\t<filename>{filename}</filename>
\t<path>{path}</path>
\t<size><width>64</width><height>48</height><depth>3</depth></size>
{objects}</annotation>
"""


def voc_text(filename="a.png", path="/x/a.png", objects=()):
    parts = []
    for name, (xmin, ymin, xmax, ymax) in objects:
        parts.append(f"\t<object>\n\t\t<name>{name}</name>\n\t\t<bndbox>\n"
                     f"\t\t\t<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>\n"
                     "\t\t</bndbox>\n\t</object>\n")
    return VOC.format(filename=filename, path=path, objects="".join(parts))


def test_convention_is_one_based_inclusive():
    assert voc_box(1, 1, 10, 20) == Box(0.0, 0.0, 10.0, 20.0)
    assert voc_box(5, 7, 5, 7).width == 1.0  # a one-pixel box


def test_round_trip_with_writer(tmp_path):
    boxes = [Box(0.0, 0.0, 64.0, 48.0), Box(10.0, 20.0, 11.0, 21.0), Box(3.0, 4.0, 30.0, 40.0)]
    records = [
        ImageRecord("img_1.png", "/data/img_1.png", 64, 48, 1, "png", "p", [Object("Nodule", b) for b in boxes]),
        ImageRecord("img_2.jpg", "C:\\data\\img_2.jpg", 64, 48, 3, "jpeg", "p", []),
    ]
    os.makedirs(tmp_path / "sub")
    (tmp_path / "img_1.xml").write_bytes(voc_xml(records[0]))
    (tmp_path / "sub" / "img_2.xml").write_bytes(voc_xml(records[1]))  # folders are searched recursively
    problems = Problems()
    table = read_voc(str(tmp_path), problems)
    assert len(problems) == 0
    assert table.source == "voc" and table.patients == {}
    assert [(r.image, r.label, r.box) for r in table.rows] == [("img_1.png", "Nodule", b) for b in boxes]
    assert table.negatives == ["img_2.jpg"]
    assert [r.line for r in table.rows] == [14, 26, 38]  # the <object> lines of the written file


def test_real_raccoon_annotations(shared_data):
    folder = os.path.join(shared_data, "tf_od_api", "raccoon_dataset", "annotations")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".xml"))
    expected = 0
    for name in files:  # an independent count: plain text, no XML parser
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            expected += len(re.findall(r"<object>", f.read()))
    problems = Problems()
    table = read_voc(folder, problems)
    assert len(files) == 200 and expected == 217
    assert len(problems) == 0
    assert len(table.rows) == expected
    assert table.negatives == []
    assert {r.image for r in table.rows} == {f[:-4] + ".jpg" for f in files}
    assert {r.label for r in table.rows} == {"raccoon"}
    first = [r for r in table.rows if r.image == "raccoon-1.jpg"]
    assert [r.box for r in first] == [Box(80.0, 87.0, 522.0, 408.0)]  # <xmin>81 <ymin>88 <xmax>522 <ymax>408


def test_filename_without_extension(tmp_path):
    write(tmp_path / "scan_7.xml", voc_text("scan_7", "/u/images/scan_7.JPG", [("Mass", (1, 1, 5, 5))]))
    write(tmp_path / "scan_8.xml", voc_text("scan_8", "", []))
    table = read_voc(str(tmp_path), Problems())
    assert [r.image for r in table.rows] == ["scan_7.JPG"]
    assert table.negatives == ["scan_8"]  # no extension anywhere: the converter matches the stem


def test_bad_files_are_named(tmp_path):
    write(tmp_path / "a_broken.xml", "<annotation><filename>x.png</filename>")
    write(tmp_path / "b_bomb.xml", '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                                   '<!ENTITY lol2 "&lol;&lol;&lol;">]>\n<annotation>&lol2;</annotation>\n')
    write(tmp_path / "c_other.xml", "<case><number>1</number></case>\n")
    write(tmp_path / "d_bad.xml", voc_text("d.png", "", [("Mass", (1, 1, 5, 5)),        # fine, but dropped
                                                         ("Mass", (1, "two", 5, 5)),   # line 11
                                                         ("Mass", (9, 1, 5, 5))]))     # line 17: xmax < xmin
    write(tmp_path / "e_nobox.xml", VOC.format(filename="e.png", path="", objects=(
        "\t<object><name>Mass</name></object>\n"
        "\t<object><name>Mass</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object>\n"
        "\t<object><bndbox/></object>\n")))
    write(tmp_path / "f_good.xml", voc_text("f.png", "", [("Mass", (2, 3, 4, 5))]))
    write(tmp_path / "g_dupe.xml", voc_text("f.png", "", [("Mass", (2, 3, 4, 5))]))
    problems = Problems()
    table = read_voc(str(tmp_path), problems)
    kept = [r for r in table.rows if r.image not in problems.bad_images()]  # what convert keeps
    assert [(r.image, r.box) for r in kept] == [("f.png", Box(1.0, 2.0, 4.0, 5.0))]
    assert table.negatives == []
    found = [(os.path.basename(p.file), p.line, p.kind) for p in problems.items]
    assert found == [
        ("a_broken.xml", 1, "bad_xml"),
        ("b_bomb.xml", None, "bad_xml"),
        ("c_other.xml", 1, "not_voc"),
        ("d_bad.xml", 11, "bad_number"),
        ("d_bad.xml", 17, "bad_box"),
        ("e_nobox.xml", 5, "missing_value"),
        ("e_nobox.xml", 6, "bad_number"),
        ("e_nobox.xml", 7, "missing_value"),
        ("g_dupe.xml", None, "duplicate_image"),
    ]
    by_kind = {(os.path.basename(p.file), p.kind): p for p in problems.items}
    assert by_kind[("d_bad.xml", "bad_number")].value == "two"
    assert "<ymin>" in by_kind[("d_bad.xml", "bad_number")].message
    assert "<ymax>" in by_kind[("e_nobox.xml", "bad_number")].message
    assert "xmin < xmax" in by_kind[("d_bad.xml", "bad_box")].message
    assert "f_good.xml" in by_kind[("g_dupe.xml", "duplicate_image")].message
    assert "Entit" in by_kind[("b_bomb.xml", "bad_xml")].message  # refused, not expanded


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_voc(str(tmp_path / "nope"), Problems())
    with pytest.raises(UserError, match="no .xml files"):
        read_voc(str(tmp_path), Problems())
