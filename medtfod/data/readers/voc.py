"""Pascal VOC XML, one file per image, as labelImg writes it (`medtfod convert voc --xml-dir`).

Source convention (settled here, converted once, in `voc_box`): `<bndbox>` corners are
pixel indices, 1-based and inclusive, so `xmin=1, xmax=10` covers pixel columns 0..9,
which is the continuous box `Box(0, .., 10, ..)`. This is the exact inverse of
`medtfod.data.writers.voc`. labelImg writes integers; fractional values (some exporters) are
accepted and shifted the same way.

Files are parsed with `defusedxml` (no entity expansion, no DTD fetching, no network); a
file that is not well-formed XML is a problem, not a crash. The image name is `<filename>`;
when it has no extension (older labelImg), the XML file's stem plus the extension of
`<path>` is used, and without either the converter matches the image by its stem. VOC has
no patient ids: the converter's default (the name's stem) applies. A file without
`<object>` lists an image without findings.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

import defusedxml
import defusedxml.ElementTree as DET
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from ...core.annotations import Table, TableRow
from ...core.boxes import Box
from ...core.errors import UserError
from ...core.problems import Problems

CORNERS = ("xmin", "ymin", "xmax", "ymax")


def voc_box(xmin: float, ymin: float, xmax: float, ymax: float) -> Box:
    """VOC corners -> medtfod `Box`.

    VOC indexes pixels from 1 and its max corner is the last pixel *inside* the box; our
    boxes are continuous with the origin at the top-left corner of pixel 0. So the min
    corners move down by one and the max corners stay: pixel index i (1-based, inclusive)
    ends at continuous coordinate i. `writers.voc` does the inverse (`+ 1` on the mins).
    """
    return Box(xmin - 1.0, ymin - 1.0, float(xmax), float(ymax))


class _LineBuilder(TreeBuilder):
    """A tree builder that remembers the line each element starts on (for problem reports)."""

    def __init__(self):
        super().__init__()
        self.parser: Optional[DET.DefusedXMLParser] = None
        self.lines: Dict[int, int] = {}

    def start(self, tag, attrs):
        element = super().start(tag, attrs)
        self.lines[id(element)] = self.parser.parser.CurrentLineNumber
        return element


def _parse(path: str) -> Tuple[Element, Dict[int, int]]:
    """Parse one XML file safely; returns (root, id(element) -> line).

    Raises:
      ParseError, defusedxml.DefusedXmlException, OSError: not usable XML.
    """
    builder = _LineBuilder()
    parser = DET.DefusedXMLParser(target=builder)  # entities and external refs forbidden
    builder.parser = parser
    with open(path, "rb") as f:
        parser.feed(f.read())
    root = parser.close()
    return root, builder.lines


def xml_files(xml_dir: str) -> List[str]:
    """The `.xml` files under `xml_dir` (any case of the extension), folders and names in sorted order."""
    files = []
    for dirpath, dirnames, filenames in os.walk(xml_dir):
        dirnames.sort()
        files.extend(os.path.join(dirpath, n) for n in sorted(filenames) if n.lower().endswith(".xml"))
    return files


def _image_name(root: Element, path: str) -> str:
    """`<filename>` (its base name); without an extension, the XML stem + `<path>`'s extension."""
    filename = os.path.basename((root.findtext("filename") or "").strip().replace("\\", "/"))
    if filename and os.path.splitext(filename)[1]:
        return filename
    stem = os.path.splitext(os.path.basename(path))[0]
    image_path = (root.findtext("path") or "").strip().replace("\\", "/")
    ext = os.path.splitext(os.path.basename(image_path))[1]
    return stem + ext if ext else (filename or stem)


def _read_object(obj: Element, path: str, line: int, image: str, problems: Problems):
    """(label, Box) of one `<object>`, or None after reporting why it is unusable."""
    label = (obj.findtext("name") or "").strip()
    if not label:
        problems.add(path, line, "missing_value", "", f"<object> of {image} has no <name>", image=image)
        return None
    bndbox = obj.find("bndbox")
    if bndbox is None:
        problems.add(path, line, "missing_value", label, f"<object> {label!r} of {image} has no <bndbox>",
                     image=image)
        return None
    values = []
    for name in CORNERS:
        text = bndbox.findtext(name)
        try:
            value = float(text)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            problems.add(path, line, "bad_number", text if text is not None else "",
                         f"<bndbox><{name}> of {label!r} in {image} must be a number of pixels "
                         f"(1-based, inclusive), got {'nothing' if text is None else repr(text)}", image=image)
            return None
        values.append(value)
    box = voc_box(*values)
    issue = box.problem()
    if issue:
        file_values = ", ".join(f"{name}={v:g}" for name, v in zip(CORNERS, values))
        problems.add(path, line, "bad_box", " ".join(f"{v:g}" for v in values),
                     f"<object> {label!r} of {image}: <bndbox> {file_values} is not a box: {issue} "
                     "(in continuous pixels, after the 1-based VOC shift)", image=image)
        return None
    return label, box


class VocFile(NamedTuple):
    """One VOC XML file read: its image, the `<size>` (0 when absent), labelImg's `verified`
    attribute, and its objects as (label, Box, line) in file order (bad objects reported and left out)."""
    path: str
    image: str
    width: int
    height: int
    verified: bool
    objects: List[Tuple[str, Box, int]]
    dropped: int  # bad objects, reported and left out


def _size(root: Element, name: str) -> int:
    try:
        return int(float(root.findtext(f"size/{name}") or 0))
    except ValueError:
        return 0


def read_voc_file(path: str, problems: Problems) -> Optional[VocFile]:
    """One Pascal VOC file, or None after reporting why it is unusable (see `read_voc`)."""
    try:
        root, lines = _parse(path)
    except (ParseError, defusedxml.DefusedXmlException, OSError) as e:
        line = getattr(e, "position", (None,))[0]
        problems.add(path, line, "bad_xml", os.path.basename(path), f"not readable as safe XML: {e}")
        return None
    if root.tag != "annotation":
        problems.add(path, lines.get(id(root)), "not_voc", root.tag,
                     f"root element is <{root.tag}>; expected a Pascal VOC <annotation>")
        return None
    image = _image_name(root, path)
    objects, elements = [], root.findall("object")
    for obj in elements:  # every bad object is reported (with its image, which convert drops)
        line = lines.get(id(obj), 0)
        parsed = _read_object(obj, path, line, image, problems)
        if parsed is not None:
            objects.append((parsed[0], parsed[1], line))
    return VocFile(path, image, _size(root, "width"), _size(root, "height"),
                   root.get("verified", "").strip().lower() == "yes", objects, len(elements) - len(objects))


def read_voc(xml_dir: str, problems: Problems):
    """Read a folder of Pascal VOC XML files (recursively, sorted) into a `Table`.

    Args:
      xml_dir: folder with one `<annotation>` XML per image (labelImg layout).
      problems: where unreadable files and bad objects are reported. Each bad `<object>` is reported
        with its image, which `convert_table` drops whole.

    Returns:
      A `medtfod.core.annotations.Table` (source 'voc'): one row per object with the box converted
      from 1-based inclusive corners (see `voc_box`); files without objects as negatives;
      no patient ids.

    Raises:
      UserError: `xml_dir` is not a folder or holds no `.xml` file.
    """
    if not os.path.isdir(xml_dir):
        raise UserError(f"VOC folder not found: {xml_dir}")
    files = xml_files(xml_dir)
    if not files:
        raise UserError(f"no .xml files under {xml_dir}; expected Pascal VOC annotations (labelImg)")
    table = Table("voc", [], inputs={"xml_dir": xml_dir})
    seen: Dict[str, str] = {}
    for path in files:
        found = read_voc_file(path, problems)
        if found is None:
            continue
        if found.image in seen:
            problems.add(path, None, "duplicate_image", found.image,
                         f"image {found.image!r} is already annotated by {seen[found.image]}; this file is skipped")
            continue
        seen[found.image] = path
        table.rows.extend(TableRow(found.image, label, box, path, line) for label, box, line in found.objects)
        if not found.objects and not found.dropped:
            table.negatives.append(found.image)
    return table
