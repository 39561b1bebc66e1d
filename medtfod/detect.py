"""Batch detection with an exported SavedModel: drawn copies and `detections.csv`.

The SavedModel (`image_tensor` input) takes uint8 `[1, H, W, 3]`; grayscale images are
replicated to three channels, as in training. Its boxes are the OD API's normalized
`(ymin, xmin, ymax, xmax)`; they are converted once, here, to pixel `Box`es.
"""
from __future__ import annotations

import csv
import io
import os
from typing import List, Optional

import numpy as np

from . import atomic
from .boxes import Box
from .draw import draw_boxes
from .errors import UserError
from .images import IMAGE_EXTENSIONS
from .labelmap import read_label_map
from .progress import progress

CSV_COLUMNS = ("image", "label", "score", "xmin", "ymin", "xmax", "ymax")


def list_images(root: str) -> List[str]:
    """Image files under `root`, recursively, as sorted paths relative to `root`."""
    if not os.path.isdir(root):
        raise UserError(f"image folder not found: {root}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def _saved_model_dir(model: str) -> str:
    for candidate in (os.path.join(model, "saved_model"), model):
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise UserError(f"no SavedModel in {model} (expected saved_model/saved_model.pb); run medtfod export")


def detect(model: str, images: str, out: str, min_score: float = 0.5,
           label_map_path: Optional[str] = None, quiet: bool = False) -> dict:
    """Run the exported model on every image under `images`.

    Writes, in `out`: a drawn copy of each image at the same relative path, and
    `detections.csv` (columns image, label, score, xmin, ymin, xmax, ymax; pixels, top-left
    origin). Returns {'images': n, 'detections': n, 'rows': [...]}.
    """
    from PIL import Image

    from .odapi.runtime import import_tensorflow

    saved_model = _saved_model_dir(model)
    label_map_path = label_map_path or os.path.join(os.path.dirname(saved_model.rstrip("/\\")), "label_map.pbtxt")
    label_map = read_label_map(label_map_path)
    names = sorted(list_images(images))
    if not names:
        raise UserError(f"no PNG or JPEG images under {images}")
    tf = import_tensorflow(verbose=False)
    detect_fn = tf.saved_model.load(saved_model)
    os.makedirs(out, exist_ok=True)
    rows = []
    bar = progress(total=len(names), desc="detect", unit="img", quiet=quiet)
    for name in names:
        path = os.path.join(images, name)
        if name.lower().endswith(".dcm"):
            from .dicom import dicom_to_png
            path = io.BytesIO(dicom_to_png(path)[0])
        with Image.open(path) as im:
            im.load()
            pixels = np.asarray(im.convert("RGB"))
            result = detect_fn(tf.constant(pixels[np.newaxis]))
            n = int(result["num_detections"][0])
            h, w = pixels.shape[:2]
            drawn = []
            for yxyx, score, cls in zip(result["detection_boxes"][0][:n].numpy(),
                                        result["detection_scores"][0][:n].numpy(),
                                        result["detection_classes"][0][:n].numpy()):
                if score < min_score:
                    continue
                class_id = int(cls)
                label = label_map.name_of(class_id)
                box = Box.from_normalized_yxyx(yxyx, w, h)
                drawn.append((label, class_id, float(score), box))
                rows.append((name.replace("\\", "/"), label, f"{score:.6f}", f"{box.xmin:.2f}",
                             f"{box.ymin:.2f}", f"{box.xmax:.2f}", f"{box.ymax:.2f}"))
            buffer = io.BytesIO()
            is_jpeg = name.lower().endswith((".jpg", ".jpeg"))
            draw_boxes(im, drawn).save(buffer, format="JPEG" if is_jpeg else "PNG", **({"quality": 95} if is_jpeg else {}))
            drawn_name = name[:-4] + ".png" if name.lower().endswith(".dcm") else name
            atomic.write_file(os.path.join(out, drawn_name), buffer.getvalue())
        bar.update(1)
    bar.close()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    atomic.write_file(os.path.join(out, "detections.csv"), text.getvalue())
    return {"images": len(names), "detections": len(rows), "rows": rows}
