"""Any box table, through a column mapping (`medtfod convert csv --columns ...`).

Source convention: pixel coordinates with a top-left origin, given either as
`x, y, w, h` (top-left corner plus size; `Box.from_xywh`) or as corners
`xmin, ymin, xmax, ymax`, taken as continuous coordinates (as most exporters write them;
use the `voc` source for 1-based inclusive VOC files). One row per box; several rows per
image are several objects; a row whose box fields are all empty describes an image
without findings. A file name may omit its extension: the converter then matches the
image by its stem.

    --columns filename=image,label=finding,x=bx,y=by,w=bw,h=bh[,patient=pid]
    --columns filename=filename,label=class,xmin=xmin,ymin=ymin,xmax=xmax,ymax=ymax

`--meta COL[,COL...]` keeps other columns as per-image fields (see `readers.meta`).
"""
from __future__ import annotations

import csv
import io
from typing import Dict, List, Optional

from ...core.annotations import Table, TableRow
from ...core.boxes import Box, parse_coordinate
from ...core.errors import UserError
from ...core.problems import Problems
from .meta import MetaCollector, check_columns
from .text import read_text

XYWH = ("x", "y", "w", "h")
CORNERS = ("xmin", "ymin", "xmax", "ymax")
KEYS = ("filename", "label", "patient") + XYWH + CORNERS


def parse_columns(spec: str) -> Dict[str, str]:
    """'filename=image,label=cls,x=a,...' -> {'filename': 'image', ...}, checked for completeness."""
    mapping: Dict[str, str] = {}
    for part in spec.split(","):
        key, sep, column = part.partition("=")
        key, column = key.strip(), column.strip()
        if not sep or not column:
            raise UserError(f"--columns {spec!r}: {part!r} is not KEY=COLUMN")
        if key not in KEYS:
            raise UserError(f"--columns: unknown key {key!r}; keys are {', '.join(KEYS)}")
        mapping[key] = column
    has_xywh, has_corners = all(k in mapping for k in XYWH), all(k in mapping for k in CORNERS)
    if "filename" not in mapping or has_xywh == has_corners:
        raise UserError("--columns needs filename= and either x=,y=,w=,h= or xmin=,ymin=,xmax=,ymax= "
                        f"(got {', '.join(mapping) or 'nothing'})")
    return mapping


def read_csv_table(path: str, columns: Dict[str, str], problems: Problems, label: Optional[str] = None,
                   meta: Optional[List[str]] = None):
    """Read a box table through `columns` (see `parse_columns`).

    Args:
      label: the class of every row, for tables without a label column.
      meta: columns kept as per-image fields (`Table.meta`, named in lower case).

    Returns:
      A `medtfod.core.annotations.Table` (source 'csv').

    Raises:
      UserError: a mapped or `meta` column is not in the header, neither a label column nor
        `label` is given, or two rows of an image disagree on a `meta` column.
    """

    if "label" not in columns and not label:
        raise UserError("the table has no label column: map one with label=COLUMN or give --label NAME")
    rows = list(csv.reader(io.StringIO(read_text(path), newline="")))
    if not rows:
        raise UserError(f"{path}: the file is empty")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in columns.values() if c not in header]
    if missing:
        raise UserError(f"{path}:1: column(s) {', '.join(map(repr, missing))} not in the header; "
                        f"the header has {', '.join(map(repr, header))}")
    check_columns(path, meta or [], header)
    fields = MetaCollector(path, meta or [])
    at = {key: header.index(col) for key, col in columns.items()}
    box_keys = XYWH if "x" in at else CORNERS
    table = Table("csv", [], inputs={"table": path})
    negatives = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        image = row[at["filename"]].strip()
        if not image:
            problems.add(path, line, "missing_value", ",".join(row), f"empty {columns['filename']!r}")
            continue
        fields.add(image, line, {c: row[header.index(c)] for c in fields.columns})
        if "patient" in at and row[at["patient"]].strip():
            table.patients[image] = row[at["patient"]].strip()
        texts = [row[at[k]].strip() for k in box_keys]
        if not any(texts):
            negatives.append(image)
            continue
        values = []
        for key, text in zip(box_keys, texts):
            value = parse_coordinate(text)
            if value is None:
                problems.add(path, line, "bad_number", text,
                             f"column {columns[key]!r} ({key}) of {image} must be a number of pixels",
                             image=image)
                break
            values.append(value)
        else:
            box = Box.from_xywh(*values) if box_keys == XYWH else Box(*values)
            issue = box.problem()
            if issue:
                problems.add(path, line, "bad_box", ",".join(texts), f"{image}: {issue}", image=image)
                continue
            name = row[at["label"]].strip() if "label" in at else label
            table.rows.append(TableRow(image, name, box, path, line))
    with_boxes = {r.image for r in table.rows}
    table.negatives = sorted(set(negatives) - with_boxes)
    table.meta = fields.meta
    return table
