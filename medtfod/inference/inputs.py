"""What `detect` runs on: a folder (recursive), a `.txt` list of image paths, or a split of a
converted dataset, each image given a safe relative output name."""
from __future__ import annotations

import functools
import io
import os
from typing import List, Optional, Tuple

import numpy as np

from ..core.errors import UserError
from ..core.fence import safe_names
from ..core.images import IMAGE_EXTENSIONS


def list_images(root: str) -> List[str]:
    """Image files under `root`, recursively, as sorted paths relative to `root`."""
    if not os.path.isdir(root):
        raise UserError(f"image folder not found: {root}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace("\\", "/"))
    return found


def resolve_inputs(images: Optional[str], dataset: Optional[str] = None, split: Optional[str] = None):
    """The images to run on, as ([(output name, path or bytes loader)], ground truth or None,
    {option: input folder or file} that outputs must stay clear of).

    Output names are safe relative paths: a folder's images keep their paths below it; a list
    file's paths lose the folder they all share (`fence.safe_names`); a dataset's images are
    named as in its manifest and read from its own TFRecords, so a moved dataset still works.
    """
    if dataset:
        from ..data import manifest
        from ..data.readers.detections import read_ground_truth
        data = manifest.load(dataset)
        gt = read_ground_truth(dataset, split)
        entries = sorted(data.split(split), key=lambda e: e.name)
        return [(e.name, functools.partial(data.image_bytes, e)) for e in entries], gt, {"--dataset": dataset}
    if images and os.path.isfile(images):  # a list file: one path per line
        base = os.path.dirname(os.path.abspath(images))
        with open(images, encoding="utf-8") as f:
            listed = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        paths = [p if os.path.isabs(p) else os.path.join(base, p) for p in listed]
        fenced = {"--images": images}
        fenced.update({f"(listed image {p})": p for p in paths})  # --out may not be or hold a listed image
        return list(zip(safe_names(paths), paths)), None, fenced
    if not images:
        raise UserError("give --images (a folder or a .txt list) or --dataset with --split")
    return [(name, os.path.join(images, name)) for name in list_images(images)], None, {"--images": images}


def load_image(source) -> Tuple[Optional[object], Optional[str]]:
    """(PIL RGB image, None) of a PNG/JPEG/DICOM path, the bytes a loader returns, a numpy array
    or a PIL image; (None, the error message) when it cannot be read. The image's `info['channels']`
    is 1 for a grayscale source (as labelImg's depth), else 3."""
    from PIL import Image
    try:
        if isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] != 3):
                raise ValueError(f"an image array must be uint8 (H, W) or (H, W, 3), not {source.dtype} {source.shape}")
            source = Image.fromarray(source)
        if isinstance(source, Image.Image):
            rgb = source.convert("RGB")
            rgb.info["channels"] = 1 if source.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
            return rgb, None
        if callable(source):
            source = io.BytesIO(source())
        elif source.lower().endswith(".dcm"):
            from ..core.dicom import dicom_to_png
            source = io.BytesIO(dicom_to_png(source)[0])
        with Image.open(source) as im:
            rgb = im.convert("RGB")
            rgb.info["channels"] = 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3  # as labelImg's depth
            return rgb, None
    except Exception as e:  # any unreadable file is reported, never ends the batch
        return None, f"{type(e).__name__}: {e}"
