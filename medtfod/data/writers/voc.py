"""Pascal VOC XML per image, in the layout labelImg 1.8.6 writes and reads.

VOC convention (converted here, once): integer pixel corners, 1-based and inclusive, so a
box covering pixel columns 0..9 (our continuous xmin=0, xmax=10) is written xmin=1,
xmax=10. Our float boxes are rounded to the nearest pixel edge first.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Dict, Iterable

from ...core.annotations import ImageRecord
from ...core.errors import UserError
from ...core.frames import split_frame


def voc_name(image_id: str) -> str:
    """The VOC file of an image, relative to the output folder: `voc/<stem>.xml`, and for frame k
    of a multi-frame DICOM ('scan.dcm#3', `core.frames`) `voc/scan#3.xml`."""
    file, frame = split_frame(image_id)
    return "voc/" + os.path.splitext(file)[0] + ("" if frame is None else f"#{frame}") + ".xml"


def check_names(images: Iterable[str]) -> None:
    """Refuse, before anything is written, two images whose VOC files would be one (`x.png` and
    `x.jpg` -> voc/x.xml; names differing only in case, on Windows and macOS): one image's
    annotation would be lost."""
    seen: Dict[str, str] = {}
    for image in sorted(images):
        key = voc_name(image).lower()
        if key in seen:
            raise UserError(f"images {seen[key]} and {image} would both be written as {voc_name(image)} (VOC files "
                            "are named by the image's stem), losing one annotation; rename one of the images "
                            "(and its rows in the table) so that the stems differ")
        seen[key] = image


def _sub(parent: ET.Element, tag: str, text=None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def voc_xml(record: ImageRecord, folder: str = "images") -> bytes:
    """The VOC annotation of one image as UTF-8 XML bytes."""
    root = ET.Element("annotation")
    _sub(root, "folder", folder)
    _sub(root, "filename", record.image_id)
    _sub(root, "path", record.path.replace("\\", "/"))
    _sub(_sub(root, "source"), "database", "Unknown")
    size = _sub(root, "size")
    _sub(size, "width", record.width)
    _sub(size, "height", record.height)
    _sub(size, "depth", 1 if record.channels == 1 else 3)
    _sub(root, "segmented", 0)
    for obj in record.objects:
        b = obj.box
        xmin, ymin = round(b.xmin), round(b.ymin)
        xmax, ymax = max(round(b.xmax), xmin + 1), max(round(b.ymax), ymin + 1)
        el = _sub(root, "object")
        _sub(el, "name", obj.label)
        _sub(el, "pose", "Unspecified")
        _sub(el, "truncated", 0)
        _sub(el, "difficult", 0)
        box = _sub(el, "bndbox")
        _sub(box, "xmin", xmin + 1)
        _sub(box, "ymin", ymin + 1)
        _sub(box, "xmax", xmax)
        _sub(box, "ymax", ymax)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"
