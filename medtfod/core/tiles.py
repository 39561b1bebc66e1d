"""The tile grid shared by training tiles (`convert --tile`) and tiled detection (`detect --tile`),
so a model trained on tiles sees at detection the same windows it learned from.

Windows are `size` x `size` pixels (the image's own side where it is smaller), at origins
0, s, 2s, ... with s = round(size * (1 - overlap)), the last one flush with the image's far
edge. Coordinates are whole pixels of the image, x to the right and y down.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from .errors import UserError

MAX_OVERLAP = 0.9


@dataclass(frozen=True)
class Window:
    """A tile of an image: top-left corner (x, y) and size (width, height), in whole pixels."""
    x: int
    y: int
    width: int
    height: int


MIN_SIZE = 32  # smaller than any model's input; below it a lesion is rarely half inside one tile


def check_size(size, option: str = "--tile") -> None:
    """Raises UserError unless `size` is a whole number of pixels, at least MIN_SIZE."""
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise UserError(f"{option} {size!r}: give the window size in pixels, a whole number of at least {MIN_SIZE}")


def check_overlap(overlap, option: str = "--tile-overlap") -> None:
    """Raises UserError for an overlap outside [0, 0.9)."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < MAX_OVERLAP:
        raise UserError(f"tile overlap {overlap!r} ({option}, tile_overlap=): give a share of the window from 0 "
                        f"(inclusive) to {MAX_OVERLAP:g} (exclusive)")


def origins(length: int, size: int, overlap: float) -> List[int]:
    """Window start positions along one side of `length` pixels (see the module docstring)."""
    if length <= size:
        return [0]
    stride = max(1, int(round(size * (1.0 - overlap))))
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


def tile_windows(width: int, height: int, size: int, overlap: float) -> List[Window]:
    """The windows covering a width x height image, row by row."""
    w, h = min(size, width), min(size, height)
    return [Window(x, y, w, h) for y in origins(height, size, overlap) for x in origins(width, size, overlap)]
