"""COCO detection/instance JSON, as CVAT, Supervisely and most labelling tools export it.

Source convention (settled here, converted once): `bbox` is `[x, y, w, h]` in float pixels,
(x, y) the top-left corner, origin at the top-left corner of the image, so
`Box.from_xywh` applies unchanged. `segmentation` is either polygons (a list of flat
`[x0, y0, x1, y1, ...]` lists, same pixel frame) -> `Mask(polygons=...)`, or RLE
(`{'size': [h, w], 'counts': ...}`, column-major; `counts` a list of run lengths =
uncompressed, a string = COCO-compressed) -> `Mask(rle=((h, w), counts))`.

Annotations with `iscrowd=1` mark a region of many objects, not one object: they are not
converted, and each is reported as a `skipped_crowd` problem so the report counts them.
`file_name` may contain subfolders; the image is matched by its base name. Images without
annotations are images without findings. COCO has no patient ids: the converter's
default (the name's stem) applies. JSON has no useful line numbers (exports are often one
line), so problems and rows carry `line=None` and name the annotation id instead.
`--meta KEY[,KEY...]` keeps those keys of each image entry as per-image fields (`readers.meta`).
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Tuple

from ...core.annotations import Table, TableRow
from ...core.boxes import Box
from ...core.errors import UserError
from ...core.masks import Mask
from ...core.problems import Problems
from .meta import MetaCollector, check_columns
from .text import read_text


def _hashable(value) -> bool:
    """COCO ids are ints (some tools write strings); anything else cannot be an id."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def compressed_runs(counts: str) -> List[int]:
    """Run lengths of a COCO-compressed RLE string (pycocotools' `rleFrString`, in Python).

    Used to check a mask while the annotation id is known: runs that do not sum to h*w
    would otherwise surface later, in the converter, as pycocotools' bare
    "Invalid RLE mask representation" (too many pixels) or a silently cut mask (too few).

    Raises:
      ValueError: a character outside the encoding's alphabet or a truncated value.
    """
    runs: List[int] = []
    i = 0
    while i < len(counts):
        x, k, more = 0, 0, True
        while more:
            if i >= len(counts):
                raise ValueError("the string ends inside a value")
            c = ord(counts[i]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[i]!r} is not in the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i, k = i + 1, k + 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _mask(segmentation, width, height) -> Tuple[Optional[Mask], Optional[str]]:
    """(mask, None), (None, None) without a mask, or (None, why it is unusable)."""
    if segmentation in (None, [], {}):
        return None, None
    if isinstance(segmentation, list):
        polygons = []
        for polygon in segmentation:
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(_number(v) for v in polygon)):
                return None, ("segmentation polygons must be flat lists of at least 3 x, y pixel pairs, "
                              f"got {str(polygon)[:80]}")
            polygons.append(tuple(float(v) for v in polygon))
        return Mask(polygons=tuple(polygons)), None
    if not isinstance(segmentation, dict):
        return None, f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}"
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        return None, f"RLE 'size' must be [height, width], got {size!r}"
    h, w = size
    if (width, height) != (None, None) and (w, h) != (width, height):
        return None, f"RLE size [h={h}, w={w}] does not match the image's width={width}, height={height}"
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            return None, "uncompressed RLE 'counts' must be non-negative integers"
        runs = counts
    elif isinstance(counts, str):
        try:
            runs = compressed_runs(counts)
        except ValueError as e:
            return None, f"compressed RLE 'counts' is not valid: {e}"
        if any(r < 0 for r in runs):
            return None, "compressed RLE 'counts' decodes to negative run lengths"
    else:
        return None, f"RLE 'counts' must be a list or a string, got {type(counts).__name__}"
    if sum(runs) != h * w:
        return None, f"RLE runs cover {sum(runs)} pixels; a {w}x{h} mask has {h * w}"
    return Mask(rle=((h, w), list(counts) if isinstance(counts, list) else counts)), None


def _load(json_path: str) -> dict:
    text = read_text(json_path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{json_path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{json_path}: not a COCO JSON; expected an object with 'images', "
                        "'annotations' and 'categories' lists")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise UserError(f"{json_path}: {key!r} must be a list")
    return data


def _images(data: dict, json_path: str, problems: Problems) -> Dict[object, Tuple[str, object, object]]:
    """image id -> (base name, width, height); bad and duplicate entries reported."""
    images: Dict[object, Tuple[str, object, object]] = {}
    names: Dict[str, object] = {}
    for entry in data["images"]:
        image_id = entry.get("id") if isinstance(entry, dict) else None
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if not _hashable(image_id) or not isinstance(name, str) or not name.strip():
            problems.add(json_path, None, "bad_image_entry", str(entry)[:120],
                         "an 'images' entry needs an 'id' and a non-empty 'file_name'")
            continue
        base = os.path.basename(name.strip().replace("\\", "/"))
        if image_id in images or base in names:
            other = f"id {image_id} is used twice" if image_id in images else \
                f"{base!r} is also image id {names[base]} (images are matched by base name)"
            problems.add(json_path, None, "duplicate_image", name, f"image id {image_id}: {other}; "
                         "this image and its annotations are skipped")
            images[image_id] = (None, None, None)
            continue
        w, h = entry.get("width"), entry.get("height")
        ok = isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0
        images[image_id] = (base, w if ok else None, h if ok else None)
        names[base] = image_id
    return images


def read_coco(json_path: str, problems: Problems, meta: Optional[List[str]] = None):
    """Read a COCO JSON into a `Table`.

    Args:
      json_path: the COCO JSON file (one file; its 'images', 'annotations', 'categories').
      meta: keys of the image entries kept as per-image fields (`Table.meta`, lower case).
      problems: where bad entries are reported (`line=None`; the message names the
        annotation id). Each bad annotation is reported with its image, which
        `convert_table` then drops whole. Crowd annotations are reported as
        `skipped_crowd`; an image whose only annotations are crowds is dropped too.

    Returns:
      A `medtfod.core.annotations.Table` (source 'coco'): one row per non-crowd annotation, box from
      `bbox` via `Box.from_xywh`, mask from `segmentation` where present; images without
      annotations as negatives; no patient ids.

    Raises:
      UserError: the file is missing, not UTF-8, not JSON, or not COCO-shaped; no image entry
        has a `meta` key, or one's value is a list or an object.
    """
    data = _load(json_path)
    images = _images(data, json_path, problems)
    entries = [e for e in data["images"] if isinstance(e, dict)]
    check_columns(json_path, meta or [], (k for e in entries for k in e), what="key")
    fields = MetaCollector(json_path, meta or [])
    categories: Dict[object, str] = {}
    for c in data.get("categories", []):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not _hashable(c.get("id")):
            problems.add(json_path, None, "bad_category", str(c)[:120], "a category needs an 'id' and a 'name'")
        elif c["id"] in categories:
            problems.add(json_path, None, "duplicate_category", c["id"], f"category id {c['id']} is listed twice")
        else:
            categories[c["id"]] = c["name"].strip()
    rows: Dict[object, List] = {image_id: [] for image_id in images}
    crowded = set()

    def problem(kind, value, ann_id, message, drop=True):
        dropped = f"; image {name!r} is dropped" if drop else ""
        problems.add(json_path, None, kind, value, f"annotation id {ann_id}: {message}{dropped}",
                     image=name if drop else None)

    for ann in data.get("annotations", []):
        if not isinstance(ann, dict):
            problems.add(json_path, None, "bad_annotation", str(ann)[:120], "an annotation must be an object")
            continue
        ann_id, image_id, bbox = ann.get("id"), ann.get("image_id"), ann.get("bbox")
        name, category = None, ann.get("category_id")
        if not _hashable(image_id) or image_id not in images:
            problem("unknown_image", image_id, ann_id, f"image_id {image_id!r} is not in 'images'", drop=False)
            continue
        name, width, height = images[image_id]
        if name is None:
            continue  # a duplicate image, already reported
        if ann.get("iscrowd"):
            problem("skipped_crowd", ann_id, ann_id, f"a crowd region (iscrowd=1) on {name}, not one object; "
                    "not converted (expected in COCO exports; counted here)", drop=False)
            crowded.add(image_id)
            continue
        if not _hashable(category) or category not in categories:
            problem("unknown_category", category, ann_id,
                    f"category_id {category!r} is not in 'categories' "
                    f"(ids {', '.join(map(str, categories)) or 'none'})")
            continue
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            problem("bad_box", bbox, ann_id, f"'bbox' of {name} must be [x, y, w, h] finite pixel numbers")
            continue
        if bbox[2] <= 0 or bbox[3] <= 0:
            problem("bad_box", bbox, ann_id, f"'bbox' of {name} must have positive width and height")
            continue
        mask, why = _mask(ann.get("segmentation"), width, height)
        if why:
            problem("bad_mask", str(ann.get("segmentation"))[:120], ann_id, f"{why} ({name})")
            continue
        box = Box.from_xywh(*(float(v) for v in bbox))
        rows[image_id].append(TableRow(name, categories[category], box, json_path, None, mask))
    table = Table("coco", [], inputs={"json": json_path})
    for entry in entries:
        name = images.get(entry.get("id"), (None,))[0] if _hashable(entry.get("id")) else None
        if name is not None:
            fields.add(name, None, entry)
    table.meta = fields.meta
    for image_id, image_rows in rows.items():
        name = images[image_id][0]
        if name is None:
            continue
        if image_rows:
            table.rows.extend(image_rows)
        elif image_id not in crowded:
            table.negatives.append(name)
    return table
