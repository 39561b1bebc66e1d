"""Pre-annotations (`detect --annotations`): VOC read back by labelImg's own reader, COCO by
pycocotools, Label Studio tasks by percent arithmetic; nothing a reader corrected is overwritten."""
import contextlib
import io
import json
import os

import pytest

from medtfod.inference import preannotate
from medtfod.core.annotations import Detection
from medtfod.core.boxes import Box
from medtfod.core.errors import UserError
from medtfod.core.labelmap import LabelMap
from medtfod.inference.preannotate import Predicted

LABELS = LabelMap({"Nodule": 1, "Mass": 2})


def predictions(tmp_path):
    def det(image, label, score, *box):
        return Detection(image, label, score, Box(*box))
    return [
        Predicted("a.png", str(tmp_path / "imgs" / "a.png"), 200, 100,
                  [det("a.png", "Nodule", 0.91, 10.4, 20.6, 50.2, 60.5), det("a.png", "Mass", 0.55, 0.0, 0.2, 199.7, 99.9)],
                  0.91),
        Predicted("sub/b.png", str(tmp_path / "imgs" / "sub" / "b.png"), 64, 64, [], 0.48, 1),  # grey; below 0.5: no box
        Predicted("c.jpg", str(tmp_path / "imgs" / "c.jpg"), 300, 300, [det("c.jpg", "Mass", 0.5, 3, 4, 30, 40)], 0.5),
    ]


def labelimg_corners(box):
    """What labelImg shows for our VOC box: the writer's rounding, 1-based inclusive corners."""
    xmin, ymin = round(box.xmin), round(box.ymin)
    return (xmin + 1, ymin + 1), (max(round(box.xmax), xmin + 1), max(round(box.ymax), ymin + 1))


def test_voc_preannotations_read_back_through_labelimg(pascal_voc_io, tmp_path):
    images = predictions(tmp_path)
    out = tmp_path / "pre"
    written = preannotate.write("voc", str(out), images, LABELS, 0.5, "m1")
    assert written == ["a.xml", "b.xml", "c.xml", "classes.txt", "queue.csv"]
    assert sorted(p.name for p in out.iterdir()) == [".medtfod-preannotations.json"] + written
    assert (out / "classes.txt").read_text().splitlines() == ["Nodule", "Mass"]  # the label map's order
    assert "<depth>1</depth>" in (out / "b.xml").read_text() and "<depth>3</depth>" in (out / "a.xml").read_text()
    for p in images:
        reader = pascal_voc_io.PascalVocReader(str(out / (p.name.split("/")[-1].rsplit(".", 1)[0] + ".xml")))
        shapes = reader.get_shapes()
        assert reader.verified is False
        assert [(s[0], s[1][0], s[1][2]) for s in shapes] == [(d.label, *labelimg_corners(d.box)) for d in p.kept]


def test_coco_and_labelstudio_preannotations(tmp_path):
    from pycocotools.coco import COCO
    images = predictions(tmp_path)
    preannotate.write("coco", str(tmp_path / "coco"), images, LABELS, 0.5, "m1")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "coco" / "coco.json"))
    kept = [d for p in images for d in p.kept]
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == len(kept)
    for ann, d in zip(anns, kept):
        assert coco.loadCats(ann["category_id"])[0]["name"] == d.label and ann["score"] == d.score
        assert ann["bbox"] == pytest.approx(list(d.box.to_xywh()), abs=1e-4)

    preannotate.write("labelstudio", str(tmp_path / "ls"), images, LABELS, 0.5, "m1")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    config = (tmp_path / "ls" / "labeling_config.xml").read_text()
    assert '<RectangleLabels name="label" toName="image">' in config and '<Label value="Mass"/>' in config
    assert [t["data"]["image"] for t in tasks] == ["/data/local-files/?d=a.png", "/data/local-files/?d=sub/b.png",
                                                  "/data/local-files/?d=c.jpg"]
    for task, p in zip(tasks, images):
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "m1"
        assert prediction["score"] == max((d.score for d in p.kept), default=0.0)
        for region, d in zip(prediction["result"], p.kept):
            v, w, h = region["value"], region["original_width"], region["original_height"]
            assert (region["from_name"], region["to_name"], region["type"]) == ("label", "image", "rectanglelabels")
            assert (w, h) == (p.width, p.height) and v["rectanglelabels"] == [d.label] and region["score"] == d.score
            back = (v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100, (v["y"] + v["height"]) * h / 100)
            assert back == pytest.approx((d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax), abs=1e-3)
        assert len(prediction["result"]) == len(p.kept)


def test_a_corrected_preannotation_is_never_overwritten(tmp_path):
    images = predictions(tmp_path)
    out = tmp_path / "pre"
    preannotate.write("voc", str(out), images, LABELS, 0.5, "m1")
    preannotate.write("voc", str(out), images, LABELS, 0.5, "m1")  # the same run again: fine
    preannotate.write("voc", str(out), images, LABELS, 0.4, "m2")  # untouched files of an earlier run: replaced
    assert "a.png,0.910000,2,0.510000" in (out / "queue.csv").read_text()  # distances to 0.4 now
    preannotate.write("voc", str(out), images[:2], LABELS, 0.4, "m2")  # c.jpg left the input: its stale file goes
    assert not (out / "c.xml").exists()
    corrected = (out / "a.xml").read_text().replace("<annotation>", '<annotation verified="yes">')
    (out / "a.xml").write_text(corrected)
    queue = (out / "queue.csv").read_text()
    with pytest.raises(UserError, match=r"a\.xml is changed since medtfod wrote it .*nothing was run"):
        preannotate.write("voc", str(out), images, LABELS, 0.3, "m3")
    assert (out / "a.xml").read_text() == corrected and (out / "queue.csv").read_text() == queue
    assert not (out / "c.xml").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "c.xml").write_text("<annotation/>")  # someone's own file with a name we would write
    with pytest.raises(UserError, match=r"c\.xml is not written by medtfod"):
        preannotate.check_replaceable(str(foreign), preannotate.planned_files("voc", [p.name for p in images]))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file; give a folder"):
        preannotate.check_replaceable(str(tmp_path / "afile"), ["a.xml"])


def test_colliding_stems_and_unknown_formats_are_refused_before_work(tmp_path):
    with pytest.raises(UserError, match=r"x/a\.png and y/A\.jpg would share one annotation file"):
        preannotate.check_names("voc", ["x/a.png", "y/A.jpg"])
    preannotate.check_names("coco", ["x/a.png", "y/a.png"])  # one JSON file: no collision
    with pytest.raises(UserError, match="expected one of voc, labelstudio, coco"):
        preannotate.check_names("yolo", ["a.png"])


def test_uncertainty_order_puts_scores_nearest_the_threshold_first(tmp_path):
    images = predictions(tmp_path)
    preannotate.write("voc", str(tmp_path / "pre"), images, LABELS, 0.5, "m1")
    distance = preannotate.read_queue(str(tmp_path / "pre"))
    assert distance == pytest.approx({"a.png": 0.41, "sub/b.png": 0.02, "c.jpg": 0.0})
    assert preannotate.uncertainty_order(["a.png", "z.png", "c.jpg", "sub/b.png"], distance) == [
        "c.jpg", "sub/b.png", "a.png", "z.png"]  # z.png was not pre-annotated: last
    assert preannotate.read_queue(str(tmp_path)) is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "queue.csv").write_text("image,score\na.png,x\n")
    with pytest.raises(UserError, match="not a medtfod queue.csv"):
        preannotate.read_queue(str(tmp_path / "bad"))


@pytest.fixture(scope="session")
def label_studio_sdk(tmp_path_factory):
    """A folder holding label-studio-sdk and exactly what its converter and validator import
    (requirements/labelstudio-check.txt, ~190 MB, 7-11 s with pip), or a skip with pip's reason."""
    import subprocess
    import sys
    from support import REPO
    target = tmp_path_factory.mktemp("label-studio-sdk")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                             "--disable-pip-version-check", "--target", str(target),
                             "-r", f"{REPO}/requirements/labelstudio-check.txt"], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"label-studio-sdk could not be installed here: {result.stderr.strip()[-300:]}")
    return target


CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "labelstudio_check.py")


@pytest.mark.slow
def test_labelstudio_tasks_pass_the_label_studio_sdk(label_studio_sdk, tmp_path):
    """The SDK's own validator accepts our tasks, and its converter (predictions given as
    annotations) turns them back into our pixel boxes."""
    import subprocess
    import sys
    images = predictions(tmp_path)
    preannotate.write("labelstudio", str(tmp_path / "ls"), images, LABELS, 0.5, "m1")
    work = tmp_path / "work"
    work.mkdir()
    check = subprocess.run([sys.executable, "-S", CHECK,
                            str(tmp_path / "ls" / "tasks.json"), str(tmp_path / "ls" / "labeling_config.xml"),
                            str(work)], capture_output=True, text=True,
                           env={"PYTHONPATH": str(label_studio_sdk), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert check.returncode == 0, check.stderr[-2000:]
    found = json.loads(check.stdout.strip().splitlines()[-1])
    assert found["errors"] == []
    for image, p in zip(found["images"], images):
        assert len(image["boxes"]) == len(p.kept)
        if p.kept:  # the converter takes the size from the regions (an image without any has none)
            assert (image["width"], image["height"]) == (p.width, p.height)
        for (label, x, y, w, h), d in zip(image["boxes"], p.kept):
            assert label == d.label
            assert (x, y, x + w, y + h) == pytest.approx((d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax), abs=1e-3)
    # the SDK's validator does catch a broken prediction (the check above could fail)
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    tasks[0]["predictions"][0]["result"][0]["from_name"] = "labels"
    (tmp_path / "ls" / "tasks.json").write_text(json.dumps(tasks))
    (work / "coco").mkdir(exist_ok=True)
    broken = subprocess.run([sys.executable, "-S", CHECK,
                             str(tmp_path / "ls" / "tasks.json"), str(tmp_path / "ls" / "labeling_config.xml"),
                             str(work)], capture_output=True, text=True,
                            env={"PYTHONPATH": str(label_studio_sdk), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert broken.returncode == 0 and json.loads(broken.stdout.strip().splitlines()[-1])["errors"], broken.stderr[-2000:]
