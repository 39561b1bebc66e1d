"""Inputs of `medtfod metrics`: a `detections.csv` as `detect` writes it, and the ground
truth of a `medtfod convert` output folder (its `coco/<split>.json`).

Both give pixel `Box`es (xmin, ymin, xmax, ymax; top-left origin): the CSV holds them as
they are; COCO's `bbox` is x, y, w, h and goes through `Box.from_xywh`.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Collection, Dict, List, Optional, Sequence, Tuple

from ...core.annotations import Detection
from ...core.boxes import Box, parse_coordinate
from ...core.errors import UserError, did_you_mean

GroundTruth = Dict[str, List[Tuple[str, Box]]]   # image name -> [(label, Box)]; [] = no findings
CSV_COLUMNS = ("image", "label", "score", "xmin", "ymin", "xmax", "ymax")


def _check(where: str, image: str, label: str, labels: Optional[Sequence[str]],
           images: Optional[Collection[str]]) -> None:
    """A detection whose label is not a class, or whose image is not among `images`: refused."""
    if labels is not None and label not in labels:
        raise UserError(f"{where}: label {label!r} is not a class of the dataset ({', '.join(labels)})"
                        + did_you_mean(label, labels))
    if images is not None and image not in images:
        raise UserError(f"{where}: image {image!r} is not among the {len(images)} images evaluated; evaluate "
                        "on the split the detections were run on (--split)")


def read_detections_csv(path: str, labels: Optional[Sequence[str]] = None,
                        images: Optional[Collection[str]] = None) -> List[Detection]:
    """Detections from `detections.csv` as written by `medtfod detect`.

    Header `image,label,score,xmin,ymin,xmax,ymax`; boxes in pixels of the image (float xyxy,
    top-left origin), so no conversion is needed. An image with no row had no detection.

    Raises:
      UserError: missing file or header, or a row with the wrong number of fields, an empty
        image or label, a score or coordinate that is not a finite number, or an empty box;
        a label not in `labels` or an image not in `images` (when given); the message names
        `file:line` and the value.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel's UTF-8 CSV) is fine
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read detections {path}: {e}") from None
    if not rows or tuple(v.strip() for v in rows[0][1]) != CSV_COLUMNS:
        got = ",".join(rows[0][1]) if rows else "an empty file"
        raise UserError(f"{path}:1: expected the header {','.join(CSV_COLUMNS)}, got {got!r}")
    dets = []
    for line, row in rows[1:]:
        where = f"{path}:{line}"
        if not row:
            continue  # a blank line carries nothing
        if len(row) != len(CSV_COLUMNS):
            raise UserError(f"{where}: expected {len(CSV_COLUMNS)} fields ({','.join(CSV_COLUMNS)}), "
                            f"got {len(row)}: {row!r}")
        image, label = row[0].strip(), row[1].strip()
        if not image or not label:
            raise UserError(f"{where}: empty {'image' if not image else 'label'} in {row!r}")
        _check(where, image, label, labels, images)
        values = [parse_coordinate(v) for v in row[2:]]
        for name, text, value in zip(CSV_COLUMNS[2:], row[2:], values):
            if value is None:
                raise UserError(f"{where}: {name} {text!r} is not a finite number")
        if not 0 <= values[0] <= 1:
            raise UserError(f"{where}: score {row[2].strip()!r} is not a score from 0 to 1")
        box = Box(*values[1:])
        problem = box.problem()
        if problem:
            raise UserError(f"{where}: {problem}")
        dets.append(Detection(image, label, values[0], box))
    return dets


def as_csv_detections(detections, labels: Optional[Sequence[str]] = None,
                      images: Optional[Collection[str]] = None) -> List[Detection]:
    """Detections as detections.csv holds them, whatever they came as: a detections.csv path (read),
    `Detection`s, or predictions (objects with `.detections`: `ExportedModel.predict`'s result,
    one `Prediction` or a list), with scores rounded to 6 decimals and box corners to 0.01 px
    as detect writes them, so the metrics of predictions equal `medtfod metrics` on their CSV.
    `labels` and `images`, when given, are checked as `read_detections_csv` does."""
    if isinstance(detections, (str, os.PathLike)):
        return read_detections_csv(os.fspath(detections), labels, images)
    items = [detections] if hasattr(detections, "detections") else list(detections)
    found = []
    for item in items:
        for d in (item.detections if hasattr(item, "detections") else [item]):
            if not isinstance(d, Detection):
                raise UserError(f"not a detection: {d!r} (give a detections.csv path, Detection(image, label, score, "
                                "Box)s, or the predictions of ExportedModel.predict)")
            _check(f"detection {len(found) + 1}", d.image, d.label, labels, images)
            box = Box(*(round(v, 2) for v in (d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax)))
            found.append(Detection(d.image, d.label, round(d.score, 6), box))
    return found


def read_ground_truth(dataset_dir: str, split: Optional[str] = None) -> GroundTruth:
    """Ground truth from a `medtfod convert` output folder: `coco/<split>.json` (all splits when None).

    COCO `bbox` is `[x, y, w, h]` in pixels from the top-left corner -> `Box.from_xywh`; labels
    are the `categories` names. Every image is a key (file_name), with [] when it has no
    annotation: negatives count in FP/image and image-level metrics.

    Raises:
      UserError: no coco folder, unknown split (with the available ones), unreadable JSON,
        an annotation pointing to an unknown image or category, or an image in two splits.
    """
    folder = os.path.join(dataset_dir, "coco")
    available = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json")) if os.path.isdir(folder) else []
    if not available:
        raise UserError(f"no coco/<split>.json under {dataset_dir}; pass the output folder of `medtfod convert`")
    if split is not None and split not in available:
        raise UserError(f"split {split!r} not found in {folder} (available: {', '.join(available)})")
    gt: GroundTruth = {}
    for name in [split] if split is not None else available:
        path = os.path.join(folder, f"{name}.json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            labels = {c["id"]: c["name"] for c in data["categories"]}
            files = {}
            for image in data["images"]:
                if image["file_name"] in gt:
                    raise UserError(f"{path}: image {image['file_name']!r} is also in another split")
                files[image["id"]] = image["file_name"]
                gt[image["file_name"]] = []
            for ann in data["annotations"]:
                if ann["image_id"] not in files or ann["category_id"] not in labels:
                    raise UserError(f"{path}: annotation {ann.get('id')} refers to an unknown image_id "
                                    f"{ann['image_id']} or category_id {ann['category_id']}")
                x, y, w, h = (float(v) for v in ann["bbox"])
                gt[files[ann["image_id"]]].append((labels[ann["category_id"]], Box.from_xywh(x, y, w, h)))
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror or e}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a COCO detection file ({type(e).__name__}: {e})") from None
    return gt
