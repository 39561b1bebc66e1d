"""What an image's header says (`ImageInfo`), the error for an unusable image file and the
size limits every image is checked against.

Shared by `images` (PNG and JPEG headers) and `dicom` (DICOM decoding), which
`images.read_and_probe` calls for `.dcm` files: these live below both, so that `dicom` does not
import `images` back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

MAX_SIDE = 65535          # larger than any radiograph or ultrasound frame we expect
MAX_PIXELS = 1 << 28      # 268 M pixels: above that a file is treated as a decompression bomb


class ImageError(ValueError):
    """The file is not a usable PNG/JPEG; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: format ('png' or 'jpeg'), size in pixels, channels, and for
    DICOM the per-image fields its header holds (`medtfod.core.dicom.header_meta`)."""

    format: str
    width: int
    height: int
    channels: int
    meta: Dict[str, str] = field(default_factory=dict, compare=False)


def check_size(width: int, height: int) -> None:
    """An `ImageError` for a size no real image has (0, over MAX_SIDE a side, or over MAX_PIXELS)."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise ImageError(f"implausible image size {width}x{height}")
