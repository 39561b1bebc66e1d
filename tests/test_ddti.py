"""DDTI reader: every rule on a tiny synthetic folder, then the real 390 case files and converter."""
import json
import os
import struct

import pytest

from medtfod.core.errors import UserError
from medtfod.core.masks import Mask
from medtfod.core.problems import Problems
from medtfod.data.readers.ddti import read_ddti

from support import write

HEAD = ("<case><number>{n}</number><age></age><sex>F</sex><composition></composition><echogenicity>"
        "</echogenicity><margins></margins><calcifications></calcifications><tirads>4a</tirads>"
        "<reportbacaf></reportbacaf><reporteco></reporteco>")


def region(points, kind="freehand"):
    return {"points": [{"x": x, "y": y} for x, y in points], "annotation": {}, "regionType": kind}


def mark(image, regions):
    svg = regions if isinstance(regions, str) else json.dumps(regions)
    return f"<mark><image>{image}</image><svg>{svg}</svg></mark>"


def case(n, *marks):
    return HEAD.format(n=n) + "".join(marks) + "</case>"


LEFT = [(10, 5), (30, 5), (30, 20), (10, 20)]
RIGHT = [(40, 8), (55, 8), (50, 25)]
TRUNCATED = json.dumps([region(LEFT)])[:30]

PRETTY = """<case>
    <number>2</number>
    <age></age>
    <tirads></tirads>
    <mark>
        <image>1</image>
        <svg>[{"points": [{"x": 5, "y": 6}, {"x":
            25, "y": 6}, {"x": 25, "y": 30}], "annotation": {}, "regionType": "freehand"},
            {"points": [{"x": 1, "y": 1}, {"x": 9, "y": 9}], "annotation": {}, "regionType":
            "arrow"}]</svg>
    </mark>
</case>"""

ENTITY = """<?xml version="1.0"?>
<!DOCTYPE case [<!ENTITY n "7">]>
<case><number>&n;</number><mark><image>1</image><svg>[]</svg></mark></case>"""

EXTERNAL = """<!DOCTYPE case [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<case><number>8</number><age>&x;</age></case>"""


@pytest.fixture
def ddti(tmp_path):
    folder = tmp_path / "xml"
    folder.mkdir()
    write(folder / "1.xml", case(1, mark(1, [region(LEFT)]), mark(2, [region(LEFT), region(RIGHT)])))
    write(folder / "2.xml", PRETTY)
    write(folder / "3.xml", case(3, mark(1, TRUNCATED), mark(2, ""),
                                 mark(3, [region([(10, 30), (60, 30), (60, 50), (10, 50)])])))
    write(folder / "10.xml", case(10, mark(1, [region(LEFT), region([(1, 1), (5, 5)])]),
                                  mark(2, [region([(3, 4), (9, 4), (20, 4)])]),
                                  mark(3, [region(LEFT, "arrow")])))
    write(folder / "7.xml", ENTITY)
    write(folder / "8.xml", EXTERNAL)
    write(folder / "9.xml", case(9, "<mark><image>1</image>"))  # not well-formed
    write(folder / "notes.txt", "not a case file")
    return str(folder)


def by_kind(problems):
    out = {}
    for p in problems.items + problems.notes:
        out.setdefault(p.kind, []).append(p)
    return out


def test_synthetic_rules(ddti):
    problems = Problems()
    table = read_ddti(ddti, problems)
    assert table.source == "ddti" and table.inputs == {"xml_dir": ddti}
    # files in case-number order: 1, 2, 3, ..., 10 (not 1, 10, 2)
    kept = [r for r in table.rows if r.image not in problems.bad_images()]  # what convert keeps
    assert [r.image for r in kept] == ["1_1.jpg", "1_2.jpg", "1_2.jpg", "2_1.jpg", "3_3.jpg"]
    first = table.rows[0]
    assert first.file == os.path.join(ddti, "1.xml") and first.line == 1 and first.label == "nodule"
    assert first.mask == Mask(polygons=((10.0, 5.0, 30.0, 5.0, 30.0, 20.0, 10.0, 20.0),))
    assert (first.box.xmin, first.box.ymin, first.box.xmax, first.box.ymax) == (10, 5, 30, 20)
    assert all(r.clip for r in table.rows)
    # a double-panel mark: two objects of the same image
    assert [r.box.xmin for r in table.rows if r.image == "1_2.jpg"] == [10, 40]
    # pretty-printed: JSON wrapped across lines, line of the <mark> tag, arrow skipped
    pretty = table.rows[3]
    assert pretty.line == 5 and pretty.box.xmax == 25 and pretty.box.ymax == 30
    # points past the image are kept for the converter to clip
    assert table.rows[4].box.ymax == 50
    assert table.patients == {"1_1.jpg": "1", "1_2.jpg": "1", "2_1.jpg": "2", "3_3.jpg": "3", "10_1.jpg": "10"}
    assert not table.negatives

    kinds = by_kind(problems)
    assert {k: len(v) for k, v in kinds.items()} == {
        "skipped_arrow": 2, "bad_svg": 1, "empty_svg": 1, "bad_polygon": 2, "bad_mark": 1, "bad_xml": 3}
    arrow = kinds["skipped_arrow"][0]
    assert (arrow.file, arrow.line) == (os.path.join(ddti, "2.xml"), 5)
    assert "arrow annotation, not a nodule outline" in arrow.message
    bad_svg = kinds["bad_svg"][0]
    assert "3_1.jpg" in bad_svg.message and "invalid JSON" in bad_svg.message
    assert f"({len(TRUNCATED)} characters" in bad_svg.message
    assert kinds["empty_svg"][0].value == "3_2.jpg"
    # a 2-point freehand outline drops its whole mark (10_1), a straight line has no area (10_2)
    assert [p.value for p in kinds["bad_polygon"]] == ["10_1.jpg region 2", "10_2.jpg region 1"]
    assert "at least 3" in kinds["bad_polygon"][0].message and "left out" in kinds["bad_polygon"][0].message
    assert kinds["bad_mark"][0].value == "10_3.jpg"  # only an arrow: no outline at all
    bad_xml = {os.path.basename(p.file): p for p in kinds["bad_xml"]}
    assert set(bad_xml) == {"7.xml", "8.xml", "9.xml"}
    assert "refused unsafe XML" in bad_xml["7.xml"].message
    assert "refused unsafe XML" in bad_xml["8.xml"].message
    assert "not well-formed" in bad_xml["9.xml"].message


def test_entities_never_expanded(tmp_path):
    folder = tmp_path / "xml"
    folder.mkdir()
    laughs = ('<!DOCTYPE case [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
              '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><case><number>1&c;</number></case>')
    write(folder / "1.xml", laughs)
    problems = Problems()
    table = read_ddti(str(folder), problems)
    assert not table.rows and [p.kind for p in problems.items] == ["bad_xml"]


def test_strict_stops_at_first_error_not_at_arrows(ddti):
    # arrows are expected skips, so --strict passes them and stops at the truncated svg
    with pytest.raises(UserError, match=r"3.xml:1: 3_1.jpg: <svg> is invalid JSON"):
        read_ddti(ddti, Problems(strict=True))


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        read_ddti(str(tmp_path / "nope"), Problems())
    with pytest.raises(UserError, match="no .xml files"):
        read_ddti(str(tmp_path), Problems())


# --- the real DDTI files in ../shared ---------------------------------------------------

def test_real_counts(shared_data):
    folder = os.path.join(shared_data, "thyroid_ddti", "xml")
    problems = Problems()
    table = read_ddti(folder, problems)
    assert len([n for n in os.listdir(folder) if n.endswith(".xml")]) == 390
    assert problems.counts() == {"bad_svg": 8, "empty_svg": 6}
    assert [p.kind for p in problems.notes] == ["skipped_arrow"] * 8  # expected, not errors
    bad = {p.message.split(":")[0] for p in problems.items if p.kind == "bad_svg"}
    assert bad == {f"{n}_1.jpg" for n in (54, 127, 165, 166, 176, 197, 203, 205)}
    empty = {p.value for p in problems.items if p.kind == "empty_svg"}
    assert empty == {"62_3.jpg", "120_1.jpg", "142_2.jpg", "213_2.jpg", "230_2.jpg", "389_1.jpg"}
    arrows = sorted(p.value.split()[0] for p in problems.notes if p.kind == "skipped_arrow")
    assert arrows == sorted(["337_3.jpg"] * 3 + ["358_1.jpg", "362_1.jpg", "378_1.jpg", "384_1.jpg", "399_1.jpg"])
    images = {r.image for r in table.rows}
    # every one of the 480 marks is converted or skipped with a reason
    assert len(images) == 466 and len(images) + 8 + 6 == 480
    assert len(table.rows) == 648  # regions: double-panel marks give two objects
    # 9 outlines repeat an earlier one of the same image exactly (294_1: one outline 3 times);
    # the reader keeps them and the converter reports and drops them as 'duplicate_row'
    outlines = [(r.image, r.mask) for r in table.rows]
    assert len(outlines) - len(set(outlines)) == 9
    assert len([r for r in table.rows if r.image == "59_1.jpg"]) == 2
    assert max(r.box.ymax for r in table.rows if r.image == "338_2.jpg") == 394
    assert all(table.patients[r.image] == r.image.split("_")[0] for r in table.rows)
    pretty = [r for r in table.rows if r.image == "1_1.jpg"][0]
    assert pretty.line == 12 and pretty.file.endswith("1.xml")


def _fields(buf):
    """(field number, payload) of protobuf length-delimited fields (all tf.Example uses)."""
    i, out = 0, []
    while i < len(buf):
        values = []
        for _ in range(2):  # tag, then length
            shift = value = 0
            while True:
                byte = buf[i]
                i += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            values.append(value)
        (tag, size) = values
        assert tag & 7 == 2
        out.append((tag >> 3, buf[i:i + size]))
        i += size
    return out


def read_examples(path):
    """Each TFRecord record as {feature name: list of bytes values or floats}."""
    data = open(path, "rb").read()
    i, examples = 0, []
    while i < len(data):
        (size,) = struct.unpack("<Q", data[i:i + 8])
        record = data[i + 12:i + 12 + size]
        i += 12 + size + 4
        features = {}
        for _, entry in _fields(_fields(record)[0][1]):
            parts = dict(_fields(entry))
            kind, body = _fields(parts[2])[0]
            values = [v for _, v in _fields(body)]
            if kind == 2:
                values = list(struct.unpack(f"<{len(values[0]) // 4}f", values[0])) if values else []
            features[parts[1].decode()] = values
        examples.append(features)
    return examples


def test_real_convert(shared_data, tmp_path):
    from medtfod.data.convert import ConvertOptions, convert_table
    from medtfod.core.labelmap import LabelMap

    base = os.path.join(shared_data, "thyroid_ddti")
    problems = Problems()
    table = read_ddti(os.path.join(base, "xml"), problems)
    out = tmp_path / "out"
    report = convert_table(table, os.path.join(base, "images"), str(out), LabelMap.from_names(["nodule"]),
                           ConvertOptions(max_bad=1.0, workers=1), problems, quiet=True)
    assert report["images"] == 8  # 9 JPGs; 54_1 has only a truncated outline
    kinds = report["problems"]["by_kind"]
    assert kinds["duplicate_row"] == 9  # repeated outlines, kept once (see test_real_counts)
    assert kinds["missing_image"] + kinds["duplicate_row"] + report["boxes"] == 648
    assert sum(s["masks"] for s in report["splits"].values()) == report["boxes"]
    examples = {}
    for name in os.listdir(out / "tfrecords"):
        for ex in read_examples(out / "tfrecords" / name):
            examples[ex["image/filename"][0].decode()] = ex
    expected = {r.image for r in table.rows} & set(os.listdir(os.path.join(base, "images")))
    assert set(examples) == expected and len(expected) == 8  # 54_1's svg is truncated
    assert len(examples["59_1.jpg"]["image/object/bbox/xmin"]) == 2
    assert len(examples["59_1.jpg"]["image/object/mask"]) == 2
    assert len(examples["358_1.jpg"]["image/object/bbox/xmin"]) == 1  # the arrow is not an object
    clipped = examples["338_2.jpg"]
    assert max(clipped["image/object/bbox/ymax"]) == 1.0  # y up to 394 clipped to 360
    assert all(0.0 <= v <= 1.0 for k in ("xmin", "ymin", "xmax", "ymax")
               for v in clipped[f"image/object/bbox/{k}"])
    for ex in examples.values():
        assert ex["image/object/mask"] and len(ex["image/object/mask"]) == len(ex["image/object/class/text"])
