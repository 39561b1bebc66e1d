"""Synthetic chest-X-ray-like demo data, described by tables in the NIH formats.

Deterministic for a given seed. Each image is an 8-bit grayscale PNG: a smooth thorax
(two darker lung fields, brighter mediastinum and edges), film grain, and 0-3 "lesions":

  Nodule  a bright, blurred, filled ellipse
  Mass    a bright ring (a blurred annulus), larger

The boxes go into `BBox_List_2017.csv` exactly as NIH writes it (header quirk included,
float top-left x, y, w, h in pixels), and every image, with or without findings, into
`Data_Entry_2017.csv` (v2020 header), so images without boxes and patient ids exist.
Names are `<patient:08d>_<follow-up:03d>.png`; patients have 1-3 images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from ..core import atomic
from ..core.boxes import Box
from ..core.labelmap import LabelMap

CLASSES = ("Mass", "Nodule")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
DATA_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                     "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


@dataclass(frozen=True)
class Lesion:
    label: str
    cx: float
    cy: float
    rx: float
    ry: float

    @property
    def box(self) -> Box:
        return Box(self.cx - self.rx, self.cy - self.ry, self.cx + self.rx, self.cy + self.ry)


def _thorax(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 150 + 40 * (np.abs(x - 0.5) * 2) ** 3          # brighter edges (soft tissue)
    for side in (0.3, 0.7):                               # two lung fields
        cx = side + rng.uniform(-0.03, 0.03)
        lung = np.exp(-(((x - cx) / 0.16) ** 2 + ((y - 0.52) / 0.3) ** 2) ** 2)
        img -= 85 * lung
    img += 25 * np.exp(-(((x - 0.5) / 0.07) ** 2))        # mediastinum
    for _ in range(3):                                    # smooth, uneven exposure
        fx, fy, phase = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
        img += 5 * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    return img


def _draw(img: np.ndarray, lesion: Lesion, rng: np.random.Generator) -> None:
    size = img.shape[0]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.sqrt(((x - lesion.cx) / lesion.rx) ** 2 + ((y - lesion.cy) / lesion.ry) ** 2)
    amplitude = rng.uniform(60, 95)
    if lesion.label == "Nodule":
        profile = 1 / (1 + np.exp(np.minimum((r - 0.75) / 0.08, 50)))  # filled, soft edge
    else:
        profile = np.exp(-((r - 0.78) / 0.13) ** 2)                 # ring
    img += amplitude * profile


def _place(size: int, rng: np.random.Generator, count: int) -> List[Lesion]:
    lesions: List[Lesion] = []
    for _ in range(50 * count):
        if len(lesions) == count:
            break
        label = CLASSES[int(rng.integers(len(CLASSES)))]
        radius = rng.uniform(0.045, 0.07) if label == "Nodule" else rng.uniform(0.075, 0.11)
        rx = radius * size * rng.uniform(0.85, 1.15)
        ry = radius * size * rng.uniform(0.85, 1.15)
        cx = rng.uniform(0.15 * size + rx, 0.85 * size - rx)
        cy = rng.uniform(0.15 * size + ry, 0.88 * size - ry)
        new = Lesion(label, cx, cy, rx, ry)
        if all(abs(new.cx - o.cx) > new.rx + o.rx + 4 or abs(new.cy - o.cy) > new.ry + o.ry + 4
               for o in lesions):
            lesions.append(new)
    return lesions


def render_image(size: int, rng: np.random.Generator, count: int) -> Tuple[np.ndarray, List[Lesion]]:
    """One synthetic radiograph (uint8, size x size) and its lesions."""
    img = _thorax(size, rng)
    lesions = _place(size, rng, count)
    for lesion in lesions:
        _draw(img, lesion, rng)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lesions


def generate(out_dir: str, num_images: int = 300, size: int = 256, seed: int = 0,
             empty_fraction: float = 0.15) -> dict:
    """Write `images/*.png`, `BBox_List_2017.csv`, `Data_Entry_2017.csv`, `label_map.pbtxt`.

    Returns:
      {'images': dir, 'bbox_csv': path, 'data_entry': path, 'label_map': path, 'boxes': n}
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    images_dir = os.path.join(out_dir, "images")
    os.makedirs(images_dir, exist_ok=True)
    bbox_lines, entry_lines = [BBOX_HEADER], [DATA_ENTRY_HEADER]
    patient, follow_up, left = 0, 0, 0
    for _ in range(num_images):
        if left == 0:
            patient, follow_up, left = patient + 1, 0, int(rng.integers(1, 4))
        name = f"{patient:08d}_{follow_up:03d}.png"
        follow_up, left = follow_up + 1, left - 1
        count = 0 if rng.random() < empty_fraction else int(rng.integers(1, 4))
        pixels, lesions = render_image(size, rng, count)
        Image.fromarray(pixels, mode="L").save(os.path.join(images_dir, name), optimize=False)
        for lesion in lesions:
            x, y, w, h = lesion.box.to_xywh()
            bbox_lines.append(f"{name},{lesion.label},{x!r},{y!r},{w!r},{h!r}\n")
        findings = "|".join(sorted({lesion.label for lesion in lesions})) or "No Finding"
        entry_lines.append(f"{name},{findings},{follow_up - 1},{patient},{40 + patient % 40},"
                           f"{'MF'[patient % 2]},PA,{size},{size},0.143,0.143\n")
    paths = {name: os.path.join(out_dir, name)
             for name in ("BBox_List_2017.csv", "Data_Entry_2017.csv", "label_map.pbtxt")}
    atomic.write_file(paths["BBox_List_2017.csv"], "".join(bbox_lines))
    atomic.write_file(paths["Data_Entry_2017.csv"], "".join(entry_lines))
    atomic.write_file(paths["label_map.pbtxt"], LabelMap.from_names(CLASSES).to_pbtxt())
    return {"images": images_dir, "bbox_csv": paths["BBox_List_2017.csv"],
            "data_entry": paths["Data_Entry_2017.csv"], "label_map": paths["label_map.pbtxt"],
            "boxes": len(bbox_lines) - 1}
