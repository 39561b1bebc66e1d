"""Multi-frame DICOM files in a conversion plan: table names of frames ('cine.dcm#3') matched to
their file, and a multi-frame file listed without findings expanded into its frames.

Frames count from 0 (`medtfod.core.frames`); the per-image step reads `PATH/cine.dcm#3` as frame 3.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List

from ..core.dicom import frame_count
from ..core.frames import frame_name, split_frame
from ..core.image_info import ImageError


def index_frames(grouped, index: Dict[str, str]) -> None:
    """Table names of DICOM frames ('scan.dcm#3', `core.frames`) -> the file's path with the same
    suffix ('/images/scan.dcm#3'), which the per-image step reads as that frame. Whether the frame
    exists is found when it is read (a frame out of range is a bad image, reported and skipped)."""
    for image in grouped:
        file, frame = split_frame(image)
        if frame is not None and image not in index and file in index:
            index[image] = frame_name(index[file], frame)


def negative_frames(grouped, index: Dict[str, str], per_image: List[dict]):
    """A multi-frame DICOM listed without findings and without a frame ('cine.dcm') -> each of its
    frames ('cine.dcm#0', ...), as images without findings with the file's fields (only the header
    of a local .dcm without findings is read here). A row with a box on such a file must name its
    frame: it is reported when the image is read. Returns (grouped, per_image) re-keyed."""
    out: "OrderedDict[str, list]" = OrderedDict()
    per_image = [dict(d) for d in per_image]
    for image, rows in grouped.items():
        path, frames = index.get(image), 1
        if not rows and path and "://" not in path and path.lower().endswith(".dcm"):
            try:
                frames = frame_count(path)
            except (ImageError, OSError):
                frames = 1  # reported when the image is read
        if frames <= 1:
            out[image] = rows
            continue
        for k in range(frames):
            name = frame_name(image, k)
            out[name] = []
            index[name] = frame_name(path, k)
            for d in per_image:
                if image in d:
                    d[name] = d[image]
    return out, per_image
