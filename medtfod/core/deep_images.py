"""16-bit (and float) grey PNG/TIFF at full depth, and TIFF at all, -> 8-bit PNG for the OD API.

Pillow opens a 16-bit grey PNG or TIFF as mode 'I;16' (or 'I', 'F' for 32-bit and float TIFF);
the raw sample values are windowed as DICOM modality values are (`medtfod.core.windowing`:
minmax, percentile and W,L apply to the raw values). The `header` window, which these files do
not have, means: a 16-bit PNG passes through untouched, as before windows existed (TensorFlow's
decode_png then keeps each sample's high byte, and `detect` does the same), and a TIFF is min-max
stretched. 8-bit TIFFs become PNG unchanged (TIFF is not a format the OD API reads).
"""
from __future__ import annotations

import io
import struct

import numpy as np

from .image_info import ImageError, ImageInfo, check_size
from .windowing import Window, apply_window, parse_window

DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "F")
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")


SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L")


def to_8bit(image):
    """A 16-bit grayscale PIL image as 8-bit ('L'), keeping each value's high byte, as the OD API
    reads the same PNG for training (TensorFlow's decode_png strips 16-bit samples to 8 bits);
    other images unchanged. PIL's own convert('RGB') would clip every value above 255 to white."""
    from PIL import Image
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image).astype(np.int64)
    return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), "L")


def is_tiff(data: bytes) -> bool:
    return data[:4] in TIFF_SIGNATURES


def is_deep_grey_png(data: bytes) -> bool:
    """A PNG whose IHDR says 16-bit grey (colour type 0, bit depth 16)."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        return False
    depth, colour = struct.unpack(">BB", data[24:26])
    return depth == 16 and colour == 0


def deep_to_png(data: bytes, window: Window = None):
    """PNG/TIFF bytes -> (8-bit PNG bytes, ImageInfo): a deep grey image windowed on its raw values
    (`header`: min-max), an 8-bit one re-encoded unchanged (RGBA and palette as RGB).

    Raises:
      ImageError: Pillow cannot read it, or its size is implausible.
    """
    from PIL import Image
    window = window if window is not None else parse_window(None)
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_size(*im.size)
            im.load()
            if im.mode in DEEP_MODES:
                values = np.asarray(im)
                if im.mode == "F" and not np.isfinite(values).all():
                    raise ImageError("float image with NaN or infinite values")
                pixels = apply_window(values, window)
                out = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
            elif im.mode in ("L", "RGB"):
                out = im.copy()
            else:
                out = im.convert("RGB")
    except ImageError:
        raise
    except Exception as e:  # Pillow's UnidentifiedImageError, truncated files, odd modes
        raise ImageError(f"cannot decode the image ({type(e).__name__}: {e})") from None
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return buffer.getvalue(), ImageInfo("png", out.size[0], out.size[1], 1 if out.mode == "L" else 3)
