"""Pascal VOC XML per image, in the layout labelImg 1.8.6 writes and reads.

VOC convention (converted here, once): integer pixel corners, 1-based and inclusive, so a
box covering pixel columns 0..9 (our continuous xmin=0, xmax=10) is written xmin=1,
xmax=10. Our float boxes are rounded to the nearest pixel edge first.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from ...core.annotations import ImageRecord


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
