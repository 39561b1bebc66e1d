"""`medtfod review-diff`: pre-annotations edited the way a reader does in labelImg (saved with
labelImg's own PascalVocWriter), every count of diff.json checked."""
import json

import pytest

from medtfod.inference import preannotate
from medtfod.core.annotations import Detection
from medtfod.core.boxes import Box
from medtfod.cli import main
from medtfod.core.labelmap import LabelMap
from medtfod.inference.preannotate import Predicted

LABELS = LabelMap({"Nodule": 1, "Mass": 2})


def predicted_folder(tmp_path):
    boxes = {"a": [("Nodule", (10, 10, 40, 40)), ("Mass", (100, 50, 180, 90))], "b": [("Nodule", (20, 20, 60, 60))],
             "c": [("Mass", (5, 5, 50, 50))], "d": [("Nodule", (30, 30, 70, 70))], "e": [],
             "f": [("Nodule", (1, 1, 9, 9))], "h": [("Mass", (10, 10, 20, 20))], "i": [], "j": []}
    images = [Predicted(f"{k}.png", str(tmp_path / "imgs" / f"{k}.png"), 200, 100,
                        [Detection(f"{k}.png", label, 0.9, Box(*box)) for label, box in v], 0.9)
              for k, v in boxes.items()]
    preannotate.write("voc", str(tmp_path / "pre"), images, LABELS, 0.5, "m1")
    return tmp_path / "pre"


def resave(pascal_voc_io, pre, corrected, stem, edit=lambda shapes: shapes, verified=False):
    """What labelImg does: load the file's shapes, let the reader edit them, save with its writer."""
    shapes = [(s[0], s[1][0] + s[1][2]) for s in pascal_voc_io.PascalVocReader(str(pre / f"{stem}.xml")).get_shapes()]
    writer = pascal_voc_io.PascalVocWriter("imgs", f"{stem}.png", (100, 200, 3), local_img_path=f"/imgs/{stem}.png")
    writer.verified = verified
    for label, (xmin, ymin, xmax, ymax) in edit(shapes):
        writer.add_bnd_box(xmin, ymin, xmax, ymax, label, 0)
    writer.save(str(corrected / f"{stem}.xml"))


def test_review_diff_counts_every_kind_of_correction(pascal_voc_io, tmp_path, capsys):
    pre = predicted_folder(tmp_path)
    corrected = tmp_path / "corrected"
    corrected.mkdir()
    resave(pascal_voc_io, pre, corrected, "a", lambda s: [x for x in s if x[0] != "Mass"])  # a false positive deleted
    resave(pascal_voc_io, pre, corrected, "b", lambda s: [(lab, (x0 + 5, y0, x1 + 5, y1)) for lab, (x0, y0, x1, y1) in s])
    resave(pascal_voc_io, pre, corrected, "c", lambda s: [("Nodule", box) for _, box in s])  # relabelled
    resave(pascal_voc_io, pre, corrected, "d", verified=True)  # accepted as it was, marked verified
    resave(pascal_voc_io, pre, corrected, "e", lambda s: s + [("Mass", (50, 20, 90, 60))])  # a missed lesion added
    # f: never opened (no corrected file). h, i, j: files labelImg cannot have written
    resave(pascal_voc_io, pre, corrected, "h", lambda s: [("Nodul", box) for _, box in s])
    (corrected / "i.xml").write_text("<annotation><filename>i.png</filename><object>")
    resave(pascal_voc_io, pre, corrected, "j", lambda s: [("Mass", (150, 50, 260, 90))])  # beyond the 200 px width
    resave(pascal_voc_io, pre, corrected, "e", lambda s: [("Mass", (50, 20, 90, 60))])  # (e again: its real correction)
    writer = pascal_voc_io.PascalVocWriter("imgs", "z.png", (100, 200, 3))  # an image never pre-annotated
    writer.add_bnd_box(5, 5, 20, 20, "Mass", 0)
    writer.save(str(corrected / "z.xml"))

    out = tmp_path / "diff.json"
    assert main(["review-diff", "--predicted", str(pre), "--corrected", str(corrected), "--out", str(out)]) == 0
    diff = json.loads(out.read_text())
    assert diff["images"] == {"predicted": 9, "reviewed": 5, "not_reviewed": 1, "accepted_as_is": 1,
                              "accepted_share": 0.2, "verified": 1, "unreadable": 3, "not_pre_annotated": 1}
    assert diff["boxes"] == {"predicted_in_reviewed": 5, "kept": 2, "moved": 1, "relabelled": 1, "deleted": 1,
                             "added": 1, "kept_share": 0.4}
    assert diff["per_class"] == {"Mass": {"kept": 0, "moved": 0, "relabelled": 1, "deleted": 1, "added": 1},
                                 "Nodule": {"kept": 2, "moved": 1, "relabelled": 0, "deleted": 0, "added": 0}}
    assert diff["not_reviewed"] == ["f.png"] and diff["verified"] == ["d.png"]
    assert diff["unreadable"] == ["h.png", "i.png", "j.png"] and diff["not_pre_annotated"] == ["z.png"]
    assert diff["per_image"]["b.png"]["changes"][0] == {"outcome": "moved", "label": "Nodule", "from": [20, 20, 60, 60],
                                                         "to": [25, 20, 65, 60], "iou": pytest.approx(35 / 45, abs=1e-4)}
    assert diff["per_image"]["c.png"]["changes"][0]["new_label"] == "Nodule"
    assert diff["per_image"]["d.png"] == {"status": "reviewed", "verified": True, "accepted_as_is": True, "kept": 1,
                                          "moved": 0, "relabelled": 0, "deleted": 0, "added": 0,
                                          "changes": [{"outcome": "kept", "label": "Nodule", "from": [30, 30, 70, 70],
                                                       "to": [30, 30, 70, 70], "iou": 1.0}]}
    kinds = {p["kind"]: p for p in diff["problems"]}
    assert set(kinds) == {"unknown_label", "bad_xml", "box_outside_image"}
    assert "did you mean 'Nodule'" in kinds["unknown_label"]["message"] and kinds["unknown_label"]["file"].endswith("h.xml")
    assert kinds["box_outside_image"]["value"] == "150,50,260,90" and kinds["bad_xml"]["file"].endswith("i.xml")
    assert kinds["bad_xml"]["file"].startswith("/")  # absolute, like "predicted" and "corrected"
    printed = capsys.readouterr().out
    assert "5 reviewed, 1 not reviewed, 1 accepted as they were (20% of reviewed), 1 marked verified" in printed
    assert "2 of 5 predicted kept unchanged (40%)" in printed and "h.xml" in printed
    assert "1 corrected files for images never pre-annotated (not compared)" in printed


def test_review_diff_refuses_missing_folders_and_outputs_inside_inputs(tmp_path, capsys):
    pre = predicted_folder(tmp_path)
    assert main(["review-diff", "--predicted", str(pre), "--corrected", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "d.json")]) == 1
    assert "--corrected folder not found" in capsys.readouterr().err
    assert main(["review-diff", "--predicted", str(pre), "--corrected", str(tmp_path / "c"),
                 "--out", str(pre / "d.json")]) == 1
    assert "inside the input folder" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    assert main(["review-diff", "--predicted", str(pre), "--corrected", str(pre), "--out", str(tmp_path / "d.json")]) == 1
    assert "are the same folder" in capsys.readouterr().err
    assert main(["review-diff", "--predicted", str(pre), "--corrected", str(tmp_path / "c"), "--out", str(tmp_path)]) == 1
    assert "is a folder; give a file name" in capsys.readouterr().err


def test_files_pair_by_name_and_left_or_top_edges_count_as_outside(pascal_voc_io, tmp_path):
    pre = predicted_folder(tmp_path)
    corrected = tmp_path / "corrected"
    corrected.mkdir()
    text = (pre / "b.xml").read_text().replace("<filename>b.png</filename>", "<filename>c.png</filename>")
    (corrected / "b.xml").write_text(text)  # a copy edited by hand: its <filename> is wrong, its name right
    (corrected / "d.xml").write_text((pre / "d.xml").read_text().replace("<xmin>31</xmin>", "<xmin>0</xmin>"))
    diff = json.loads(json.dumps(__import__("medtfod.review.diff", fromlist=["x"]).review_diff(str(pre), str(corrected))))
    assert diff["per_image"]["b.png"]["kept"] == 1 and diff["images"]["reviewed"] == 1
    kinds = {p["kind"] for p in diff["problems"]}
    assert kinds == {"filename_mismatch", "box_outside_image"} and diff["unreadable"] == ["d.png"]
    assert not (pre / "d.json").exists()
