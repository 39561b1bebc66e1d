"""`detect --dicom-sr / --dicom-overlay` without a model: SRs and Secondary Captures built from
`Detection`s on synthetic DICOMs, read back with highdicom and with pydicom alone, compared with
the detections.csv that `outputs.write_tables` writes for the same detections, and validated with
dciodvfy. The end-to-end run through `medtfod detect` is the slow test at the bottom."""
import csv
import os
import sys

import numpy as np
import pytest

from medtfod.core.annotations import Detection
from medtfod.core.boxes import Box
from medtfod.core.errors import UserError
from medtfod.core.labelmap import LabelMap

pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

from medtfod.inference import dicom_results  # noqa: E402
from medtfod.inference.dicom_codes import LOCAL_SCHEME, read_codes  # noqa: E402
from medtfod.inference.dicom_results import DicomRequest, DicomWriter, check_inputs  # noqa: E402
from medtfod.inference.dicom_sr import Algorithm, read_sr  # noqa: E402
from medtfod.inference.inputs import load_image  # noqa: E402
from medtfod.inference.outputs import render, write_tables  # noqa: E402
from medtfod.inference.prediction import Prediction  # noqa: E402
from support import write  # noqa: E402
from support.dicom_files import blobs, sr_rois, validate, write_xray  # noqa: E402

LABELS = LabelMap.from_names(["Mass", "Nodule"])
ALGORITHM = Algorithm((("exported", 1500),), 0.25)


def detections(name):
    """Awkward values: corners with 3 decimals (detections.csv keeps 2), a 7-digit score."""
    return [Detection(name, "Nodule", 0.9134567, Box(10.123, 20.5, 40.257, 50.0)),
            Detection(name, "Mass", 0.25, Box(60.0, 61.004, 100.5, 127.999)),
            Detection(name, "Nodule", 0.5, Box(0.0, 0.0, 128.0, 128.0))]


def write_results(tmp_path, request=DicomRequest(sr=True), name="scan.dcm", found=None, **tags):
    path, source = write_xray(tmp_path / name, blobs(), **tags)
    found = detections(name) if found is None else found
    image = load_image(path)[0]
    prediction = Prediction(0, name, path, 128, 128, found)
    out = tmp_path / "out"
    writer = DicomWriter(str(out), request, LABELS.names, ALGORITHM)
    assert writer.write(name, path, prediction, image, LABELS.ids) is None
    write_tables(str(out), [(d, (128, 128), None) for d in found], [(name, found, None)], LABELS, None, None)
    return out, source, found, image


def csv_rows(out):
    with open(out / "detections.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sr_read_back_equals_detections_csv(tmp_path):
    out, source, _, _ = write_results(tmp_path)
    sr_path = out / "dicom_sr" / "scan.dcm"
    rows = sorted(csv_rows(out), key=lambda r: -float(r["score"]))
    back = read_sr(str(sr_path))  # highdicom.sr.srread
    raw = sr_rois(sr_path)  # pydicom alone
    assert len(back) == len(raw) == len(rows) == 3
    for row, found, (finding, score, points, uid) in zip(rows, back, raw):
        corners = [np.float32(float(row[k])) for k in ("xmin", "ymin", "xmax", "ymax")]  # FL: float32 of the CSV text
        assert [found.box.xmin, found.box.ymin, found.box.xmax, found.box.ymax] == corners
        assert points.tolist() == [[corners[0], corners[1]], [corners[2], corners[1]], [corners[2], corners[3]],
                                   [corners[0], corners[3]], [corners[0], corners[1]]]  # closed, clockwise
        assert found.score == score == float(row["score"])  # DS holds the 6 decimals exactly
        assert found.label == row["label"] and finding == (row["label"], LOCAL_SCHEME, row["label"])
        assert found.referenced_sop_instance_uid == uid == source.SOPInstanceUID


def test_sr_copies_patient_and_study_and_names_the_algorithm(tmp_path):
    out, source, _, _ = write_results(tmp_path)
    sr = pydicom.dcmread(out / "dicom_sr" / "scan.dcm")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber"):
        assert sr[keyword].value == source[keyword].value, keyword
    assert sr.Modality == "SR" and sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.SOPInstanceUID != source.SOPInstanceUID
    assert sr.SeriesNumber == 9001 and sr.Manufacturer == "medtfod"
    texts = []

    def collect(items):
        for item in items:
            texts.append(str(item.get("TextValue", "")))
            collect(item.get("ContentSequence", []))
    collect(sr.ContentSequence)
    # the device observer's name and manufacturer, and TID 4019 in each of the 3 ROI groups and their scores
    assert texts.count("medtfod") == 2 + 3 * 2
    assert texts.count("model exported step 1500") == texts.count("min score 0.25") == 3 * 2


def test_sr_and_overlay_pass_dciodvfy(tmp_path):
    out, _, found, image = write_results(tmp_path, DicomRequest(sr=True, overlay=True))
    errors, warnings = validate(out / "dicom_sr" / "scan.dcm")
    assert errors == [], errors
    assert all("99MEDTFOD" in w for w in warnings), warnings  # the local coding scheme is the only remark
    errors, warnings = validate(out / "dicom_overlay" / "scan.dcm")
    assert errors == [] and warnings == [], errors + warnings
    overlay = pydicom.dcmread(out / "dicom_overlay" / "scan.dcm")
    assert overlay.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and overlay.PhotometricInterpretation == "RGB"
    assert np.array_equal(overlay.pixel_array, np.asarray(render(image, found, None, [], LABELS.ids)))
    assert overlay.SeriesNumber == 9002 and overlay.BodyPartExamined == "CHEST"


def test_overlay_blends_mask_rcnn_masks_as_the_drawn_copy_does(tmp_path):
    path, _ = write_xray(tmp_path / "scan.dcm", blobs())
    found, image = detections("scan.dcm"), load_image(path)[0]
    prediction = Prediction(0, "scan.dcm", path, 128, 128, found, box_masks=np.ones((3, 8, 8), np.float32))
    writer = DicomWriter(str(tmp_path / "out"), DicomRequest(overlay=True), LABELS.names, ALGORITHM)
    assert writer.write("scan.dcm", path, prediction, image, LABELS.ids) is None
    pixels = pydicom.dcmread(tmp_path / "out" / "dicom_overlay" / "scan.dcm").pixel_array
    plain = np.asarray(render(image, found, None, [], LABELS.ids))
    inside = (slice(30, 40), slice(20, 30))  # inside the first box, away from its outline and caption
    assert not np.array_equal(pixels[inside], plain[inside])  # the mask's colour is blended in
    prediction.image = image
    from medtfod.inference.outputs import finish
    copy = tmp_path / "drawn"
    finish(prediction, None, str(copy), LABELS.ids)  # detect's own drawn copy of the same prediction
    from PIL import Image
    assert np.array_equal(pixels, np.asarray(Image.open(copy / "scan.png")))


def test_overlay_of_a_source_without_orientation_passes_dciodvfy(tmp_path):
    out, *_ = write_results(tmp_path, DicomRequest(overlay=True), PatientOrientation=None)
    overlay = pydicom.dcmread(out / "dicom_overlay" / "scan.dcm")
    assert "PatientOrientation" in overlay and not overlay.PatientOrientation  # type 2: present, empty
    errors, _ = validate(out / "dicom_overlay" / "scan.dcm")
    assert errors == [], errors
    assert not (out / "dicom_sr").exists()


def test_an_image_without_detections_gets_a_report_saying_so(tmp_path):
    out, *_ = write_results(tmp_path, found=[])
    assert read_sr(str(out / "dicom_sr" / "scan.dcm")) == []
    import highdicom as hd
    groups = hd.sr.srread(out / "dicom_sr" / "scan.dcm").content.get_image_measurement_groups()
    assert [(g.finding_type.value, g.finding_type.scheme_designator) for g in groups] == [("373572006", "SCT")]
    errors, _ = validate(out / "dicom_sr" / "scan.dcm")
    assert errors == [], errors


def test_codes_file_maps_classes_and_the_rest_keep_the_default(tmp_path):
    codes = write(tmp_path / "codes.csv", "label,scheme,code,meaning\nNodule,SCT,27925004,Nodule\n")
    out, *_ = write_results(tmp_path, DicomRequest(sr=True, codes=codes))
    findings = [f for f, *_ in sr_rois(out / "dicom_sr" / "scan.dcm")]
    assert findings == [("27925004", "SCT", "Nodule"), ("27925004", "SCT", "Nodule"), ("Mass", LOCAL_SCHEME, "Mass")]
    back = read_sr(str(out / "dicom_sr" / "scan.dcm"), read_codes(codes, LABELS.names))
    assert sorted(f.label for f in back) == ["Mass", "Nodule", "Nodule"]


@pytest.mark.parametrize("text, message", [
    ("label,scheme,code\nNodule,SCT,1\n", "missing column.*meaning"),
    ("label,scheme,code,meaning\nNodul,SCT,27925004,Nodule\n", "line 2: 'Nodul' is not a class.*did you mean 'Nodule'"),
    ("label,scheme,code,meaning\nNodule,SCT,,Nodule\n", "line 2: empty code"),
    ("label,scheme,code,meaning\nMass,SCT,1,M\nMass,SCT,2,M\n", "line 3: 'Mass' is given a second time"),
])
def test_bad_codes_file(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_codes(write(tmp_path / "codes.csv", text), LABELS.names)


def test_non_dicom_inputs_are_refused_or_noted(tmp_path):
    with pytest.raises(UserError, match="none of the 2 input images is DICOM.*a.png"):
        check_inputs([("a.png", "/x/a.png"), ("b.jpg", "/x/b.jpg")], None, "--dicom-sr")
    with pytest.raises(UserError, match="dataset.*PNG copies without their DICOM headers"):
        check_inputs([("a.png", lambda: b"")], "data", "--dicom-sr")
    check_inputs([("a.png", "/x/a.png"), ("b.dcm", "/x/b.dcm")], None, "--dicom-sr")  # one DICOM is enough
    writer = DicomWriter(str(tmp_path / "out"), DicomRequest(sr=True), LABELS.names, ALGORITHM)
    png = tmp_path / "a.png"
    png.write_bytes(b"")
    assert writer.write("a.png", str(png), Prediction(0, "a.png", str(png)), None, LABELS.ids) == \
        dicom_results.NOT_DICOM
    assert not (tmp_path / "out").exists()


def test_without_highdicom_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(UserError, match=r"need highdicom.*install --dicom.*medtfod\[dicom\]"):
        dicom_results.need_highdicom()


def test_one_series_per_study_and_run(tmp_path):
    request = DicomRequest(sr=True)
    writer = DicomWriter(str(tmp_path / "out"), request, LABELS.names, ALGORITHM)
    study = pydicom.uid.generate_uid()
    for k, (name, study_uid) in enumerate((("a.dcm", study), ("b.dcm", study), ("c.dcm", None))):
        path, _ = write_xray(tmp_path / name, blobs(seed=k), study_uid=study_uid)
        assert writer.write(name, path, Prediction(k, name, path, 128, 128, detections(name)[:1]), None, {}) is None
    a, b, c = (pydicom.dcmread(tmp_path / "out" / "dicom_sr" / n) for n in ("a.dcm", "b.dcm", "c.dcm"))
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != c.SeriesInstanceUID
    assert sorted([a.InstanceNumber, b.InstanceNumber]) == [1, 2] and c.InstanceNumber == 1
    assert len({a.SOPInstanceUID, b.SOPInstanceUID, c.SOPInstanceUID}) == 3
    assert sorted(os.listdir(tmp_path / "out" / "dicom_sr")) == ["a.dcm", "b.dcm", "c.dcm"]  # no temporary files left


def test_a_source_without_type_2_patient_attributes_still_gets_results(tmp_path):
    """Anonymised files often drop PatientBirthDate and friends; the results carry them empty."""
    path, _ = write_xray(tmp_path / "anon.dcm", blobs())
    source = pydicom.dcmread(path)
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber"):
        delattr(source, keyword)
    source.save_as(path, enforce_file_format=True)
    before = open(path, "rb").read()
    writer = DicomWriter(str(tmp_path / "out"), DicomRequest(sr=True, overlay=True), LABELS.names, ALGORITHM)
    found = detections("anon.dcm")[:1]
    assert writer.write("anon.dcm", path, Prediction(0, "anon.dcm", path, 128, 128, found), load_image(path)[0],
                        LABELS.ids) is None
    sr = pydicom.dcmread(tmp_path / "out" / "dicom_sr" / "anon.dcm")
    assert sr.PatientBirthDate == "" and sr.PatientID == source.PatientID
    assert [f.label for f in read_sr(str(tmp_path / "out" / "dicom_sr" / "anon.dcm"))] == ["Nodule"]
    assert open(path, "rb").read() == before  # the source file is only read
    errors, _ = validate(tmp_path / "out" / "dicom_sr" / "anon.dcm")
    assert errors == [], errors


def test_a_frame_of_a_multiframe_file_gets_an_sr_referencing_its_frame_number(tmp_path):
    """Frame #1 (from 0, as detect names it) is DICOM frame number 2 of the file's SOP instance."""
    _, source = write_xray(tmp_path / "cine.dcm", blobs())
    frames = np.stack([blobs(seed=k) for k in range(3)])
    source.SOPClassUID = source.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"  # multi-frame SC
    source.NumberOfFrames, source.PixelData = 3, frames.tobytes()
    source.save_as(tmp_path / "cine.dcm", enforce_file_format=True)
    name, path = "cine.dcm#1", str(tmp_path / "cine.dcm") + "#1"
    image = load_image(path)[0]
    found = detections(name)[:2]
    writer = DicomWriter(str(tmp_path / "out"), DicomRequest(sr=True, overlay=True), LABELS.names, ALGORITHM)
    assert writer.write(name, path, Prediction(0, name, path, 128, 128, found), image, LABELS.ids) is None
    sr_path = tmp_path / "out" / "dicom_sr" / name
    back = read_sr(str(sr_path))
    assert [f.label for f in back] == ["Nodule", "Mass"] and {f.referenced_sop_instance_uid for f in back} == \
        {source.SOPInstanceUID}
    refs = []

    def collect(items):
        for item in items:
            for ref in item.get("ReferencedSOPSequence", []):
                refs.append(int(ref.ReferencedFrameNumber))
            collect(item.get("ContentSequence", []))
    collect(pydicom.dcmread(sr_path).ContentSequence)
    assert refs and set(refs) == {2}
    errors, _ = validate(sr_path)
    assert errors == [], errors
    overlay = pydicom.dcmread(tmp_path / "out" / "dicom_overlay" / name)
    assert overlay.Rows == 128 and overlay.StudyInstanceUID == source.StudyInstanceUID
    assert writer.write("cine.dcm", str(tmp_path / "cine.dcm"), Prediction(0, "cine.dcm", "x", 128, 128, []), None,
                        {}).startswith("a multi-frame DICOM read as one image")


def dicoms_from_demo_images(images, folder, count=3):
    """The first `count` demo PNGs as 12-bit CR DICOMs (value x 16: the display rendering gives the
    model back the picture it was trained on); the first two in one study. {name: dataset}."""
    from PIL import Image
    study = pydicom.uid.generate_uid()
    names = sorted(n for n in os.listdir(images) if n.endswith(".png"))[:count]
    sources = {}
    for k, png in enumerate(names):
        pixels = np.asarray(Image.open(os.path.join(images, png)).convert("L"), np.uint16) * 16
        name = png[:-4] + ".dcm"
        sources[name] = write_xray(os.path.join(folder, name), pixels, patient_id=f"P{k}",
                                   study_uid=study if k < 2 else None)[1]
    return sources, names


@pytest.mark.slow
def test_detect_dicom_sr_end_to_end(trained, tmp_path):
    """`medtfod detect --dicom-sr --dicom-overlay` with the session's tiny SSD on 3 DICOMs and a PNG:
    each SR passes dciodvfy and reads back (highdicom, pydicom) equal to detections.csv; the PNG is
    noted, not refused; a folder without DICOM is refused before anything is written."""
    import shutil

    from support.cli import fenced, medtfod
    images = tmp_path / "images"
    images.mkdir()
    sources, pngs = dicoms_from_demo_images(trained["images"], str(images))
    shutil.copy(os.path.join(trained["images"], pngs[0]), images / "plain.png")
    out = tmp_path / "out"
    result = fenced(str(tmp_path), ["out"], "detect", "--model", trained["exported"], "--images", images, "--out", out,
                    "--min-score", "0", "--max-per-image", "5", "--dicom-sr", "--dicom-overlay", "-q")
    assert f"no DICOM result for plain.png: {dicom_results.NOT_DICOM}" in result.stdout
    assert "DICOM results for 3 images in dicom_sr/ and dicom_overlay/" in result.stdout
    assert sorted(os.listdir(out / "dicom_sr")) == sorted(os.listdir(out / "dicom_overlay")) == sorted(sources)
    rows = csv_rows(out)
    for name, source in sources.items():
        sr_path = out / "dicom_sr" / name
        errors, warnings = validate(sr_path)
        assert errors == [] and all("99MEDTFOD" in w for w in warnings), errors + warnings
        assert validate(out / "dicom_overlay" / name)[0] == []
        expected = sorted((r["label"], float(r["score"]), *(np.float32(float(r[k])) for k in ("xmin", "ymin", "xmax",
                                                                                               "ymax")))
                          for r in rows if r["image"] == name)
        assert len(expected) == 5  # --min-score 0 keeps --max-per-image boxes
        back = sorted((f.label, f.score, f.box.xmin, f.box.ymin, f.box.xmax, f.box.ymax) for f in read_sr(str(sr_path)))
        raw = sorted((finding[2], score, *points.min(0), *points.max(0)) for finding, score, points, uid in
                     sr_rois(sr_path) if uid == source.SOPInstanceUID)
        assert back == expected and raw == expected
    assert pydicom.dcmread(out / "dicom_sr" / pngs[0].replace(".png", ".dcm")).PatientID == "P0"

    only_png = tmp_path / "png_only"
    only_png.mkdir()
    shutil.copy(images / "plain.png", only_png / "plain.png")
    refused = medtfod("detect", "--model", trained["exported"], "--images", only_png, "--out", tmp_path / "refused",
                      "--dicom-sr", check=False)
    assert refused.returncode == 1 and "none of the 1 input images is DICOM (.dcm)" in refused.stderr
    assert not (tmp_path / "refused").exists()
