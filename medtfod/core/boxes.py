"""Boxes and coordinate conventions.

Inside medtfod every box is a `Box`: float pixel corners `(xmin, ymin, xmax, ymax)` with
the origin at the top-left corner of the top-left pixel, x to the right, y down, and
continuous coordinates (a box covering exactly pixel column 0 has xmin=0.0, xmax=1.0).
So width = xmax - xmin and a box inside a W x H image satisfies
0 <= xmin < xmax <= W and 0 <= ymin < ymax <= H.

Readers convert their source's convention into this once (NIH: float top-left x, y, w, h;
VOC: 1-based inclusive integer corners); writers convert out of it once (the OD API wants
normalized `(ymin, xmin, ymax, xmax)` in [0, 1]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple


def parse_coordinate(text: str) -> Optional[float]:
    """A pixel coordinate from table text, or None when it is not a finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Box:
    """Float pixel corners `(xmin, ymin, xmax, ymax)`, top-left origin, continuous coordinates."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> "Box":
        """From top-left corner plus width and height, in pixels (NIH, COCO)."""
        return cls(x, y, x + w, y + h)

    @property
    def width(self) -> float:
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        return self.ymax - self.ymin

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def to_xywh(self) -> Tuple[float, float, float, float]:
        return self.xmin, self.ymin, self.width, self.height

    def to_normalized_yxyx(self, width: int, height: int) -> Tuple[float, float, float, float]:
        """The OD API's convention: `(ymin, xmin, ymax, xmax)` divided by the image size."""
        return (self.ymin / height, self.xmin / width, self.ymax / height, self.xmax / width)

    @classmethod
    def from_normalized_yxyx(cls, yxyx, width: int, height: int) -> "Box":
        """Inverse of `to_normalized_yxyx` (used on the OD API's detection boxes)."""
        ymin, xmin, ymax, xmax = (float(v) for v in yxyx)
        return cls(xmin * width, ymin * height, xmax * width, ymax * height)

    def clipped(self, width: int, height: int) -> "Box":
        return Box(min(max(self.xmin, 0.0), width), min(max(self.ymin, 0.0), height),
                   min(max(self.xmax, 0.0), width), min(max(self.ymax, 0.0), height))

    def problem(self, width: Optional[int] = None, height: Optional[int] = None,
                tolerance: float = 0.0) -> Optional[str]:
        """Why this box is unusable, or None when it is valid.

        Args:
          width, height: image size in pixels; when given, the box must lie inside it
            (allowing `tolerance` pixels past each edge, which callers then clip).
        """
        values = (self.xmin, self.ymin, self.xmax, self.ymax)
        if not all(math.isfinite(v) for v in values):
            return f"coordinates must be finite numbers, got {values}"
        if self.xmax <= self.xmin or self.ymax <= self.ymin:
            return (f"box has no area (xmin={self.xmin:g}, xmax={self.xmax:g}, "
                    f"ymin={self.ymin:g}, ymax={self.ymax:g}); expected xmin < xmax and ymin < ymax")
        if width is not None and height is not None:
            if (self.xmin < -tolerance or self.ymin < -tolerance
                    or self.xmax > width + tolerance or self.ymax > height + tolerance):
                return (f"box ({self.xmin:g}, {self.ymin:g}, {self.xmax:g}, {self.ymax:g}) extends past the "
                        f"{width}x{height} image by more than {tolerance:g} px (--clip-tolerance; is the table "
                        "for images of another size?)")
        return None


def _intersection(a: Box, b: Box) -> float:
    return max(0.0, min(a.xmax, b.xmax) - max(a.xmin, b.xmin)) * max(0.0, min(a.ymax, b.ymax) - max(a.ymin, b.ymin))


def iou(gt_box: Box, det_box: Box) -> float:
    """Intersection over union of the two boxes' areas (0 when both are empty)."""
    inter = _intersection(gt_box, det_box)
    union = gt_box.area + det_box.area - inter
    return inter / union if union > 0 else 0.0


def iobb(gt_box: Box, det_box: Box) -> float:
    """Intersection over the detected box's area (Wang et al., CVPR 2017); 1 when the detection
    lies inside the GT box."""
    return _intersection(gt_box, det_box) / det_box.area if det_box.area > 0 else 0.0
