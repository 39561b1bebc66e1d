"""The correction loop for real, through the installed `medtfod` command on the trained fixture:
detect --annotations -> (labelImg) -> review-diff, with labelImg's own reader and writer."""
import csv
import json
import os

import pytest

from support.cli import fenced


@pytest.mark.slow
@pytest.mark.tf
def test_detect_preannotations_read_back_and_review_diff(trained, pascal_voc_io, tmp_path):
    root = trained["root"]
    out = f"loop-{os.getpid()}"  # inside the fixture's root, so `fenced` watches the images too
    fenced(root, [out], "detect", "--model", trained["exported"], "--images", trained["images"],
           "--out", f"{root}/{out}/det", "--min-score", "0", "--max-per-image", "2", "--no-draw",
           "--annotations", "voc", "--annotations-out", f"{root}/{out}/pre", "-q")
    pre = os.path.join(root, out, "pre")
    with open(os.path.join(root, out, "det", "detections.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(os.listdir(trained["images"]))  # min score 0: two boxes per image
    names = sorted(os.listdir(trained["images"]))
    assert sorted(os.listdir(pre)) == sorted([os.path.splitext(n)[0] + ".xml" for n in names]
                                             + ["classes.txt", "queue.csv", ".medtfod-preannotations.json"])
    assert "<depth>1</depth>" in open(os.path.join(pre, os.path.splitext(names[0])[0] + ".xml")).read()  # grey PNGs
    # labelImg's own reader gives back the detections, rounded to whole pixels as labelImg writes
    # (1-based corners, at least one pixel wide). The CSV has them to 2 decimals, so a value
    # written as 9.50 may be 9.4996 rounded (to 9): the whole pixel is within 0.505 of it.
    def near(pixel, value):
        return abs(pixel - float(value)) <= 0.505

    for name in names:
        shapes = pascal_voc_io.PascalVocReader(os.path.join(pre, os.path.splitext(name)[0] + ".xml")).get_shapes()
        boxes = [r for r in rows if r["image"] == name]
        assert [s[0] for s in shapes] == [r["label"] for r in boxes], name
        for shape, r in zip(shapes, boxes):
            (xmin, ymin), (xmax, ymax) = shape[1][0], shape[1][2]
            assert near(xmin - 1, r["xmin"]) and near(ymin - 1, r["ymin"]), (name, shape, r)
            assert (near(xmax, r["xmax"]) or xmax == xmin) and (near(ymax, r["ymax"]) or ymax == ymin), (name, shape, r)
    with open(os.path.join(pre, "queue.csv"), newline="") as f:
        queue = list(csv.DictReader(f))
    assert [q["image"] for q in queue] == names
    for q in queue:  # the highest score before the threshold, and its distance to the threshold (0 here)
        top = max(float(r["score"]) for r in rows if r["image"] == q["image"])
        assert float(q["top_score"]) == top == float(q["distance_to_threshold"]) and q["boxes"] == "2"

    # Label Studio tasks of the same run: one per image, the same boxes in percent
    fenced(root, [out], "detect", "--model", trained["exported"], "--images", trained["images"],
           "--out", f"{root}/{out}/det-ls", "--min-score", "0", "--max-per-image", "2", "--no-draw",
           "--annotations", "labelstudio", "--annotations-out", f"{root}/{out}/ls", "-q")
    tasks = json.load(open(os.path.join(root, out, "ls", "tasks.json")))
    assert len(tasks) == len(names)
    assert sum(len(t["predictions"][0]["result"]) for t in tasks) == len(rows)

    # a reader deletes the first box they see and marks that image verified, in labelImg's own format
    first = next(n for n in names if any(r["image"] == n for r in rows))
    stem = os.path.splitext(first)[0]
    corrected = os.path.join(root, out, "corrected")
    os.makedirs(corrected)
    shapes = pascal_voc_io.PascalVocReader(os.path.join(pre, stem + ".xml")).get_shapes()
    writer = pascal_voc_io.PascalVocWriter("images", first, (128, 128, 3))
    writer.verified = True
    for label, points, *_ in shapes[1:]:
        writer.add_bnd_box(points[0][0], points[0][1], points[2][0], points[2][1], label, 0)
    writer.save(os.path.join(corrected, stem + ".xml"))
    result = fenced(root, [out], "review-diff", "--predicted", pre, "--corrected", corrected,
                    "--out", f"{root}/{out}/diff.json")
    diff = json.load(open(os.path.join(root, out, "diff.json")))
    assert diff["images"]["reviewed"] == 1 and diff["images"]["not_reviewed"] == len(names) - 1
    assert diff["boxes"]["deleted"] == 1 and diff["boxes"]["kept"] == len(shapes) - 1
    assert diff["verified"] == [first]
    assert "1 reviewed" in result.stdout
