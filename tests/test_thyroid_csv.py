"""Thyroid box tables (NYCDSA/Koios style): header aliases, boxes, outlines, negatives, bad rows."""
import pytest

from medtfod.core.errors import UserError
from medtfod.core.masks import Mask
from medtfod.core.problems import Problems
from medtfod.data.readers.thyroid_csv import parse_points, patient_of, read_thyroid_csv

from support import write


def read(tmp_path, text, problems=None):
    path = write(tmp_path / "t.csv", text)
    return read_thyroid_csv(path, problems if problems is not None else Problems()), path


def test_boxes_masks_patients(tmp_path):
    text = ("Image ID,Directory Path,BBox X,BBox Y,BBox Width,BBox Height,Segmentation\n"
            "12_1,data/images/12_1.jpg,10.5,20,30,40,\n"
            '12_2,C:\\thyroid\\raw\\12_2.jpg,1,2,3,4,"5 6 7 8 9 10"\n'
            '7_1,,1,2,3,4,"1,2;3,4;5,6"\n'
            '7_1,,50,60,5,5,"[[50,60],[55,60],[55,65]]"\n'
            '8,data/images/,1,1,2,2,"[1,1,3,1,3,3]"\n')
    table, path = read(tmp_path, text)
    assert table.source == "thyroid-csv" and table.inputs == {"table": path}
    assert [r.image for r in table.rows] == ["12_1.jpg", "12_2.jpg", "7_1", "7_1", "8"]
    first = table.rows[0]
    assert (first.box.xmin, first.box.ymin, first.box.xmax, first.box.ymax) == (10.5, 20, 40.5, 60)
    assert (first.file, first.line, first.label, first.mask, first.clip) == (path, 2, "nodule", None, False)
    assert table.rows[1].mask == Mask(polygons=((5.0, 6.0, 7.0, 8.0, 9.0, 10.0),))
    assert table.rows[1].box.xmax == 4  # the table's box, not the outline's
    assert table.rows[2].mask.polygons == ((1.0, 2.0, 3.0, 4.0, 5.0, 6.0),)
    assert table.rows[3].mask.polygons == ((50.0, 60.0, 55.0, 60.0, 55.0, 65.0),)
    assert table.rows[4].mask.polygons == ((1.0, 1.0, 3.0, 1.0, 3.0, 3.0),)
    assert table.patients == {"12_1.jpg": "12", "12_2.jpg": "12", "7_1": "7", "8": "8"}
    assert not table.negatives


def test_aliases_and_no_id_column(tmp_path):
    table, _ = read(tmp_path, "FILE,xmin,ymin,w,h\nimgs/5_2.png,0,0,8,9\n")
    assert table.rows[0].image == "5_2.png" and table.patients == {"5_2.png": "5"}
    assert table.rows[0].box.ymax == 9
    table, _ = read(tmp_path, "id;,X ,Y,Height,Width\r\n3_1,1,2,10,20\r\n")  # punctuation, any order
    assert table.rows[0].image == "3_1" and table.rows[0].box.xmax == 21 and table.rows[0].box.ymax == 12


def test_negatives_and_short_rows(tmp_path):
    text = ("image_id,path,x,y,w,h,points\n"
            "1_1,a/1_1.jpg,,,,\n"          # no findings; trailing empty outline left off
            "2_1,a/2_1.jpg,1,2,3,4\n"      # a box, no outline field at all
            "\n"
            "1_1,a/1_1.jpg,,,,,\n")        # listed twice: still one negative
    problems = Problems()
    table, _ = read(tmp_path, text, problems)
    assert table.negatives == ["1_1.jpg"] and [r.image for r in table.rows] == ["2_1.jpg"]
    assert not problems.items


def test_bad_rows_are_named(tmp_path):
    text = ("image_id,path,x,y,w,h,points\n"
            "1_1,a/1_1.jpg,1,2\n"                  # 2: missing columns
            "1_2,a/1_2.jpg,1,two,3,4,\n"           # 3: not a number
            "1_3,a/1_3.jpg,1,2,0,4,\n"             # 4: zero width
            "1_4,a/1_4.jpg,1,2,3,4,1 2 3\n"        # 5: odd number of values
            "1_5,a/1_5.jpg,1,2,3,4,1 2 3 4\n"      # 6: two points
            ",,1,2,3,4,\n"                         # 7: no image
            "1_6,a/1_6.jpg,1,,3,4,\n"              # 8: one box field empty
            "1_7,a/1_7.jpg,1,2,3,inf,\n"           # 9: not finite
            '1_8,a/1_8.jpg,1,2,3,4,"[[1,2,3]]"\n'  # 10: bad JSON pair
            "1_9,a/1_9.jpg,1,2,3,4,\n"             # 11: fine
            "2_1,a/2_1.jpg,1,2,3,4,1,2;3,4;5,6\n")  # 12: outline not quoted
    problems = Problems()
    table, path = read(tmp_path, text, problems)
    assert [r.image for r in table.rows] == ["1_9.jpg"]
    found = {(p.line, p.kind): p for p in problems.items}
    assert set(found) == {(2, "missing_column"), (3, "bad_number"), (4, "bad_box"), (5, "bad_points"),
                          (6, "bad_points"), (7, "missing_value"), (8, "missing_value"), (9, "bad_number"),
                          (10, "bad_points"), (12, "extra_column")}
    assert all(p.file == path for p in problems.items)
    assert found[(3, "bad_number")].value == "two" and "'y'" in found[(3, "bad_number")].message
    assert found[(4, "bad_box")].value == "w=0, h=4"
    assert "at least 3" in found[(6, "bad_points")].message and found[(6, "bad_points")].value == "1 2 3 4"
    assert "'x1 y1 x2 y2 ...'" in found[(5, "bad_points")].message
    assert "quote a field" in found[(12, "extra_column")].message


def test_strict_stops_at_first(tmp_path):
    with pytest.raises(UserError, match=r"t.csv:2: .*value: 'two'"):
        read(tmp_path, "image_id,x,y,w,h\n1_1,1,two,3,4\n", Problems(strict=True))


@pytest.mark.parametrize("header, expect", [
    ("image_id,path,xmin,ymin,xmax,ymax", r"no column for w, h\. The header has 'image_id', 'path', 'xmin'"),
    ("name,x,y,w,h", "no column for image id or path"),
    ("image_id,x,y,w,h,width", "columns 'w', 'width' all mean 'w'"),
])
def test_wrong_header(tmp_path, header, expect):
    with pytest.raises(UserError, match=expect) as e:
        read(tmp_path, header + "\n1,2,3,4,5,6\n")
    assert "t.csv:1:" in str(e.value)
    if "no column" in expect:
        assert "bbox_width" in str(e.value)  # lists the names expected


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_thyroid_csv(str(tmp_path / "nope.csv"), Problems())
    with pytest.raises(UserError, match="the file is empty"):
        read(tmp_path, "")


@pytest.mark.parametrize("text, flat", [
    ("1 2 3 4 5 6", (1, 2, 3, 4, 5, 6)),
    ("1,2,3,4,5,6", (1, 2, 3, 4, 5, 6)),
    ("1.5,2; 3,4 ;5,6;", (1.5, 2, 3, 4, 5, 6)),
    ("[[1, 2], [3, 4], [5, 6]]", (1, 2, 3, 4, 5, 6)),
    ("[1, 2, 3, 4, 5, 6]", (1, 2, 3, 4, 5, 6)),
    ('[{"x": 1, "y": 2}, {"x": 3, "y": 4}, {"x": 5, "y": 6}]', (1, 2, 3, 4, 5, 6)),
])
def test_parse_points(text, flat):
    assert parse_points(text) == tuple(float(v) for v in flat)


@pytest.mark.parametrize("text", ["1 2 3 4", "1 2 3 4 5", "1,2;3;4,5", "[1, 2, 3", "a b c d e f",
                                  "[true, 1, 2, 3, 4, 5]", '{"x": 1}', "1 2 3 4 nan 6"])
def test_parse_points_rejects(text):
    with pytest.raises((ValueError, TypeError, KeyError)):
        parse_points(text)


def test_patient_of():
    assert [patient_of(i) for i in ("12_3", "12", "a_b_c", "_7")] == ["12", "12", "a", "_7"]
