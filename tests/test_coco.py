"""COCO reader and writer, checked against pycocotools (the reference implementation)."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from medtfod.core.annotations import ImageRecord, Object
from medtfod.core.boxes import Box
from medtfod.core.errors import UserError
from medtfod.core.labelmap import LabelMap
from medtfod.core.masks import Mask
from medtfod.core.problems import Problems
from medtfod.data.readers.coco import compressed_runs, read_coco
from medtfod.data.writers.coco import coco_json

from support import write

W, H = 20, 10


def blob(x0, y0, x1, y1, width=W, height=H):
    bitmap = np.zeros((height, width), np.uint8)
    bitmap[y0:y1, x0:x1] = 1
    return bitmap


def uncompressed(bitmap):
    """Column-major run lengths starting with background, as CVAT writes them."""
    flat = np.concatenate(([0], bitmap.T.flatten(), [1 - bitmap.T.flatten()[-1]]))
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    return np.diff(np.concatenate(([0], changes))).tolist()


def compressed(bitmap):
    return coco_mask.encode(np.asfortranarray(bitmap))["counts"].decode("ascii")


def coco_input():
    poly = [2.0, 1.0, 8.0, 1.0, 8.0, 6.0, 2.0, 6.0]
    return {
        "images": [{"id": 1, "file_name": "sub/dir/a.png", "width": W, "height": H},
                   {"id": 2, "file_name": "b.png", "width": W, "height": H},
                   {"id": 3, "file_name": "c.png", "width": W, "height": H},      # no annotations
                   {"id": 4, "file_name": "d.png", "width": W, "height": H},      # crowd only
                   {"id": 5, "file_name": "e.png", "width": W, "height": H}],     # a bad annotation
        "categories": [{"id": 1, "name": "nodule", "supercategory": ""}, {"id": 7, "name": "mass"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 1, 6, 5], "iscrowd": 0, "segmentation": [poly]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [10, 2, 5, 3], "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": uncompressed(blob(10, 2, 15, 5))}},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0.5, 0.25, 3.5, 2.75], "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": compressed(blob(0, 0, 4, 3))}},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": compressed(blob(1, 1, 6, 6))}},
            {"id": 5, "image_id": 4, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1, "segmentation": []},
            {"id": 6, "image_id": 5, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 0, "segmentation": []},
            {"id": 7, "image_id": 5, "category_id": 3, "bbox": [1, 1, 2, 2], "iscrowd": 0},
        ],
    }


def test_read_synthetic(tmp_path):
    problems = Problems()
    table = read_coco(write(tmp_path / "c.json", json.dumps(coco_input())), problems)
    assert table.source == "coco" and table.patients == {}
    assert [(r.image, r.label, r.box) for r in table.rows] == [
        ("a.png", "nodule", Box(2.0, 1.0, 8.0, 6.0)),
        ("a.png", "mass", Box(10.0, 2.0, 15.0, 5.0)),
        ("b.png", "nodule", Box(0.5, 0.25, 4.0, 3.0)),
        ("e.png", "nodule", Box(1.0, 1.0, 3.0, 3.0)),  # its other annotation is bad: convert drops e.png
    ]
    assert problems.bad_images() == {"e.png"}
    masks = [r.mask for r in table.rows]
    assert masks[0].polygons == ((2.0, 1.0, 8.0, 1.0, 8.0, 6.0, 2.0, 6.0),)
    assert isinstance(masks[1].rle[1], list) and isinstance(masks[2].rle[1], str)
    assert (masks[1].to_bitmap(W, H) == blob(10, 2, 15, 5)).all()
    assert (masks[2].to_bitmap(W, H) == blob(0, 0, 4, 3)).all()
    assert masks[1].bounds(W, H) == Box(10.0, 2.0, 15.0, 5.0)
    assert table.negatives == ["c.png"]  # d.png (crowd only) is not an image without findings
    # crowd regions are expected skips (notes), not errors
    assert [(p.kind, p.value, p.line) for p in problems.notes] == [("skipped_crowd", "4", None), ("skipped_crowd", "5", None)]
    assert [(p.kind, p.value, p.line) for p in problems.items] == [("unknown_category", "3", None)]
    assert problems.notes[0].message.startswith("annotation id 4: a crowd region (iscrowd=1) on b.png")
    assert "annotation id 7" in problems.items[0].message and "'e.png' is dropped" in problems.items[0].message


@pytest.mark.parametrize("change, kind, words", [
    ({"bbox": "1,1,2,2"}, "bad_box", "[x, y, w, h]"),
    ({"bbox": [1, 1, float("nan"), 2]}, "bad_box", "finite"),
    ({"bbox": [1, 1, 0, 2]}, "bad_box", "positive width"),
    ({"bbox": [1, 1, 2, -2]}, "bad_box", "positive width"),
    ({"bbox": [1, 1, True, 2]}, "bad_box", "finite"),
    ({"image_id": 99}, "unknown_image", "not in 'images'"),
    ({"segmentation": [[1, 1, 2, 2]]}, "bad_mask", "at least 3"),
    ({"segmentation": {"size": [H, W], "counts": [5, 3]}}, "bad_mask", "cover 8 pixels"),
    ({"segmentation": {"size": [H, W + 1], "counts": [H * (W + 1)]}}, "bad_mask", "does not match"),
    ({"segmentation": {"size": [H, W], "counts": "~~~"}}, "bad_mask", "not valid"),
    ({"segmentation": "abc"}, "bad_mask", "list of polygons"),
])
def test_bad_annotations_are_named(tmp_path, change, kind, words):
    data = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
            "categories": [{"id": 1, "name": "nodule"}],
            "annotations": [dict({"id": 41, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}, **change)]}
    problems = Problems()
    table = read_coco(write(tmp_path / "c.json", json.dumps(data)), problems)
    assert table.rows == []
    assert [p.kind for p in problems.items] == [kind]
    p = problems.items[0]
    assert p.line is None and p.message.startswith("annotation id 41: ") and words in p.message


def test_not_coco(tmp_path):
    with pytest.raises(UserError, match=r"c.json:1: not valid JSON"):
        read_coco(write(tmp_path / "c.json", "{images: []}"), Problems())
    with pytest.raises(UserError, match="not a COCO JSON"):
        read_coco(write(tmp_path / "c.json", "[]"), Problems())


def test_compressed_runs_match_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(1, 40, size=2)
        bitmap = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        assert compressed_runs(compressed(bitmap)) == uncompressed(bitmap)


def records():
    poly_mask = Mask(polygons=((2.0, 1.0, 8.0, 1.0, 8.0, 6.0, 2.0, 6.0),))
    return [
        ImageRecord("a.png", "/d/a.png", W, H, 1, "png", "1", [
            Object("nodule", Box(2.0, 1.0, 8.0, 6.0), mask=poly_mask),
            Object("mass", Box(10.0, 2.0, 15.0, 5.0), mask=Mask.from_bitmap(blob(10, 2, 15, 5))),
        ]),
        ImageRecord("b.png", "/d/b.png", W, H, 1, "png", "2", [
            Object("nodule", Box(0.0, 0.0, 4.0, 3.0), mask=Mask(rle=((H, W), uncompressed(blob(0, 0, 4, 3))))),
        ]),
        ImageRecord("c.png", "/d/c.png", W, H, 1, "png", "3", []),
        ImageRecord("d.png", "/d/d.png", 30, 16, 3, "png", "4", [Object("mass", Box(1.25, 2.5, 9.125, 7.0))]),
    ]


LABELS = LabelMap({"nodule": 1, "mass": 3})


def load(tmp_path, data: bytes) -> COCO:
    path = tmp_path / "split.json"
    path.write_bytes(data)
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def evaluate(gt: COCO, iou_type: str) -> float:
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
             **({"segmentation": a["segmentation"]} if iou_type == "segm" else {})}
            for a in gt.dataset["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


def test_writer_with_pycocotools(tmp_path):
    recs = records()
    data = coco_json(recs, LABELS)
    assert data == coco_json(records(), LABELS)  # byte-identical reruns
    gt = load(tmp_path, data)
    assert len(gt.getImgIds()) == 4 and len(gt.getAnnIds()) == 4
    assert gt.loadCats(gt.getCatIds()) == [{"id": 1, "name": "nodule", "supercategory": ""},
                                           {"id": 3, "name": "mass", "supercategory": ""}]
    assert [gt.imgs[i]["file_name"] for i in (1, 2, 3, 4)] == ["a.png", "b.png", "c.png", "d.png"]
    objects = [(r, o) for r in recs for o in r.objects]
    for ann, (record, obj) in zip(gt.loadAnns(gt.getAnnIds()), objects):
        assert ann["bbox"] == pytest.approx(list(obj.box.to_xywh()))
        assert ann["iscrowd"] == 0 and ann["category_id"] == LABELS.ids[obj.label]
        if obj.mask is not None:
            assert (gt.annToMask(ann) == obj.mask.to_bitmap(record.width, record.height)).all()
            assert ann["area"] == obj.mask.area(record.width, record.height)
        else:
            assert ann["segmentation"] == [] and ann["area"] == pytest.approx(obj.box.area)
    segs = [a["segmentation"] for a in gt.dataset["annotations"]]
    assert isinstance(segs[0], list) and isinstance(segs[1]["counts"], str) and isinstance(segs[2], dict)
    assert evaluate(gt, "bbox") == 1.0


def test_writer_masks_evaluate_perfectly(tmp_path):
    masked = [r for r in records() if r.objects and r.has_masks]
    assert evaluate(load(tmp_path, coco_json(masked, LABELS)), "segm") == 1.0


def test_writer_reader_round_trip(tmp_path):
    recs = records()
    (tmp_path / "rt.json").write_bytes(coco_json(recs, LABELS))
    problems = Problems()
    table = read_coco(str(tmp_path / "rt.json"), problems)
    assert len(problems) == 0 and table.negatives == ["c.png"]
    expected = [(r.image_id, o) for r in recs for o in r.objects]
    assert [(row.image, row.label, row.box) for row in table.rows] == [(i, o.label, o.box) for i, o in expected]
    for row, (image, obj), rec in zip(table.rows, expected, [recs[0], recs[0], recs[1], recs[3]]):
        if obj.mask is not None:
            assert (row.mask.to_bitmap(rec.width, rec.height) == obj.mask.to_bitmap(rec.width, rec.height)).all()


def test_writer_rejects_unknown_label():
    rec = ImageRecord("a.png", "/d/a.png", W, H, 1, "png", "1", [Object("Nodule", Box(0, 0, 1, 1))])
    with pytest.raises(ValueError, match="did you mean 'nodule'"):
        coco_json([rec], LABELS)
    empty = json.loads(coco_json([], LABELS))
    assert empty["images"] == [] and empty["annotations"] == [] and len(empty["categories"]) == 2
