import pytest

from medtfod.core.errors import UserError
from medtfod.core.problems import Problems
from medtfod.data.readers import nih

from support import write

CANONICAL = ("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
             "00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661\n")


def test_canonical_header_quirk(tmp_path):
    rows = nih.read_bbox_list(write(tmp_path / "b.csv", CANONICAL), Problems())
    assert len(rows) == 1
    r = rows[0]
    assert (r.line, r.image, r.label) == (2, "00013118_008.png", "Atelectasis")
    assert r.box.xmin == 225.084745762712 and r.box.ymax == pytest.approx(547.019216763771 + 79.1864406779661)


def test_excel_variant_and_bom(tmp_path):
    text = "\ufeffImage Index,Finding Label,Bbox [x,y,w,h]\r\n00013118_008.png,Atelectasis,225.0847458,547.0192168,86.77966102,79.18644068\r\n"
    rows = nih.read_bbox_list(write(tmp_path / "b.csv", text), Problems())
    assert rows[0].box.xmin == pytest.approx(225.084745762712, abs=1e-5)


def test_bad_rows_are_named(tmp_path):
    text = CANONICAL + ("a_000.png,Mass,1,2,3\n"           # line 3: missing column
                        "b_000.png,Mass,1,two,3,4\n"       # line 4: not a number
                        "c_000.png,Mass,1,2,-3,4\n"        # line 5: negative width
                        "\n"
                        "d_000.png,Mass,1,2,3,4\n")        # line 7: fine
    problems = Problems()
    rows = nih.read_bbox_list(write(tmp_path / "b.csv", text), problems)
    assert [r.image for r in rows] == ["00013118_008.png", "d_000.png"]
    found = {(p.line, p.kind): p for p in problems.items}
    assert set(found) == {(3, "missing_column"), (4, "bad_number"), (5, "bad_box")}
    assert found[(4, "bad_number")].value == "two"
    assert "'y'" in found[(4, "bad_number")].message
    assert str(found[(3, "missing_column")]).startswith(str(tmp_path / "b.csv") + ":3:")


def test_strict_stops_at_first(tmp_path):
    with pytest.raises(UserError, match=r"b.csv:3: .*value: 'two'"):
        nih.read_bbox_list(write(tmp_path / "b.csv", CANONICAL + "x_000.png,Mass,1,two,3,4\n"), Problems(strict=True))


def test_wrong_header(tmp_path):
    with pytest.raises(UserError, match="not a BBox_List_2017.csv header"):
        nih.read_bbox_list(write(tmp_path / "b.csv", "filename,class,x,y,w,h\n"), Problems())


def test_not_utf8(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes(CANONICAL.encode() + "caf\xe9_000.png,Mass,1,2,3,4\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"b.csv:3: not UTF-8"):
        nih.read_bbox_list(str(path), Problems())


@pytest.mark.parametrize("header, row", [
    ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
     "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]",
     "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143"),
    ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
     "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],",
     "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143"),
    ("ImageIndex,FindingLabels,Follow-up,PatientID,PatientAge", "00000001_000.png,Cardiomegaly,0,1,58"),
])
def test_data_entry_variants(tmp_path, header, row):
    entry = nih.read_data_entry(write(tmp_path / "d.csv", header + "\n" + row + "\n"), Problems())
    assert entry.patients == {"00000001_000.png": "1"}


def test_real_files(shared_data):
    import os
    problems = Problems()
    folder = os.path.join(shared_data, "nih_chestxray14")
    rows = nih.read_bbox_list(os.path.join(folder, "BBox_List_2017.csv"), problems)
    assert len(rows) == 984 and len({r.image for r in rows}) == 880 and not problems.items
    excel = nih.read_bbox_list(os.path.join(folder, "BBox_List_2017.excel_resaved_variant__mrdchry.csv"), problems)
    assert len(excel) == 984
    for a, b in zip(rows, excel):
        assert a.image == b.image and abs(a.box.xmin - b.box.xmin) < 1e-5
    entry = nih.read_data_entry(os.path.join(folder, "Data_Entry_2017_v2020.bbox_images.csv"), problems)
    assert len(entry.patients) == 880 and not problems.items
    assert all(nih.patient_from_name(img) == pid for img, pid in entry.patients.items())
