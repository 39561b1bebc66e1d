"""Synthetic big grey images with small lesions, for `benchmarks/small_lesions.py`.

Each image is `size` x `size` 8-bit grey: a smooth low-frequency "anatomy" (a 5 x 5 random grid
upsampled bicubically), texture at two scales (structures ~40 px and ~10 px across, the second
the size of the lesions, so not every bright spot is a lesion) and per-pixel Gaussian noise.
A lesion is a bright disk of diameter d (`diameters`, uniform) with a soft 1 px edge and a
contrast drawn from `contrasts` grey levels above the background, in the same units as the
noise's sigma (`NOISE`). Its box is the disk's bounding box: float pixel xyxy, top-left origin,
[cx - d/2, cy - d/2, cx + d/2, cy + d/2] (the internal convention of `medtfod.core.boxes`); the
box table is written as x, y, w, h pixels for `medtfod convert csv`.

Patients have 2-3 images each; an image has 1-3 lesions with probability `positive`, else none.
Everything is drawn from one `numpy.random.default_rng(seed)`, so a seed gives the same set.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

NOISE = 8.0                 # sigma of the per-pixel noise, grey levels
TEXTURE = (14.0, 7.0)       # amplitudes of the ~40 px and ~10 px texture, grey levels
ANATOMY = 28.0              # amplitude of the low-frequency variation
LEVEL = 105.0               # mean grey level
COLUMNS = "filename=image,label=finding,x=x,y=y,w=w,h=h,patient=patient"
LABEL = "lesion"


@dataclass(frozen=True)
class Lesion:
    """A drawn lesion: centre (cx, cy) and diameter in pixels, contrast in grey levels."""

    cx: float
    cy: float
    diameter: float
    contrast: float

    @property
    def box(self) -> Tuple[float, float, float, float]:
        """The disk's bounding box, float pixel (xmin, ymin, xmax, ymax)."""
        r = self.diameter / 2
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)


def _upsampled(rng: np.random.Generator, grid: int, size: int) -> np.ndarray:
    """A `grid` x `grid` standard normal field resized bicubically to `size` x `size`, rescaled
    to unit standard deviation."""
    from PIL import Image
    small = rng.standard_normal((grid, grid)).astype(np.float32)
    field = np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.BICUBIC), np.float32)
    return (field - field.mean()) / (field.std() + 1e-6)


def place_lesions(rng: np.random.Generator, size: int, count: int, diameters: Tuple[float, float],
                  contrasts: Tuple[float, float], margin: int = 16) -> List[Lesion]:
    """`count` lesions at least `margin` px inside the image whose disks are apart by at least
    their larger diameter (so boxes never overlap)."""
    lesions: List[Lesion] = []
    while len(lesions) < count:
        d = float(rng.uniform(*diameters))
        cx, cy = rng.uniform(margin + d / 2, size - margin - d / 2, 2)
        if all(np.hypot(cx - o.cx, cy - o.cy) > (d + o.diameter) / 2 + max(d, o.diameter) for o in lesions):
            lesions.append(Lesion(float(cx), float(cy), d, float(rng.uniform(*contrasts))))
    return lesions


def draw(rng: np.random.Generator, size: int, lesions: Sequence[Lesion]) -> np.ndarray:
    """The (size, size) uint8 image with `lesions` drawn on the background described above."""
    image = LEVEL + ANATOMY * _upsampled(rng, 5, size)
    image += TEXTURE[0] * _upsampled(rng, max(2, size // 40), size)
    image += TEXTURE[1] * _upsampled(rng, max(2, size // 10), size)
    image += rng.normal(0.0, NOISE, (size, size)).astype(np.float32)
    for lesion in lesions:
        r = lesion.diameter / 2
        x0, y0 = int(max(0, np.floor(lesion.cx - r - 2))), int(max(0, np.floor(lesion.cy - r - 2)))
        x1, y1 = int(min(size, np.ceil(lesion.cx + r + 2))), int(min(size, np.ceil(lesion.cy + r + 2)))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dist = np.hypot(xx + 0.5 - lesion.cx, yy + 0.5 - lesion.cy)   # pixel centres
        image[y0:y1, x0:x1] += lesion.contrast * np.clip(r - dist + 0.5, 0.0, 1.0)   # 1 px soft edge
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class SyntheticImage:
    name: str
    patient: str
    lesions: Tuple[Lesion, ...]


def plan(patients: int, size: int = 2048, seed: int = 0, diameters: Tuple[float, float] = (8.0, 24.0),
         contrasts: Tuple[float, float] = (14.0, 36.0), positive: float = 0.8) -> List[SyntheticImage]:
    """The images of the set (names, patients, lesions), without their pixels."""
    rng = np.random.default_rng(seed)
    images = []
    for p in range(patients):
        for k in range(int(rng.integers(2, 4))):
            count = int(rng.integers(1, 4)) if rng.random() < positive else 0
            images.append(SyntheticImage(f"p{p:03d}_{k}.png", f"p{p:03d}",
                                         tuple(place_lesions(rng, size, count, diameters, contrasts))))
    return images


def write(folder: str, images: Sequence[SyntheticImage], size: int = 2048, seed: int = 0) -> str:
    """Draw every image of `images` into `folder` (PNG, 8-bit grey; one rng per image, seeded
    from `seed` and its position) and write `folder`/boxes.csv: image, patient, finding, x, y,
    w, h (pixels; empty box fields for an image without lesions). Returns the table's path.
    Images already in the folder are kept (a rerun only finishes an interrupted one)."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for k, item in enumerate(images):
        path = os.path.join(folder, item.name)
        if not os.path.isfile(path):
            pixels = draw(np.random.default_rng([seed, k]), size, item.lesions)
            Image.fromarray(pixels, mode="L").save(path + ".part.png")
            os.replace(path + ".part.png", path)
    table = os.path.join(folder, "boxes.csv")
    with open(table + ".part", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image", "patient", "finding", "x", "y", "w", "h"])
        for item in images:
            for lesion in item.lesions:
                x0, y0, x1, y1 = lesion.box
                out.writerow([item.name, item.patient, LABEL, f"{x0:.2f}", f"{y0:.2f}", f"{x1 - x0:.2f}",
                              f"{y1 - y0:.2f}"])
            if not item.lesions:
                out.writerow([item.name, item.patient, "", "", "", "", ""])
    os.replace(table + ".part", table)
    return table
