"""NIH ChestX-ray14: `BBox_List_2017.csv` boxes and the optional `Data_Entry_2017*.csv`.

Source convention (settled here, converted once): each box row is
`Image Index, Finding Label, x, y, w, h` with float pixels on the released 1024x1024 PNGs,
(x, y) the top-left corner, origin top-left, so `Box.from_xywh` applies unchanged.

Header quirk: the canonical file's header is `Image Index,Finding Label,Bbox [x,y,w,h],,,`,
which a CSV parser splits into 9 fields while every data row has 6; the Excel-resaved
variant has the 3-field header `Image Index,Finding Label,Bbox [x,y,w,h]`. Both are
accepted; columns are taken by position after checking the first two header names.

Data_Entry gives patient ids and lists images without boxes (negatives). Its header is
matched by name, tolerating the space-stripped variant (`PatientID`) and the trailing comma
of the 2017 Kaggle copy (12 header fields, 11 per row).

Per-image fields kept from Data_Entry, as written (stripped; an empty cell is left out):
'Patient Age' -> 'age', 'Patient Gender' (or 'Patient Sex') -> 'sex', 'View Position' ->
'view_position'. `OriginalImagePixelSpacing[x,y]` is the detector's spacing in mm for the
`OriginalImage[Width,Height]` frame, while the released PNGs are resized to 1024x1024: it is
kept as a `FrameSpacing`, and convert scales it to each file's own size ('pixel_spacing',
'row,col' = y * Height / file height, x * Width / file width).
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ...core.annotations import FrameSpacing
from ...core.boxes import Box, parse_coordinate
from ...core.errors import UserError
from ...core.problems import Problems
from .text import header_key, read_text

BOX_COLUMNS = ("x", "y", "w", "h")
_PATIENT_FROM_NAME = re.compile(r"^(\d+)_\d+\.\w+$")


@dataclass(frozen=True)
class BoxRow:
    """One parsed box row: `line` is the 1-based line in the CSV."""

    line: int
    image: str
    label: str
    box: Box


def read_bbox_list(path: str, problems: Problems) -> List[BoxRow]:
    """Parse `BBox_List_2017.csv` into box rows; bad rows go to `problems`, with their image
    (convert leaves such an image out whole).

    Raises:
      UserError: the header is not a BBox_List header (first fields must be
        'Image Index', 'Finding Label').
    """
    rows = list(csv.reader(io.StringIO(read_text(path), newline="")))
    if not rows:
        raise UserError(f"{path}: the file is empty; expected the BBox_List_2017.csv header")
    header = rows[0]
    if len(header) < 3 or header_key(header[0]) != "imageindex" or header_key(header[1]) != "findinglabel":
        raise UserError(
            f"{path}:1: header {','.join(header)!r} is not a BBox_List_2017.csv header; expected "
            "'Image Index,Finding Label,Bbox [x,y,w,h],,,'")
    out: List[BoxRow] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not f.strip() for f in row):
            continue  # blank line
        _parse_box_row(path, line, row, problems, out)
    return out


def _parse_box_row(path: str, line: int, row: List[str], problems: Problems, out: List[BoxRow]) -> None:
    """One data row of BBox_List: appends a BoxRow to `out` or reports a problem."""
    named = row[0].strip() or None if row else None
    if len(row) < 6:
        problems.add(path, line, "missing_column", ",".join(row),
                     f"expected 6 fields (Image Index, Finding Label, x, y, w, h), got {len(row)}", image=named)
        return
    if any(f.strip() for f in row[6:]):
        problems.add(path, line, "extra_column", ",".join(row[6:]),
                     f"expected 6 fields (Image Index, Finding Label, x, y, w, h), got {len(row)}", image=named)
        return
    image, label = row[0].strip(), row[1].strip()
    if not image:
        problems.add(path, line, "missing_value", row[0], "empty 'Image Index'")
        return
    values = []
    for name, text in zip(BOX_COLUMNS, row[2:6]):
        value = parse_coordinate(text)
        if value is None:
            problems.add(path, line, "bad_number", text,
                         f"column {name!r} of {image} must be a finite number of pixels", image=image)
            break
        values.append(value)
    else:
        x, y, w, h = values
        if w <= 0 or h <= 0:
            problems.add(path, line, "bad_box", f"w={w:g}, h={h:g}",
                         f"box of {image} must have positive width and height", image=image)
            return
        out.append(BoxRow(line, image, label, Box.from_xywh(x, y, w, h)))


@dataclass(frozen=True)
class DataEntry:
    """Data_Entry_2017 contents medtfod uses: image name -> patient id, in file order;
    image name -> its 'Finding Labels' text ('No Finding', 'Mass|Nodule', ...) where the file
    has that column; image name -> its fields ('age', 'sex', 'view_position'); image name ->
    the detector's pixel spacing and size (`FrameSpacing`, not yet scaled to the PNG)."""

    patients: Dict[str, str]
    findings: Dict[str, str] = field(default_factory=dict)
    meta: Dict[str, Dict[str, str]] = field(default_factory=dict)
    spacing: Dict[str, FrameSpacing] = field(default_factory=dict)

    def without_findings(self, image: str) -> bool:
        """True when Data_Entry says 'No Finding' (or, without the column, cannot say otherwise)."""
        return self.findings.get(image, NO_FINDING).strip().lower() == NO_FINDING.lower()


NO_FINDING = "No Finding"


def read_data_entry(path: str, problems: Problems) -> DataEntry:
    """Parse a `Data_Entry_2017*.csv` (any of the known header variants).

    Raises:
      UserError: the header has no 'Image Index' or 'Patient ID' column.
    """
    rows = list(csv.reader(io.StringIO(read_text(path), newline="")))
    if not rows:
        raise UserError(f"{path}: the file is empty; expected the Data_Entry_2017.csv header")
    header = [header_key(h) for h in rows[0]]
    try:
        image_col, patient_col = header.index("imageindex"), header.index("patientid")
    except ValueError:
        raise UserError(f"{path}:1: header {','.join(rows[0])!r} has no 'Image Index' and 'Patient ID' "
                        "columns; expected a Data_Entry_2017.csv header") from None
    finding_col = header.index("findinglabels") if "findinglabels" in header else None
    meta_cols = {key: header.index(name) for key, names in META_COLUMNS.items() for name in names if name in header}
    spacing_col = _spacing_columns(header)
    entry = DataEntry({})
    patients, findings = entry.patients, entry.findings
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) <= max(image_col, patient_col):
            problems.add(path, line, "missing_column", ",".join(row),
                         f"expected at least {max(image_col, patient_col) + 1} fields, got {len(row)}")
            continue
        image, patient = row[image_col].strip(), row[patient_col].strip()
        if not image or not patient:
            problems.add(path, line, "missing_value", ",".join(row), "empty 'Image Index' or 'Patient ID'")
            continue
        if image in patients:
            problems.add(path, line, "duplicate_row", image, "image listed twice in Data_Entry")
            continue
        patients[image] = patient
        if finding_col is not None and finding_col < len(row):
            findings[image] = row[finding_col]
        fields = {key: row[col].strip() for key, col in meta_cols.items() if col < len(row) and row[col].strip()}
        if fields:
            entry.meta[image] = fields
        if spacing_col is not None:
            _read_spacing(path, line, image, row, spacing_col, entry, problems)
    return entry


# our field -> Data_Entry header names (`header_key` form) that hold it
META_COLUMNS = {"age": ("patientage",), "sex": ("patientgender", "patientsex"), "view_position": ("viewposition",)}


def _spacing_columns(header: List[str]) -> Optional[tuple]:
    """(width, height, x spacing, y spacing) columns: 'OriginalImage[Width,Height]' and
    'OriginalImagePixelSpacing[x,y]' are split by the comma into two header fields each."""
    pairs = []
    for first, second in (("originalimagewidth", "height"), ("originalimagepixelspacingx", "y")):
        if first not in header or header.index(first) + 1 >= len(header) or header[header.index(first) + 1] != second:
            return None
        pairs += [header.index(first), header.index(first) + 1]
    return tuple(pairs)


def _read_spacing(path, line, image, row, cols, entry: DataEntry, problems: Problems) -> None:
    """The row's detector size and spacing into `entry.spacing`; a partly empty one is left
    out, a malformed one is reported (the image is kept, without a spacing)."""
    texts = [row[c].strip() if c < len(row) else "" for c in cols]
    if not all(texts):
        return
    try:
        width, height, x, y = int(texts[0]), int(texts[1]), float(texts[2]), float(texts[3])
        if min(width, height) <= 0 or not (0 < x < float("inf") and 0 < y < float("inf")):
            raise ValueError
    except ValueError:
        problems.add(path, line, "bad_number", ",".join(texts),
                     f"{image}: OriginalImage[Width,Height] and OriginalImagePixelSpacing[x,y] must be positive "
                     "whole pixels and mm; the image is kept without a pixel spacing")
        return
    entry.spacing[image] = FrameSpacing(row=y, col=x, width=width, height=height)


def patient_from_name(image: str) -> Optional[str]:
    """NIH names are `<patient>_<follow-up>.png`; returns the patient part (no leading zeros)."""
    m = _PATIENT_FROM_NAME.match(image)
    return str(int(m.group(1))) if m else None
