"""What `detect` writes: drawn copies and the machine-readable tables.

    detections.csv     image,label,score,xmin,ymin,xmax,ymax   (pixels, top-left origin)
    detections.json    the same plus normalized boxes (and Mask R-CNN masks as COCO RLE), per image
    coco_results.json  COCO results (image ids from the dataset's COCO file when given;
                       `segmentation` RLE for Mask R-CNN)
    images.csv         one row per input image: detections, max score per class, finding
    <image>            drawn copies at the same relative paths (DICOM drawn as .png)
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Optional, Sequence

import numpy as np

from ..core import atomic, fence
from ..core.errors import UserError
from ..core.frames import split_frame
from ..core.masks import Mask, paste_box_mask
from ..data.readers.detections import CSV_COLUMNS
from .draw import colour, draw_boxes
from .inputs import load_image


def drawn_name(name: str, draw_format: Optional[str] = None) -> str:
    """Where the drawn copy of input `name` goes: the same relative path, as PNG (DICOM too) or
    JPEG (a JPEG input) by default, else with the extension of `draw_format`. Frame k of a
    multi-frame DICOM ('scan.dcm#3', `core.frames`) is drawn as 'scan#3.png'."""
    file, frame = split_frame(name)
    stem, ext = os.path.splitext(file)
    stem += "" if frame is None else f"#{frame}"
    if draw_format is None:
        return name if ext.lower() in (".jpg", ".jpeg", ".png") else stem + ".png"
    if draw_format == "jpg" and ext.lower() in (".jpg", ".jpeg"):
        return name
    return stem + "." + draw_format


def check_drawn_names(names: Sequence[str], draw_format: Optional[str]) -> None:
    """Refuse, before any work, two inputs whose drawn copies would be one file (x.png and x.jpg
    with --draw-format jpg; names differing only in case, on Windows and macOS)."""
    seen = {}
    for name in names:
        key = drawn_name(name, draw_format).lower()
        if key in seen:
            raise UserError(f"{seen[key]} and {name} would both be drawn to {drawn_name(name, draw_format)}; "
                            "use --no-draw, another --draw-format, or separate runs")
        seen[key] = name


def render(image, found, gt_boxes, bitmaps, class_ids):
    """`image` with the whole-image mask `bitmaps` blended in and the detections `found` (and
    the ground truth [(label, Box)]) drawn."""
    from PIL import Image
    if bitmaps:
        out = np.asarray(image).astype(np.float32)
        for sel, c in zip(bitmaps, [colour(class_ids[f.label]) for f in found]):
            out[sel] = 0.55 * out[sel] + 0.45 * np.array(c, np.float32)
        image = Image.fromarray(out.astype(np.uint8))
    return draw_boxes(image, found, class_ids, ground_truth=gt_boxes)


def whole_image_masks(prediction, size) -> list:
    """Mask R-CNN's box-relative masks of `prediction` pasted onto its (width, height) `size`, one
    boolean bitmap per detection; [] for a model without masks."""
    masks = prediction.box_masks
    return [] if masks is None else [paste_box_mask(m, d.box, *size) for m, d in zip(masks, prediction.detections)]


def finish(prediction, gt_boxes, out: Optional[str], class_ids, draw_format=None) -> list:
    """Worker-thread work for one image: paste each box-relative mask onto the image once, for
    its COCO RLE (returned, one per detection; None without masks) and the overlay; draw and
    save the copy when `out` is given."""
    image, found = prediction.image, prediction.detections
    bitmaps = whole_image_masks(prediction, image.size)
    rles = []
    for bitmap in bitmaps:
        (h, w), counts = Mask.from_bitmap(bitmap).rle
        rles.append({"size": [h, w], "counts": counts})
    if out is not None:
        drawn = render(image, found, gt_boxes, bitmaps, class_ids)
        target = drawn_name(prediction.name, draw_format)
        # JPEG q90 encodes a 256-px copy in ~0.25 ms; PNG at compression level 1 (a few % larger than
        # the default 6, several times faster) still takes ~4 ms, most of detect's non-model work
        atomic.write_file(fence.inside(out, target), encoded(drawn, target, png_level=1))
    return rles or [None] * len(found)


def encoded(drawn, name: str, png_level: int = 6) -> bytes:
    """`drawn` as the bytes of `name`'s format: JPEG (quality 90) for .jpg/.jpeg, else PNG at
    compression `png_level`."""
    is_jpeg = name.lower().endswith((".jpg", ".jpeg"))
    buffer = io.BytesIO()
    drawn.save(buffer, format="JPEG" if is_jpeg else "PNG",
               **({"quality": 90} if is_jpeg else {"compress_level": png_level}))
    return buffer.getvalue()


def save_predictions(predictions, out: str, label_map, ground_truth=None, draw: bool = True,
                     draw_format: Optional[str] = None, dataset: Optional[str] = None,
                     split: Optional[str] = None) -> None:
    """Write every output of `detect` for finished predictions (with their images) into `out`."""
    os.makedirs(out, exist_ok=True)
    rows, per_image = [], []
    for p in predictions:
        if p.error is not None:
            per_image.append((p.name, None, p.error))
            continue
        if p.image is None:
            p.image = load_image(p.source, p.window)[0]
        gt_boxes = list(ground_truth.get(p.name, [])) if ground_truth else None
        rles = finish(p, gt_boxes, out if draw else None, label_map.ids, draw_format)
        rows.extend((d, (p.width, p.height), rle) for d, rle in zip(p.detections, rles))
        per_image.append((p.name, p.detections, None))
    write_tables(out, rows, per_image, label_map, dataset, split)


def write_tables(out, rows, per_image, label_map, dataset, split) -> None:
    """detections.csv, detections.json, coco_results.json and images.csv from `rows`
    [(Detection, (w, h), RLE or None)] and `per_image` [(name, detections or None, error)]."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for (name, label, score, box), _size, _mask in rows:
        writer.writerow((name, label, f"{score:.6f}", f"{box.xmin:.2f}", f"{box.ymin:.2f}",
                         f"{box.xmax:.2f}", f"{box.ymax:.2f}"))
    atomic.write_file(os.path.join(out, "detections.csv"), text.getvalue())

    by_image = {}
    for (name, label, score, box), (w, h), mask in rows:
        by_image.setdefault(name, []).append({
            "label": label, "score": round(score, 6),
            "box": [round(v, 2) for v in (box.xmin, box.ymin, box.xmax, box.ymax)],
            "box_normalized_yxyx": [round(v, 6) for v in box.to_normalized_yxyx(w, h)],
            **({"mask": mask} if mask else {})})
    images = [{"image": name, "error": error, "detections": by_image.get(name, [])} for name, _f, error in per_image]
    atomic.write_file(os.path.join(out, "detections.json"), json.dumps({"images": images}, indent=1) + "\n")

    ids = {name: i for i, (name, _f, _e) in enumerate(per_image, start=1)}
    if dataset:
        with open(os.path.join(dataset, "coco", f"{split}.json"), encoding="utf-8") as f:
            ids.update({im["file_name"]: im["id"] for im in json.load(f)["images"]})
    results = [{"image_id": ids[name], "category_id": label_map.ids[label], "score": round(score, 6),
                "bbox": [round(v, 2) for v in box.to_xywh()], **({"segmentation": mask} if mask else {})}
               for (name, label, score, box), _, mask in rows]
    atomic.write_file(os.path.join(out, "coco_results.json"), json.dumps(results) + "\n")

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "detections"] + [f"max_score_{n}" for n in label_map.names] + ["finding"])
    for name, found, error in per_image:
        if found is None:
            writer.writerow([name, ""] + [""] * len(label_map.names) + [f"unreadable: {error}"])
            continue
        best = {n: max((f.score for f in found if f.label == n), default=0.0) for n in label_map.names}
        finding = "|".join(sorted({f.label for f in found})) or "no finding"
        writer.writerow([name, len(found)] + [f"{best[n]:.6f}" for n in label_map.names] + [finding])
    atomic.write_file(os.path.join(out, "images.csv"), text.getvalue())
