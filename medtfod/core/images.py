"""Image files: find them, read their size from the header, and check them cheaply.

PNG, JPEG, TIFF and DICOM (`.dcm`, converted to PNG by `medtfod.core.dicom`; TIFF and, under a
window other than `header`, 16-bit grey PNG by `medtfod.core.deep_images`). A multi-frame DICOM's
frame is named `scan.dcm#k` (`medtfod.core.frames`).

The converter passes PNG and JPEG bytes through untouched, so it never decodes an image;
`probe` reads the size from the header and `verify` catches truncated or corrupt files
(PNG chunk CRCs and IEND, JPEG start/end markers) and implausible sizes (decompression
bombs) without decompressing anything.
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Dict, Iterable, List, Tuple

from .errors import UserError
from .image_info import MAX_PIXELS, MAX_SIDE, ImageError, ImageInfo, check_size  # noqa: F401 (images.MAX_*)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff")

# PNG colour type -> number of channels
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
# JPEG start-of-frame markers (baseline, progressive, lossless...), not DHT/JPG/DAC
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _png_info(data: bytes, verify: bool) -> ImageInfo:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageError("PNG without an IHDR header (truncated?)")
    width, height, _depth, colour = struct.unpack(">IIBB", data[16:26])
    check_size(width, height)
    if colour not in _PNG_CHANNELS:
        raise ImageError(f"PNG with unknown colour type {colour}")
    if verify:
        pos, end = 8, len(data)
        seen_iend = False
        while pos + 12 <= end:
            (length,) = struct.unpack(">I", data[pos:pos + 4])
            chunk_end = pos + 12 + length
            if chunk_end > end:
                raise ImageError(f"PNG truncated inside chunk {data[pos + 4:pos + 8]!r}")
            kind = data[pos + 4:pos + 8]
            (crc,) = struct.unpack(">I", data[chunk_end - 4:chunk_end])
            if zlib.crc32(data[pos + 4:chunk_end - 4]) != crc:
                raise ImageError(f"PNG chunk {kind.decode('latin-1')!r} has a bad CRC (corrupt file)")
            pos = chunk_end
            if kind == b"IEND":
                seen_iend = True
                break
        if not seen_iend:
            raise ImageError("PNG has no IEND chunk (truncated file)")
    return ImageInfo("png", width, height, _PNG_CHANNELS[colour])


def _jpeg_info(data: bytes, verify: bool) -> ImageInfo:
    if verify and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageError("JPEG does not end with the EOI marker (truncated file)")
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise ImageError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in _SOF_MARKERS:
            if pos + 10 > end:
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            check_size(width, height)
            return ImageInfo("jpeg", width, height, data[pos + 9])
        pos += 2 + length
    raise ImageError("JPEG without a start-of-frame header (truncated or not a JPEG)")


def probe_bytes(data: bytes, verify: bool = True) -> ImageInfo:
    """Format and size of PNG or JPEG bytes, read from the header.

    Raises:
      ImageError: not a PNG/JPEG, truncated, corrupt (when `verify`), or implausibly large.
    """
    if data.startswith(PNG_SIGNATURE):
        return _png_info(data, verify)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_info(data, verify)
    raise ImageError("not a PNG or JPEG file (unknown signature)")


def read_and_probe(path: str, verify: bool = True, window=None) -> Tuple[bytes, ImageInfo]:
    """The file's bytes and what its header says (see `probe_bytes`).

    DICOM files (`.dcm`, or `scan.dcm#k` for frame k of a multi-frame one) are the exception:
    they are decoded and returned as 8-bit PNG bytes under `window` (a `windowing.Window`; None:
    'header'; see `medtfod.core.dicom`), since the OD API reads only PNG and JPEG. So are TIFFs,
    and 16-bit grey PNGs under a window other than plain 'header' (`medtfod.core.deep_images`).
    """
    from .frames import split_frame
    file, frame = split_frame(path)
    if file.lower().endswith(".dcm"):
        from .dicom import dicom_to_png
        return dicom_to_png(file, window, frame)
    with open(path, "rb") as f:
        data = f.read()
    return decode_if_needed(data, verify, window)


def decode_if_needed(data: bytes, verify: bool = True, window=None) -> Tuple[bytes, ImageInfo]:
    """(bytes, header) of a PNG/JPEG/TIFF file's bytes: PNG and JPEG as they are, TIFF and (under
    a window other than plain 'header') 16-bit grey PNG decoded and windowed to 8-bit PNG."""
    from .deep_images import deep_to_png, is_deep_grey_png, is_tiff
    if is_tiff(data):
        return deep_to_png(data, window)
    info = probe_bytes(data, verify)
    if window is not None and not window.is_default and is_deep_grey_png(data):
        return deep_to_png(data, window)
    return data, info


def index_images(root: str, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> Tuple[Dict[str, str], List[Tuple[str, str]]]:
    """Find image files under `root` recursively, keyed by file name.

    NIH spreads its PNGs over images_001/ ... images_012/; callers look images up by name.

    Returns:
      (index, duplicates): file name -> path (the first in sorted walk order), and the
      (name, path) pairs of later files with a name already taken.
    """
    if not os.path.isdir(root):
        raise UserError(f"image folder not found: {root}")
    extensions = tuple(e.lower() for e in extensions)
    index: Dict[str, str] = {}
    duplicates: List[Tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(extensions):
                path = os.path.join(dirpath, name)
                if name in index:
                    duplicates.append((name, path))
                else:
                    index[name] = path
    return index, duplicates
