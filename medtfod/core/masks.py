"""Instance masks: polygons or COCO run-length encoding, in the image's pixel frame.

A `Mask` keeps what the source gave (DDTI and COCO polygons, COCO/SIIM run lengths) and
renders to a bitmap only when a writer needs one (PNG masks in TFRecords). Polygon
vertices use medtfod's continuous pixel coordinates (origin at the top-left corner of the
top-left pixel); RLE is COCO's: column-major, `{'size': [height, width], 'counts': ...}`.
Rendering and encoding use pycocotools, the reference implementation of both.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .boxes import Box

Polygon = Tuple[float, ...]  # flat x0, y0, x1, y1, ... (at least 3 vertices)


@dataclass(frozen=True)
class Mask:
    """One object's mask: `polygons` (one or more flat vertex lists) or `rle` (COCO RLE with
    `counts` as a compressed string or a list of run lengths), not both."""

    polygons: Tuple[Polygon, ...] = ()
    rle: Optional[Tuple[Tuple[int, int], object]] = None  # ((height, width), counts)

    @classmethod
    def from_bitmap(cls, bitmap: np.ndarray) -> "Mask":
        """From a HxW array (nonzero = object); stored as compressed COCO RLE."""
        from pycocotools import mask as coco_mask
        rle = coco_mask.encode(np.asfortranarray(bitmap.astype(np.uint8)))
        return cls(rle=((int(rle["size"][0]), int(rle["size"][1])), rle["counts"].decode("ascii")))

    def coco_rle(self, width: int, height: int) -> dict:
        """COCO compressed RLE of this mask on a `width` x `height` image."""
        from pycocotools import mask as coco_mask
        if self.rle is not None:
            (h, w), counts = self.rle
            if (h, w) != (height, width):
                raise ValueError(f"mask is {w}x{h}, image is {width}x{height}")
            if isinstance(counts, str):
                return {"size": [h, w], "counts": counts.encode("ascii")}
            return coco_mask.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w)
        rles = coco_mask.frPyObjects([list(p) for p in self.polygons], height, width)
        return coco_mask.merge(rles)

    def to_bitmap(self, width: int, height: int) -> np.ndarray:
        """HxW uint8 array, 1 inside the object (polygons are clipped to the image)."""
        from pycocotools import mask as coco_mask
        return coco_mask.decode(self.coco_rle(width, height))

    def bounds(self, width: int, height: int) -> Optional[Box]:
        """The tight pixel box around the mask's pixels, or None when the mask is empty."""
        bitmap = self.to_bitmap(width, height)
        ys, xs = np.nonzero(bitmap)
        if not len(xs):
            return None
        return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))

    def area(self, width: int, height: int) -> int:
        return int(self.to_bitmap(width, height).sum())


def polygon_bounds(polygon: Polygon) -> Box:
    """The box around a polygon's vertices (no clipping)."""
    xs, ys = polygon[0::2], polygon[1::2]
    return Box(float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))


def png_bytes(bitmap: np.ndarray) -> bytes:
    """A 0/1 bitmap as an 8-bit grayscale PNG (values 0 and 1, as the OD API's PNG_MASKS expect)."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(bitmap.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def paste_box_mask(mask: np.ndarray, box: Box, width: int, height: int) -> np.ndarray:
    """A box-relative instance mask (Mask R-CNN's `[h, w]` floats in [0, 1]) resized
    bilinearly onto the pixel `box` of a `width` x `height` image and thresholded at 0.5, as
    the OD API's `reframe_box_masks_to_image_masks` does; a HxW bool bitmap."""
    from PIL import Image
    x0, y0 = int(round(box.xmin)), int(round(box.ymin))
    w, h = max(1, int(round(box.xmax)) - x0), max(1, int(round(box.ymax)) - y0)
    resized = np.asarray(Image.fromarray((np.asarray(mask) * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) > 127
    bitmap = np.zeros((height, width), bool)
    region = bitmap[y0:y0 + h, x0:x0 + w]
    region[...] = resized[:region.shape[0], :region.shape[1]]
    return bitmap
