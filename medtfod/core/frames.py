"""Frames of multi-frame DICOM files as images of their own: `<file>#<frame>`.

A multi-frame DICOM (a cine loop, a tomosynthesis stack) becomes one image per frame, named
`scan.dcm#0`, `scan.dcm#1`, ...: frames count from 0, as pydicom's `pixel_array[k]` does (DICOM's
own ReferencedFrameNumber counts from 1: frame `#k` is DICOM frame number k + 1). Box tables name
a frame the same way (`scan.dcm#3`), and the manifest keeps the file and the frame apart
(`source_path`, `frame`). The suffix is recognised only after a `.dcm` name, so any other file
name containing '#' keeps its meaning.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

_FRAME = re.compile(r"^(.*\.dcm)#(\d+)$", re.IGNORECASE)


def split_frame(name: str) -> Tuple[str, Optional[int]]:
    """('scan.dcm', 3) for 'scan.dcm#3' (a name or a path); (name, None) without a frame suffix."""
    m = _FRAME.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def frame_name(name: str, frame: int) -> str:
    """'scan.dcm#3' for ('scan.dcm', 3)."""
    return f"{name}#{frame}"
