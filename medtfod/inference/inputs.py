"""What `detect` runs on: a folder (recursive), a `.txt` list of image paths, or a split of a
converted dataset, each image given a safe relative output name."""
from __future__ import annotations

import functools
import os
from typing import List, Optional

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
