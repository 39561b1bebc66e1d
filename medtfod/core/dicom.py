"""DICOM images -> 8-bit PNG for the OD API (which reads only PNG and JPEG).

Display pipeline, in DICOM's own order: modality LUT (rescale slope/intercept), then the VOI
LUT or window centre/width, then MONOCHROME1 inversion (so bone is bright, as in
MONOCHROME2), then a linear scale of the resulting range to 0-255. RGB and palette
images (ultrasound) become RGB. Boxes stay in the DICOM's pixel frame: the PNG has the
same rows and columns, and the original size is what the header says.

Per-image fields kept from the header (`header_meta`): PatientSex -> 'sex', PatientAge ->
'age' (as written, e.g. '045Y'), ViewPosition -> 'view_position', PixelSpacing (else
ImagerPixelSpacing) -> 'pixel_spacing' as 'row,col' mm; an empty or absent element is left out.
"""
from __future__ import annotations

import io

import numpy as np

from .image_info import ImageError, ImageInfo, check_size


def dicom_to_png(path: str):
    """Read a DICOM file and return (png_bytes, ImageInfo) with the display pixels.

    Raises:
      ImageError: not DICOM, no pixel data, multi-frame, or a compressed transfer syntax
        pydicom cannot decode without extra plug-ins (the message names it).
    """
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # pydicom raises several types for non-DICOM input
        raise ImageError(f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        raise ImageError("DICOM file has no pixel data")
    rows, cols = int(ds.Rows), int(ds.Columns)
    check_size(cols, rows)
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise ImageError(f"multi-frame DICOM ({ds.NumberOfFrames} frames); export single frames first")
    try:
        pixels = ds.pixel_array
    except Exception as e:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise ImageError(f"cannot decode DICOM pixel data (transfer syntax {name}): {e}") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        photometric = "RGB"
    if photometric.startswith("MONOCHROME"):
        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        if photometric == "MONOCHROME1":
            scaled = 255.0 - scaled
        out = Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
        channels = 1
    else:
        if pixels.dtype != np.uint8:
            top = float(pixels.max()) or 1.0
            pixels = np.round(pixels.astype(np.float64) / top * 255.0).astype(np.uint8)
        out = Image.fromarray(pixels[..., :3], mode="RGB")
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
