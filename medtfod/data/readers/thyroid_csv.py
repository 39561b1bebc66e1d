"""Thyroid ultrasound box tables in the NYCDSA/Koios capstone style (DDTI images).

No copy of the original CSVs is known, so the header is matched by meaning: names are
compared lower-cased with spaces and punctuation removed, and these aliases are accepted:

    image id      image_id, id, image
    image path    path, image_path, directory, directory_path, filepath, file, filename
    x, y          x, bbox_x, xmin / y, bbox_y, ymin
    width         w, width, bbox_w, bbox_width
    height        h, height, bbox_h, bbox_height
    outline       segmentation, points, polygon                (optional)

Source convention (settled here, converted once): x, y are the box's upper-left corner and
w, h its size, in pixels with a top-left origin, taken as continuous coordinates
(`Box.from_xywh`). Outline points are pixels in the same frame, written as
"x1 y1 x2 y2 ...", "x1,y1;x2,y2;...", or JSON ([[x, y], ...], [x, y, x, y, ...] or
[{"x": x, "y": y}, ...]); they become the object's `Mask`, while the box stays the table's.

The image is the file name of the path (Windows or POSIX separators); when the path is
missing or names a folder (no extension), the image id is used and the converter finds
the image file by that stem. The patient is the image id's part before the first '_'
(DDTI names are `{case}_{image}`), or the whole id when it has no '_'. One row per box;
a row whose box fields are all empty is an image without findings (`Table.negatives`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Dict, List, Optional, Tuple

from ...core.annotations import Table, TableRow
from ...core.boxes import Box, parse_coordinate
from ...core.errors import UserError
from ...core.masks import Mask
from ...core.problems import Problems
from .text import header_key, read_text

SOURCE = "thyroid-csv"
ALIASES: Dict[str, Tuple[str, ...]] = {
    "image_id": ("image_id", "id", "image"),
    "path": ("path", "image_path", "directory", "directory_path", "filepath", "file", "filename"),
    "x": ("x", "bbox_x", "xmin"),
    "y": ("y", "bbox_y", "ymin"),
    "w": ("w", "width", "bbox_w", "bbox_width"),
    "h": ("h", "height", "bbox_h", "bbox_height"),
    "points": ("segmentation", "points", "polygon"),
}
BOX_KEYS = ("x", "y", "w", "h")


def _expected() -> str:
    return "; ".join(f"{key}: {'/'.join(names)}" for key, names in ALIASES.items())


def _columns(path: str, header: List[str]) -> Dict[str, int]:
    """Column index of each key found in `header`.

    Raises:
      UserError: x, y, w or h is missing, there is neither an image id nor a path column,
        or two columns mean the same thing.
    """
    found: Dict[str, int] = {}
    for key, names in ALIASES.items():
        wanted = {header_key(n) for n in names}
        hits = [i for i, h in enumerate(header) if header_key(h) in wanted]
        if len(hits) > 1:
            raise UserError(f"{path}:1: columns {', '.join(repr(header[i]) for i in hits)} all mean {key!r}; "
                            "rename or remove all but one")
        if hits:
            found[key] = hits[0]
    missing = [k for k in BOX_KEYS if k not in found]
    if missing or not ("image_id" in found or "path" in found):
        what = ", ".join(missing) if missing else "image id or path"
        raise UserError(f"{path}:1: no column for {what}. The header has {', '.join(map(repr, header))}; "
                        f"expected (any spelling, case and punctuation ignored) {_expected()}")
    return found


def parse_points(text: str) -> Tuple[float, ...]:
    """Outline text -> flat (x0, y0, x1, y1, ...) pixels.

    Raises:
      ValueError: not one of the accepted forms (see the module docstring), an odd
        number of values, a non-finite value, or fewer than 3 vertices.
    """
    text = text.strip()
    if text.startswith("["):
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError("expected a JSON list")
        if all(isinstance(p, dict) for p in data):
            values = [v for p in data for v in (p["x"], p["y"])]
        elif all(isinstance(p, list) for p in data):
            if any(len(p) != 2 for p in data):
                raise ValueError("each [x, y] pair must have 2 numbers")
            values = [v for p in data for v in p]
        else:
            values = data
    elif ";" in text:
        values = [v for pair in text.split(";") if pair.strip() for v in pair.split(",")]
        if len(values) != 2 * len([p for p in text.split(";") if p.strip()]):
            raise ValueError("each 'x,y' pair must have 2 numbers")
    else:
        values = [v for v in re.split(r"[\s,]+", text) if v]
    if any(isinstance(v, bool) for v in values):
        raise ValueError("coordinates must be numbers")
    flat = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in flat):
        raise ValueError("coordinates must be finite")
    if len(flat) % 2:
        raise ValueError(f"{len(flat)} values: expected x, y pairs")
    if len(flat) < 6:
        raise ValueError(f"{len(flat) // 2} point(s): a polygon needs at least 3")
    return flat


def _image_name(image_id: str, path: str) -> str:
    base = re.split(r"[\\/]", path.strip().rstrip("\\/"))[-1] if path.strip() else ""
    if "." in base.lstrip(".") or not image_id:
        return base
    return image_id


def patient_of(image_id: str) -> str:
    """'12_3' -> '12'; an id without '_' is its own patient."""
    return image_id.split("_", 1)[0] if "_" in image_id.strip("_") else image_id


def read_thyroid_csv(table_path: str, problems: Problems, label: str = "nodule"):
    """Read a thyroid box table (see the module docstring for its columns and conventions).

    Args:
      table_path: the CSV file (UTF-8, a header row first).
      problems: receives each bad row (file, line, value, what was expected); the row is
        skipped.
      label: the class of every row.

    Returns:
      A `medtfod.core.annotations.Table` (source 'thyroid-csv'): one row per box, pixel `Box` from
      the upper-left x, y and width, height; `mask` where an outline is given.

    Raises:
      UserError: the file is missing, empty or not UTF-8, or the header lacks the box
        columns or both the image id and path columns (the message lists the columns
        found and the names expected).
    """

    rows = list(csv.reader(io.StringIO(read_text(table_path), newline="")))
    if not rows:
        raise UserError(f"{table_path}: the file is empty; expected a header with {_expected()}")
    header = [h.strip() for h in rows[0]]
    at = _columns(table_path, header)
    needed = max(i for key, i in at.items() if key != "points")
    table = Table(SOURCE, [], inputs={"table": table_path})
    negatives: List[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) <= needed:
            problems.add(table_path, line, "missing_column", ",".join(row),
                         f"expected {len(header)} fields as in the header, got {len(row)}")
            continue
        if any(f.strip() for f in row[len(header):]):
            problems.add(table_path, line, "extra_column", ",".join(row[len(header):]),
                         f"expected {len(header)} fields as in the header, got {len(row)}; "
                         "quote a field that holds commas (an outline such as \"1,2;3,4;5,6\")")
            continue
        row = row + [""] * (len(header) - len(row))  # a trailing empty outline may be left off
        image_id = row[at["image_id"]].strip() if "image_id" in at else ""
        image = _image_name(image_id, row[at["path"]] if "path" in at else "")
        if not image:
            problems.add(table_path, line, "missing_value", ",".join(row), "empty image id and path")
            continue
        table.patients[image] = patient_of(image_id or image.rsplit(".", 1)[0])
        texts = [row[at[k]].strip() for k in BOX_KEYS]
        if not any(texts):
            negatives.append(image)
            continue
        values = _numbers(table_path, line, image, header, at, texts, problems)
        if values is None:
            continue
        x, y, w, h = values
        if w <= 0 or h <= 0:
            problems.add(table_path, line, "bad_box", f"w={w:g}, h={h:g}",
                         f"box of {image} must have positive width and height", image=image)
            continue
        mask: Optional[Mask] = None
        outline = row[at["points"]].strip() if "points" in at else ""
        if outline:
            try:
                mask = Mask(polygons=(parse_points(outline),))
            except (ValueError, TypeError, KeyError) as e:
                problems.add(table_path, line, "bad_points", outline[:60],
                             f"column {header[at['points']]!r} of {image}: {e}; expected 'x1 y1 x2 y2 ...', "
                             "'x1,y1;x2,y2;...' or a JSON list of [x, y] pairs, at least 3 points", image=image)
                continue
        table.rows.append(TableRow(image, label, Box.from_xywh(x, y, w, h), table_path, line, mask=mask))
    with_boxes = {r.image for r in table.rows}
    table.negatives = sorted(set(negatives) - with_boxes)
    return table


def _numbers(path, line, image, header, at, texts, problems) -> Optional[List[float]]:
    """The four box numbers of a row, or None after reporting the first bad one."""
    values = []
    for key, text in zip(BOX_KEYS, texts):
        value = parse_coordinate(text)
        if value is None:
            kind = "missing_value" if not text else "bad_number"
            problems.add(path, line, kind, text,
                         f"column {header[at[key]]!r} ({key}) of {image} must be a finite number of pixels",
                         image=image)
            return None
        values.append(value)
    return values
