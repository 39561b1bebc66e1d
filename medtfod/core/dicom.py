"""DICOM images -> 8-bit PNG for the OD API (which reads only PNG and JPEG).

Display pipeline, in DICOM's own order: modality LUT (rescale slope/intercept), then a grey
window (`medtfod.core.windowing`; the default `header` is the file's VOI LUT or window
centre/width followed by a min-max stretch of the resulting range to 0-255), then MONOCHROME1
inversion (so bone is bright, as in MONOCHROME2). RGB and palette images (ultrasound) become
RGB, whatever the window (and without CLAHE). Boxes stay in the DICOM's pixel frame: the PNG has the same rows and
columns, and the original size is what the header says.

Multi-frame files: one frame at a time, `frame` counting from 0 (`medtfod.core.frames`).

Per-image fields kept from the header (`header_meta`): PatientSex -> 'sex', PatientAge ->
'age' (as written, e.g. '045Y'), ViewPosition -> 'view_position', PixelSpacing (else
ImagerPixelSpacing) -> 'pixel_spacing' as 'row,col' mm; an empty or absent element is left out.
"""
from __future__ import annotations

import io
from typing import Optional

import numpy as np

from .image_info import ImageError, ImageInfo, check_size
from .windowing import Window, apply_window, parse_window


def _read(path):
    import pydicom
    try:
        return pydicom.dcmread(path)
    except Exception as e:  # pydicom raises several types for non-DICOM input
        raise ImageError(f"not a readable DICOM file ({type(e).__name__}: {e})") from None


def frame_count(path) -> int:
    """The number of frames of a DICOM file (1 for a single-frame one), read from its header only.

    Raises:
      ImageError: not a readable DICOM file.
    """
    import pydicom
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:
        raise ImageError(f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    return int(getattr(ds, "NumberOfFrames", 1) or 1)


def _pixels(ds, frame: Optional[int]):
    """The stored pixel values of one frame (the only one for a single-frame file)."""
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frame is None and frames > 1:
        raise ImageError(f"multi-frame DICOM ({frames} frames): name one frame as FILE#k, k from 0 to {frames - 1} "
                         "(frames count from 0)")
    if frame is not None and not 0 <= frame < frames:
        raise ImageError(f"frame #{frame} is out of range: the file has {frames} frame(s), #0 to #{frames - 1} "
                         "(frames count from 0)")
    try:
        if frames > 1:
            from pydicom.pixels import pixel_array
            return pixel_array(ds, index=frame)  # decodes this frame only
        return ds.pixel_array
    except Exception as e:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise ImageError(f"cannot decode DICOM pixel data (transfer syntax {name}): {e}") from None


def dicom_to_png(path, window: Optional[Window] = None, frame: Optional[int] = None):
    """Read a DICOM file (a path or a binary file object) and return (png_bytes, ImageInfo) with
    the display pixels of `frame` (None: a single-frame file) under `window` (None: 'header').

    A grey image gives a 1-channel PNG (3 channels for a multi: window); RGB and palette images
    a 3-channel one, unwindowed (no CLAHE either).

    Raises:
      ImageError: not DICOM, no pixel data, a multi-frame file without a frame, a frame out of
        range, or a compressed transfer syntax pydicom cannot decode without extra plug-ins (the
        message names it).
    """
    from PIL import Image
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    window = window if window is not None else parse_window(None)
    ds = _read(path)
    if "PixelData" not in ds:
        raise ImageError("DICOM file has no pixel data")
    rows, cols = int(ds.Rows), int(ds.Columns)
    check_size(cols, rows)
    pixels = _pixels(ds, frame)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        photometric = "RGB"
    if photometric.startswith("MONOCHROME"):
        values = apply_modality_lut(pixels, ds)
        out = apply_window(values, window, invert=photometric == "MONOCHROME1",
                           header=lambda v: apply_voi_lut(v, ds))
        channels = 1 if out.ndim == 2 else 3
        out = Image.fromarray(out, mode="L" if channels == 1 else "RGB")
    else:
        if pixels.dtype != np.uint8:
            top = float(pixels.max()) or 1.0
            pixels = np.round(pixels.astype(np.float64) / top * 255.0).astype(np.uint8)
        out = Image.fromarray(np.ascontiguousarray(pixels[..., :3]), mode="RGB")
        channels = 3
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return buffer.getvalue(), ImageInfo("png", cols, rows, channels, header_meta(ds))


_FIELDS = (("sex", "PatientSex"), ("age", "PatientAge"), ("view_position", "ViewPosition"))


def header_meta(ds) -> dict:
    """{'sex', 'age', 'view_position', 'pixel_spacing'} from a pydicom dataset's header, the
    values as written (stripped); 'pixel_spacing' is 'row,col' (DICOM's own order: the
    spacing between rows first) from PixelSpacing, else ImagerPixelSpacing, in mm per pixel
    of the image as stored (the PNG keeps its rows and columns)."""
    meta = {}
    for key, keyword in _FIELDS:
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            meta[key] = value
    from pydicom.multival import MultiValue
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        values = [str(v).strip() for v in value] if isinstance(value, MultiValue) else []
        if len(values) == 2 and all(values):
            meta["pixel_spacing"] = ",".join(values)
            break
    return meta
