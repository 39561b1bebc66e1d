"""DDTI thyroid ultrasound: one `<case>` XML per patient, nodules outlined as freehand polygons.

Source convention (settled here, converted once): each `<mark>` names an image
(`<image>N</image>`, file `{number}_{N}.jpg`) and holds `<svg>`, a JSON list of regions
`{"points": [{"x": int, "y": int}, ...], "regionType": "freehand" | "arrow", ...}`.
Points are integer pixels, origin top-left, taken unchanged as medtfod's continuous
coordinates: the polygon becomes the object's `Mask` and its vertex bounds its `Box`.
Some outlines run past the 560x360 image (case 338 image 2 reaches y=394), so rows carry
`clip=True` and the converter clips them to the image.

Quirks: 14 files are pretty-printed with the JSON wrapped across lines (JSON allows that
whitespace); "double" images with two panels side by side hold one region per panel,
which become several objects of the same image; `arrow` regions point at a nodule and
are not outlines. Nothing is skipped silently; each skipped item is a problem of kind
`skipped_arrow` (expected, not an error), `empty_svg`, `bad_svg` (invalid or truncated
JSON: 8 real marks end after 2,500 characters), `bad_polygon`, `bad_mark` or `bad_xml`.
Each image also gets its case's fields `CASE_FIELDS` (`<age>`, `<sex>`, `<tirads>`, ...) as
per-image metadata, the text as written, stripped; an empty element (most cases leave some
empty) is left out, never guessed. The XML is parsed with defusedxml: DTDs, entity declarations and external references are
refused (a `bad_xml` problem), never expanded or fetched.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import List, Optional, Tuple
from xml.etree.ElementTree import ParseError, TreeBuilder

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from ...core.annotations import Table, TableRow
from ...core.errors import UserError
from ...core.masks import Mask, polygon_bounds
from ...core.problems import Problems

SOURCE = "ddti"
CASE_FIELDS = ("age", "sex", "composition", "echogenicity", "margins", "calcifications", "tirads")


class _MarkLines(TreeBuilder):
    """A tree builder that notes the 1-based line of each `<mark>` start tag."""

    def __init__(self):
        super().__init__()
        self.expat = None
        self.mark_lines: List[int] = []

    def start(self, tag, attrs):
        if tag == "mark":
            self.mark_lines.append(getattr(self.expat, "CurrentLineNumber", 1) or 1)
        return super().start(tag, attrs)


def _case_order(name: str):
    stem = os.path.splitext(name)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def _parse_case(path: str, problems: Problems):
    """(root element, mark lines) of one case file, or None after reporting a `bad_xml` problem."""
    builder = _MarkLines()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    builder.expat = getattr(parser, "parser", None)
    try:
        with open(path, "rb") as f:
            data = f.read()
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException as e:
        problems.add(path, None, "bad_xml", type(e).__name__,
                     f"refused unsafe XML ({e}); DDTI case files have no DOCTYPE or entities")
        return None
    except ParseError as e:
        line = e.position[0] if getattr(e, "position", None) else None
        problems.add(path, line, "bad_xml", str(e), "not well-formed XML; expected a DDTI <case> file")
        return None
    except OSError as e:
        problems.add(path, None, "bad_xml", str(e), "cannot read the file")
        return None
    if root.tag != "case":
        problems.add(path, 1, "bad_xml", root.tag, f"root element is <{root.tag}>, expected <case>")
        return None
    return root, builder.mark_lines


def _polygon(region: dict) -> Tuple[Optional[Tuple[float, ...]], str]:
    """(flat x0, y0, x1, y1, ... vertices, '') of a freehand region, or (None, why not)."""
    points = region.get("points")
    if not isinstance(points, list):
        return None, "region has no 'points' list"
    flat: List[float] = []
    for p in points:
        try:
            x, y = float(p["x"]), float(p["y"])
        except (TypeError, KeyError, ValueError):
            return None, f"point {p!r} is not {{'x': number, 'y': number}}"
        if not (math.isfinite(x) and math.isfinite(y)):
            return None, f"point {p!r} is not finite"
        flat += [x, y]
    if len(points) < 3:
        return None, f"outline has {len(points)} point(s); a polygon needs at least 3"
    issue = polygon_bounds(tuple(flat)).problem()
    if issue:
        return None, f"outline encloses no area: {issue}"
    return tuple(flat), ""


def _read_mark(mark, number: str, path: str, line: int, label: str, problems: Problems) -> list:
    """The rows of one `<mark>` (empty after reporting why, when it has none)."""

    n = (mark.findtext("image") or "").strip()
    if not n.isdigit():
        problems.add(path, line, "bad_mark", n, f"case {number}: <image> must be an image number, got {n!r}")
        return []
    image = f"{number}_{int(n)}.jpg"
    svg = mark.findtext("svg") or ""
    if not svg.strip():
        problems.add(path, line, "empty_svg", image, f"{image}: the mark's <svg> is empty; no outline to convert",
                     image=image)
        return []
    try:
        regions = json.loads(svg)
    except ValueError as e:
        problems.add(path, line, "bad_svg", svg.strip()[-40:],
                     f"{image}: <svg> is invalid JSON ({len(svg)} characters; truncated?): {e}", image=image)
        return []
    if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
        problems.add(path, line, "bad_svg", svg.strip()[:40],
                     f"{image}: <svg> must be a JSON list of region objects", image=image)
        return []
    rows, bad = [], []
    for i, region in enumerate(regions, start=1):
        kind = region.get("regionType")
        if kind == "arrow":
            problems.add(path, line, "skipped_arrow", f"{image} region {i}",
                         f"{image}: arrow annotation, not a nodule outline (skipped)")
            continue
        if kind != "freehand":
            bad.append((f"{image} region {i}", f"regionType {kind!r} is not 'freehand' or 'arrow'"))
            continue
        polygon, why = _polygon(region)
        if polygon is None:
            bad.append((f"{image} region {i}", why))
            continue
        rows.append(TableRow(image, label, polygon_bounds(polygon), path, line,
                             mask=Mask(polygons=(polygon,)), clip=True))
    for value, why in bad:
        # Keeping the image with one outline missing would teach that nodule as background.
        problems.add(path, line, "bad_polygon", value, f"{why}; the whole mark {image} is left out", image=image)
    if not rows and not bad:
        problems.add(path, line, "bad_mark", image, f"{image}: the mark has no nodule outline", image=image)
    return rows


def read_ddti(xml_dir: str, problems: Problems, label: str = "nodule"):
    """Read every `*.xml` DDTI case in `xml_dir` (in case-number order) into a table.

    Each freehand region of each `<mark>` becomes one row: image `{number}_{N}.jpg`,
    `mask` the polygon (vertices in integer pixels, top-left origin, used unchanged as
    continuous coordinates), `box` the polygon's vertex bounds, `clip=True` because some
    outlines leave the image. `line` is the line of the `<mark>` start tag (1 for the
    single-line files). The patient is the case `<number>`; the case's non-empty
    `CASE_FIELDS` are every one of its images' metadata (`Table.meta`).

    Args:
      xml_dir: the folder of case files (`1.xml` ... `399.xml`).
      problems: receives every skipped file, mark or region (see the module docstring).
      label: the class of every outline.

    Returns:
      A `medtfod.core.annotations.Table` (source 'ddti').

    Raises:
      UserError: `xml_dir` is not a folder or holds no `.xml` file.
    """

    if not os.path.isdir(xml_dir):
        raise UserError(f"--xml-dir {xml_dir!r} is not a folder; expected the DDTI folder of <case> XML files")
    names = sorted((n for n in os.listdir(xml_dir) if n.lower().endswith(".xml")), key=_case_order)
    if not names:
        raise UserError(f"{xml_dir}: no .xml files; expected DDTI case files such as 1.xml")
    table = Table(SOURCE, [], inputs={"xml_dir": xml_dir})
    for name in names:
        path = os.path.join(xml_dir, name)
        parsed = _parse_case(path, problems)
        if parsed is None:
            continue
        root, lines = parsed
        number = (root.findtext("number") or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9-]+", number):
            problems.add(path, 1, "bad_xml", number, "<number> must name the case (e.g. 59); the images are "
                         "'{number}_{N}.jpg'")
            continue
        fields = {key: (root.findtext(key) or "").strip() for key in CASE_FIELDS}
        fields = {key: value for key, value in fields.items() if value}
        marks = root.findall("mark")
        if len(lines) != len(marks):  # a <mark> nested elsewhere: line numbers unknown
            lines = [1] * len(marks)
        for mark, line in zip(marks, lines):
            rows = _read_mark(mark, number, path, line, label, problems)
            for row in rows:
                table.patients[row.image] = number
                table.meta[row.image] = dict(fields)
            table.rows.extend(rows)
    return table

