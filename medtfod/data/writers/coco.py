"""COCO detection/instance JSON for one split (`out/coco/<split>.json`), for pycocotools,
CVAT import and any COCO-based evaluator.

COCO convention (converted here, once): `bbox` is `[x, y, w, h]` in float pixels with
(x, y) the top-left corner (our `Box.to_xywh`); `segmentation` is polygons (flat
`[x0, y0, x1, y1, ...]` lists, same pixel frame) where the mask has polygons, else
COCO-compressed RLE (`{'size': [h, w], 'counts': str}`, column-major), and `[]` for an
object without a mask (evaluate such splits with iouType 'bbox'). `area` is the mask's
pixel count when there is a mask, else w * h. Ids are 1-based in record and object order;
keys are sorted and floats rounded, so reruns are byte-identical.
"""
from __future__ import annotations

import json
from typing import List

from ...core.annotations import ImageRecord, Object
from ...core.labelmap import LabelMap

DECIMALS = 4


def _round(value: float) -> float:
    return round(float(value), DECIMALS)


def _segmentation(obj: Object, width: int, height: int):
    if obj.mask is None:
        return []
    if obj.mask.polygons:
        return [[_round(v) for v in polygon] for polygon in obj.mask.polygons]
    rle = obj.mask.coco_rle(width, height)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def coco_dict(records: List[ImageRecord], label_map: LabelMap) -> dict:
    """The COCO dataset dict of `records` (see the module docstring for the conventions).

    Raises:
      ValueError: an object's label is not in `label_map`, or its RLE mask's size differs
        from its image's.
    """
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": record.image_id,
                       "width": int(record.width), "height": int(record.height)})
        for obj in record.objects:
            if obj.label not in label_map.ids:
                raise ValueError(f"{record.image_id}: {label_map.unknown_message(obj.label)}")
            x, y, w, h = obj.box.to_xywh()
            area = obj.mask.area(record.width, record.height) if obj.mask is not None else w * h
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": label_map.ids[obj.label],
                "bbox": [_round(x), _round(y), _round(w), _round(h)], "area": _round(area),
                "iscrowd": 0, "segmentation": _segmentation(obj, record.width, record.height),
            })
    categories = [{"id": label_map.ids[name], "name": name, "supercategory": ""} for name in label_map.names]
    return {"info": {"description": "written by medtfod"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}


def coco_json(records: List[ImageRecord], label_map: LabelMap) -> bytes:
    """COCO JSON of one split as UTF-8 bytes (sorted keys, rounded floats, trailing newline).

    Args:
      records: the split's images in output order; image and annotation ids follow it.
      label_map: gives `category_id`s and the `categories` list (all classes, even unused).

    Returns:
      The JSON bytes; the same records always give the same bytes.

    Raises:
      ValueError: see `coco_dict`.
    """
    text = json.dumps(coco_dict(records, label_map), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"
