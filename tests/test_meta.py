"""Per-image fields kept by convert (`ImageEntry.meta`): NIH Data_Entry, DDTI cases, DICOM
headers, `--meta` for csv/coco/siim; the manifest, `Dataset.meta`/`fields` and audit's counts.
Tiny synthetic data made here; the real DDTI files through `shared_data`."""
import collections
import json
import os

import numpy as np
import pytest
from PIL import Image

from medtfod.cli import main
from medtfod.core.errors import UserError
from medtfod.data.dataset import Dataset
from medtfod.data.manifest import load

from support import write

ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


def png(folder, name, width=64, height=32, mode="L"):
    os.makedirs(folder, exist_ok=True)
    Image.new(mode, (width, height), 90).save(os.path.join(folder, name))


def entries(out):
    return {e.name: e for e in load(str(out)).images}


def test_nih_data_entry_fields_and_scaled_spacing(tmp_path):
    images = tmp_path / "images"
    png(images, "00000001_000.png", 512, 256)   # resized from 2048 x 1024
    png(images, "00000002_000.png", 64, 64)
    png(images, "00000003_000.png", 64, 64)
    bbox = write(tmp_path / "bbox.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Mass,1,2,10,10\n")
    entry = write(tmp_path / "entry.csv", ENTRY_HEADER +
                  "00000001_000.png,Mass,0,1,058,M,PA,2048,1024,0.2,0.1\n"
                  "00000002_000.png,No Finding,0,2,,F, AP ,,,,\n"
                  "00000003_000.png,No Finding,0,3,61,M,PA,64,64,0.1x,0.1\n")
    ds = Dataset.convert("nih", str(images), str(tmp_path / "out"), bbox_csv=bbox, data_entry=entry,
                         options=_train_only(max_bad=0.5))
    assert ds.meta() == {
        # x 0.2 mm on 2048 columns -> 0.8 mm on 512; y 0.1 mm on 1024 rows -> 0.4 mm on 256
        "00000001_000.png": {"age": "058", "sex": "M", "view_position": "PA", "pixel_spacing": "0.4,0.8"},
        "00000002_000.png": {"sex": "F", "view_position": "AP"},  # empty age and spacing stay absent
        "00000003_000.png": {"age": "61", "sex": "M", "view_position": "PA"},  # kept; its bad spacing reported
    }
    assert ds.fields == ["age", "pixel_spacing", "sex", "view_position"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["fields"] == {"age": 2, "pixel_spacing": 1, "sex": 3, "view_position": 3}
    (bad,) = report["problems"]["items"]
    assert (bad["line"], bad["kind"], bad["value"]) == (4, "bad_number", "64,64,0.1x,0.1")


def _train_only(max_bad=0.05):
    from medtfod.data.convert import ConvertOptions
    return ConvertOptions(fractions={"train": 1.0}, workers=1, max_bad=max_bad)


DDTI_CASE = ("<case><number>{n}</number><age>{age}</age><sex>{sex}</sex><composition>solid</composition>"
             "<echogenicity></echogenicity><margins>well defined</margins><calcifications>non</calcifications>"
             "<tirads>{tirads}</tirads><reportbacaf></reportbacaf><reporteco></reporteco>{marks}</case>")
SVG = json.dumps([{"points": [{"x": 3, "y": 3}, {"x": 20, "y": 3}, {"x": 20, "y": 15}],
                   "annotation": {}, "regionType": "freehand"}])


def test_ddti_case_fields_every_image_empty_stays_absent(tmp_path):
    xml, images = tmp_path / "xml", tmp_path / "images"
    xml.mkdir()
    marks = "".join(f"<mark><image>{i}</image><svg>{SVG}</svg></mark>" for i in (1, 2))
    write(xml / "1.xml", DDTI_CASE.format(n=1, age=" 45 ", sex="F", tirads="4a", marks=marks))
    write(xml / "2.xml", DDTI_CASE.format(n=2, age="", sex="M", tirads="", marks=marks[:len(marks) // 2]))
    for name in ("1_1.jpg", "1_2.jpg", "2_1.jpg"):
        png(images, name, 40, 30, "RGB")
    ds = Dataset.convert("ddti", str(images), str(tmp_path / "out"), xml_dir=str(xml), options=_train_only())
    case1 = {"age": "45", "sex": "F", "composition": "solid", "margins": "well defined", "calcifications": "non",
             "tirads": "4a"}
    assert ds.meta() == {"1_1.jpg": case1, "1_2.jpg": case1,
                         "2_1.jpg": {"sex": "M", "composition": "solid", "margins": "well defined",
                                     "calcifications": "non"}}  # no age, no tirads: not guessed
    assert "echogenicity" not in ds.fields


def test_csv_meta_columns_and_errors(tmp_path):
    images = tmp_path / "images"
    for name in ("a.png", "b.png", "c.png"):
        png(images, name)
    columns = "filename=file,label=cls,x=x,y=y,w=w,h=h"
    table = write(tmp_path / "t.csv", "file,cls,x,y,w,h,Age,Site\n"
                  "a.png,nodule,1,1,5,5,45 ,left\n"
                  "a.png,nodule,10,10,5,5,,left\n"       # an empty cell does not disagree
                  "b.png,,,,,,,\n"
                  "c,nodule,2,2,4,4,70,right\n")           # named by its stem: meta follows the image
    assert main(["convert", "csv", "--table", table, "--columns", columns, "--images", str(images),
                 "--out", str(tmp_path / "out"), "--meta", "Age,Site", "--split", "train=1", "-q"]) == 0
    assert {n: e.meta for n, e in entries(tmp_path / "out").items()} == {
        "a.png": {"age": "45", "site": "left"}, "b.png": {}, "c.png": {"age": "70", "site": "right"}}
    with pytest.raises(UserError, match=r"t.csv: --meta column 'Sight' is not in the file; its columns: 'file', "
                                        r".*'Site'; did you mean 'Site'\?"):
        Dataset.convert("csv", str(images), str(tmp_path / "o2"), table=table, columns=columns, meta="Age,Sight")
    bad = write(tmp_path / "bad.csv", "file,cls,x,y,w,h,Age\na.png,nodule,1,1,5,5,45\na.png,nodule,9,9,5,5,46\n")
    with pytest.raises(UserError, match=r"bad.csv:3: a.png has 'Age' '46' here but '45' on line 2"):
        Dataset.convert("csv", str(images), str(tmp_path / "o3"), table=bad, columns=columns, meta="Age")


def test_coco_meta_keys(tmp_path):
    images = tmp_path / "images"
    for name in ("a.png", "b.png"):
        png(images, name)
    coco = {"images": [{"id": 1, "file_name": "sub/a.png", "width": 64, "height": 32, "age": 45, "sex": "F ",
                        "site": None},
                       {"id": 2, "file_name": "b.png", "width": 64, "height": 32, "sex": ""}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
            "categories": [{"id": 1, "name": "nodule"}]}
    path = write(tmp_path / "c.json", json.dumps(coco))
    ds = Dataset.convert("coco", str(images), str(tmp_path / "out"), json=path, meta="age,sex,site",
                         options=_train_only())
    assert ds.meta() == {"a.png": {"age": "45", "sex": "F"}, "b.png": {}}  # null and "" stay absent
    with pytest.raises(UserError, match=r"c.json: --meta key 'gender' is not in the file; its keys: 'id', "
                                        r"'file_name', .*'sex', 'site'"):
        Dataset.convert("coco", str(images), str(tmp_path / "o2"), json=path, meta="gender")
    coco["images"][1]["sex"] = ["F"]
    listed = write(tmp_path / "l.json", json.dumps(coco))
    with pytest.raises(UserError, match=r"--meta 'sex' of b.png is list"):
        Dataset.convert("coco", str(images), str(tmp_path / "o3"), json=listed, meta="sex")


def test_siim_meta_needs_a_header_and_reads_extra_columns(tmp_path):
    images = tmp_path / "images"
    for name in ("1.2.3.png", "1.2.4.png"):
        png(images, name, 4, 4)
    rle = write(tmp_path / "rle.csv", "ImageId, EncodedPixels, Age\n1.2.3, 5 2,33\n1.2.4, -1,\n")
    ds = Dataset.convert("siim", str(images), str(tmp_path / "out"), rle_csv=rle, width=4, height=4, meta="Age",
                         options=_train_only())
    assert ds.meta() == {"1.2.3.png": {"age": "33"}, "1.2.4.png": {}}
    headless = write(tmp_path / "h.csv", "1.2.3, 5 2,33\n")
    with pytest.raises(UserError, match="--meta needs a header"):
        Dataset.convert("siim", str(images), str(tmp_path / "o2"), rle_csv=headless, width=4, height=4, meta="Age")


def test_dicom_header_fields(tmp_path):
    pytest.importorskip("pydicom")
    from test_dicom import write_dicom
    images = tmp_path / "images"
    images.mkdir()
    write_dicom(images / "a.dcm", np.zeros((30, 40), np.uint16), PatientSex="F", PatientAge="045Y",
                ViewPosition="PA", PixelSpacing=["0.139", "0.1390"])
    write_dicom(images / "b.dcm", np.zeros((30, 40), np.uint16), PatientSex="", ImagerPixelSpacing=["0.2", "0.25"])
    table = write(tmp_path / "t.csv", "file,cls,x,y,w,h,view\na.dcm,nodule,1,1,5,5,AP\nb.dcm,,,,,,\n")
    ds = Dataset.convert("csv", str(images), str(tmp_path / "out"), table=table,
                         columns="filename=file,label=cls,x=x,y=y,w=w,h=h", meta="view", options=_train_only())
    assert ds.meta() == {  # the table's --meta column wins over the header's view position
        "a.dcm": {"age": "045Y", "pixel_spacing": "0.139,0.1390", "sex": "F", "view": "AP", "view_position": "PA"},
        "b.dcm": {"pixel_spacing": "0.2,0.25"}}


def test_old_manifest_without_meta_loads(tiny_dataset, tmp_path):
    data = json.loads(open(os.path.join(tiny_dataset, "dataset.json")).read())
    for e in data["images"]:
        del e["meta"]
    old = tmp_path / "old"
    old.mkdir()
    write(old / "dataset.json", json.dumps(data))
    manifest = load(str(old))
    assert manifest.images and all(e.meta == {} for e in manifest.images)
    assert manifest.meta()[manifest.images[0].name] == {}
    data["images"][0]["meta"] = {"age": 45}
    write(old / "dataset.json", json.dumps(data))
    with pytest.raises(UserError, match="'meta' must be an object of strings"):
        load(str(old))


def test_dataset_meta_and_audit_counts(tiny_dataset, tmp_path, capsys):
    ds = Dataset(tiny_dataset)
    assert ds.fields == ["age", "pixel_spacing", "sex", "view_position"]
    for split in ds.splits:
        assert set(ds.meta(split)) == {e.name for e in ds.images(split)}
    # demo images are 64 px from a "64 x 64, 0.143 mm" detector: spacing unchanged
    assert {m["pixel_spacing"] for m in ds.meta().values()} == {"0.143,0.143"}
    out = tmp_path / "audit.json"
    assert main(["audit", "--splits", tiny_dataset, "--out", str(out)]) == 0
    fields = json.loads(out.read_text())["fields"]
    expected = collections.Counter((m["sex"], e.split) for e in ds.images() for m in [e.meta])
    assert {(v, s): n for v, by in fields["sex"].items() for s, n in by.items()} == dict(expected)
    printed = capsys.readouterr().out
    line = next(l for l in printed.splitlines() if l.strip().startswith("sex:"))
    female = fields["sex"]["F"]
    assert "F (" + ", ".join(f"{s} {female[s]}" for s in sorted(female)) + ")" in line


def test_audit_counts_empty_and_natural_order():
    from medtfod.data.audit import field_counts, fields_summary
    from medtfod.data.manifest import ImageEntry

    def entry(name, split, **meta):
        return ImageEntry(name, split, name, 1, 1, 0, "t", 0, "", meta)
    counts = field_counts([entry("a", "train", tirads="4a"), entry("b", "val", tirads="10"),
                           entry("c", "train", tirads="2"), entry("d", "train")])
    assert list(counts["tirads"]) == ["2", "4a", "10", "(empty)"]
    assert counts["tirads"]["(empty)"] == {"train": 1}
    assert fields_summary(counts) == ["  tirads: 2 (train 1)  4a (train 1)  10 (val 1)  (empty) (train 1)"]


# --- the real DDTI files in ../shared ---------------------------------------------------

def _xml_case_fields(xml_dir):
    """case number -> {field: value} parsed here with defusedxml, apart from medtfod's reader."""
    from defusedxml.ElementTree import parse
    cases = {}
    for name in os.listdir(xml_dir):
        if name.endswith(".xml"):
            root = parse(os.path.join(xml_dir, name)).getroot()
            cases[root.findtext("number").strip()] = {child.tag: (child.text or "").strip() for child in root
                                                      if child.tag != "mark"}
    return cases


def test_real_ddti_fields_match_the_xmls(shared_data, tmp_path):
    base = os.path.join(shared_data, "thyroid_ddti")
    xml_dir = os.path.join(base, "xml")
    ds = Dataset.convert("ddti", os.path.join(shared_data, "thyroid_ddti_full", "images"), str(tmp_path / "out"),
                         xml_dir=xml_dir, options=_train_only())
    cases = _xml_case_fields(xml_dir)
    assert len(cases) == 390
    images = ds.images()
    assert len(images) == 466
    for field in ("tirads", "composition", "age", "sex", "echogenicity", "margins", "calcifications"):
        from_xml = collections.Counter(cases[e.patient][field] or "(empty)" for e in images)
        in_manifest = collections.Counter(e.meta.get(field, "(empty)") for e in images)
        assert in_manifest == from_xml, field
    # per case (each case counted once): the counts a reader of the XMLs alone would give
    kept = {e.patient for e in images}
    tirads = collections.Counter(cases[c]["tirads"] or "(empty)" for c in kept)
    assert tirads == collections.Counter({e.patient: e.meta.get("tirads", "(empty)") for e in images}.values())
    assert all(e.meta == {k: v for k, v in cases[e.patient].items() if v and k not in ("number", "reportbacaf",
                                                                                        "reporteco")}
               for e in images)


def test_real_ddti_metrics_by_tirads_counts(shared_data, tmp_path, capsys):
    """`metrics --by tirads` on the real DDTI set with detections made here: every other image's
    lesions found exactly (score 0.9), one false positive per image in a corner no lesion touches
    (score 0.6); each TI-RADS stratum's numbers are counted again here from the manifest."""
    import csv
    from medtfod.core.boxes import Box, iou
    ds = Dataset.convert("ddti", os.path.join(shared_data, "thyroid_ddti_full", "images"), str(tmp_path / "out"),
                         xml_dir=os.path.join(shared_data, "thyroid_ddti", "xml"), options=_train_only())
    gt = ds.ground_truth("train")
    corner = Box(0, 0, 4, 4)
    assert all(iou(box, corner) == 0 for boxes in gt.values() for _, box in boxes)
    found = {name for k, name in enumerate(sorted(gt)) if k % 2 == 0}
    path = tmp_path / "detections.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "score", "xmin", "ymin", "xmax", "ymax"])
        for name in sorted(gt):
            for label, box in gt[name] if name in found else []:
                writer.writerow([name, label, "0.9", *(f"{v:.2f}" for v in (box.xmin, box.ymin, box.xmax, box.ymax))])
            writer.writerow([name, ds.label_names[0], "0.6", "0", "0", "4", "4"])
    out = tmp_path / "metrics.json"
    assert main(["metrics", "--detections", str(path), "--ground-truth", ds.path, "--split", "train",
                 "--out", str(out), "--bootstrap", "0", "--by", "tirads", "--min-score", "0.5"]) == 0
    strata = {s["name"]: s for s in json.loads(out.read_text())["strata"]["by"]["tirads"]["strata"]}
    entries = ds.images("train")
    values = sorted({e.meta.get("tirads", "(empty)") for e in entries})
    assert sorted(strata) == values and "4a" in strata
    for value in values:
        own = [e for e in entries if e.meta.get("tirads", "(empty)") == value]
        lesions = sum(len(gt[e.name]) for e in own)
        hits = sum(len(gt[e.name]) for e in own if e.name in found)
        s = strata[value]
        assert (s["lesions"], s["images"], s["patients"]) == (lesions, len(own), len({e.patient for e in own})), value
        assert s["sensitivity"] == pytest.approx(hits / lesions) and s["mean_iou"] == pytest.approx(hits / lesions)
        assert s["fp_per_image"] == pytest.approx(1.0) and s["too_small"] == (lesions < 10)
    assert "tirads: 4a" in capsys.readouterr().out
