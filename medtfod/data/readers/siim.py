"""SIIM-ACR pneumothorax `train-rle.csv`: one run-length mask per row (`medtfod convert siim`).

Table: header `ImageId, EncodedPixels` (note the space; a UTF-8 BOM may precede it; the
Kaggle sample copy's header is `fname,mask`, and a file without a header is accepted too),
so columns are taken by position. A value of `-1` means no pneumothorax (an image without
findings); otherwise the value (leading space allowed) is the mask. Several rows for one
image are several objects.

Source convention (settled here, converted once, in `decode_rle`): the integers are
(start, length) pairs and the starts are RELATIVE: the first is a 0-based pixel offset,
each later one counts the background pixels after the previous run's end
(`pos += start; mask[pos:pos + length] = 1; pos += length`). Pixels are numbered in
COLUMN-MAJOR order on the `width` x `height` (1024 x 1024) image: flat index =
x * height + y (the Kaggle `rle2mask` reshapes to (width, height) and callers transpose).
The Kaggle `mask2rle` never emits a run that reaches the last pixel; such masks simply lack
that run. Each mask becomes `Mask.from_bitmap` (COCO RLE), its box the mask's tight bounds.

Images: SIIM ships DICOM (`<ImageId>.dcm`); most users convert them to PNG, so the image
name is ImageId + `extension` ('.png' by default; '.dcm' for DICOM input) unless ImageId
already ends with an image extension. ImageIds are DICOM UIDs full of dots, so a 'last dot'
rule cannot tell whether one has an extension. No patient ids: the converter's default
(the name's stem) applies. With `--meta COL[,COL...]` the table may have more columns after
the first two, named in a header; those named are kept as per-image fields (`readers.meta`).
"""
from __future__ import annotations

import csv
import io
from typing import List, Optional, Tuple

import numpy as np

from ...core.annotations import Table, TableRow
from ...core.boxes import Box
from ...core.errors import UserError
from ...core.masks import Mask
from ...core.problems import Problems
from .meta import MetaCollector, check_columns
from .text import read_text

IMAGE_EXTENSIONS = (".png", ".dcm", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class RLEError(ValueError):
    """A run-length string that cannot be decoded; `value` is the offending token or run."""

    def __init__(self, kind: str, value: str, message: str):
        super().__init__(message)
        self.kind, self.value = kind, value


def decode_rle(text: str, width: int = 1024, height: int = 1024) -> np.ndarray:
    """SIIM relative, column-major RLE -> `height` x `width` uint8 bitmap (1 = pneumothorax).

    Raises:
      RLEError: a token that is not a non-negative integer ('bad_number'), an odd number of
        integers ('bad_rle'), or a run past the last pixel ('run_outside_image').
    """
    tokens = text.split()
    total = width * height
    for token in tokens:
        if not (token.isascii() and token.isdigit()):
            raise RLEError("bad_number", token, f"{token!r} is not a non-negative integer; "
                           "expected space-separated (start, length) integer pairs")
    if len(tokens) % 2:
        raise RLEError("bad_rle", f"{len(tokens)} integers",
                       f"odd number of integers ({len(tokens)}); expected (start, length) pairs")
    values = [min(int(t), total + 1) for t in tokens]  # capped: anything larger is past the image anyway
    pairs = np.array(values, dtype=np.int64).reshape(-1, 2)
    starts, lengths = pairs[:, 0], pairs[:, 1]
    # Relative starts -> absolute: each start adds to the end of the previous run.
    begin = np.cumsum(starts) + np.concatenate(([0], np.cumsum(lengths)[:-1]))
    end = begin + lengths
    if len(end) and end.max() > total:
        i = int(np.argmax(end > total))
        raise RLEError("run_outside_image", f"{starts[i]} {lengths[i]}",
                       f"run {i + 1} (start {starts[i]}, length {lengths[i]}) ends at pixel {end[i]}, "
                       f"past the {width}x{height} image ({total} pixels); "
                       f"expected runs on a {width}x{height} mask")
    edges = np.zeros(total + 1, dtype=np.int32)
    np.add.at(edges, begin, 1)
    np.add.at(edges, end, -1)
    flat = (np.cumsum(edges[:total]) > 0).astype(np.uint8)
    # Column-major: flat index = x * height + y, so rows of the reshape are columns of the image.
    return np.ascontiguousarray(flat.reshape(width, height).T)


def bitmap_bounds(bitmap: np.ndarray) -> Optional[Box]:
    """The tight pixel box around nonzero pixels (the same box as `Mask.bounds`), or None."""
    cols, rows = np.flatnonzero(bitmap.any(axis=0)), np.flatnonzero(bitmap.any(axis=1))
    if not len(cols):
        return None
    return Box(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def image_name(image_id: str, extension: str = ".png") -> str:
    """ImageId -> image file name: `extension` appended unless it already ends with one."""
    return image_id if image_id.lower().endswith(IMAGE_EXTENSIONS) else image_id + extension


def _is_rle(value: str) -> bool:
    value = value.strip()
    return value == "-1" or (bool(value) and all(t.isdigit() for t in value.split()))


def _rows(rle_csv: str, extra: bool = False) -> Tuple[List[Tuple[int, List[str]]], Optional[List[str]]]:
    """(line, fields) of the data rows, and the header (None without one). With `extra`,
    the header must be there and may name more columns after the first two."""
    reader = csv.reader(io.StringIO(read_text(rle_csv), newline=""))
    out = [(reader.line_num, row) for row in reader]
    if not out:
        raise UserError(f"{rle_csv}: the file is empty; expected the header 'ImageId, EncodedPixels'")
    first = out[0][1]
    has_header = not ((len(first) == 2 or extra and len(first) > 2) and _is_rle(first[1]))
    if extra and not has_header:
        raise UserError(f"{rle_csv}:1: --meta needs a header naming the columns, e.g. 'ImageId, EncodedPixels, "
                        f"Age'; the first line is data: {','.join(first)[:80]!r}")
    if has_header and len(first) != 2 and not (extra and len(first) > 2):
        raise UserError(f"{rle_csv}:1: header {','.join(first)!r} has {len(first)} columns; expected the "
                        "2 columns 'ImageId, EncodedPixels' (or 'fname,mask')")
    return (out[1:] if has_header else out), ([h.strip() for h in first] if has_header else None)


def read_siim(rle_csv: str, problems: Problems, label: str = "Pneumothorax", width: int = 1024,
              height: int = 1024, extension: str = ".png", meta: Optional[List[str]] = None):
    """Read a SIIM-ACR `train-rle.csv` into a `Table` with one masked object per RLE row.

    Args:
      rle_csv: the `ImageId, EncodedPixels` table.
      problems: where bad rows are reported (file, line, value); bad rows are skipped, and
        an image with a bad row is dropped whole (its other masks are not kept).
      label: the class of every mask.
      width, height: the image size the RLE refers to (SIIM: 1024 x 1024).
      extension: appended to ImageId to name the image file ('.png' or '.dcm').
      meta: columns after the first two kept as per-image fields (`Table.meta`, lower case).

    Returns:
      A `medtfod.core.annotations.Table` (source 'siim'): rows with `mask` (COCO RLE of the decoded
      bitmap, see `decode_rle`) and `box` (its tight bounds); `-1` images as negatives.

    Raises:
      UserError: the file is missing, empty, not UTF-8, or its header has not 2 columns.
    """
    data, header = _rows(rle_csv, extra=bool(meta))
    size = len(header) if meta else 2
    check_columns(rle_csv, meta or [], (header or [])[2:])
    fields = MetaCollector(rle_csv, meta or [])
    rows: "dict[str, list]" = {}
    negatives: "dict[str, int]" = {}
    for line, row in data:
        if not row or all(not f.strip() for f in row):
            continue  # blank line
        if len(row) != size:
            problems.add(rle_csv, line, "missing_column" if len(row) < size else "extra_column", ",".join(row),
                         f"expected {size} fields (ImageId, EncodedPixels{', ...' * (size > 2)}), got {len(row)}")
            continue
        image_id, value = row[0].strip(), row[1].strip()
        if not image_id or not value:
            problems.add(rle_csv, line, "missing_value", ",".join(row),
                         "empty ImageId or EncodedPixels; expected '-1' or run-length pairs")
            continue
        image = image_name(image_id, extension)
        fields.add(image, line, {c: row[header.index(c)] for c in fields.columns})
        if value == "-1":
            negatives.setdefault(image, line)
            continue
        try:
            bitmap = decode_rle(value, width, height)
        except RLEError as e:
            problems.add(rle_csv, line, e.kind, e.value, f"EncodedPixels of {image_id}: {e}; image dropped",
                         image=image)
            continue
        box = bitmap_bounds(bitmap)
        if box is None:
            problems.add(rle_csv, line, "empty_mask", value[:80], f"the mask of {image_id} has no pixels; "
                         "expected '-1' for an image without findings; image dropped", image=image)
            continue
        rows.setdefault(image, []).append(TableRow(image, label, box, rle_csv, line, Mask.from_bitmap(bitmap)))
    table = Table("siim", [], inputs={"rle_csv": rle_csv}, meta=fields.meta)
    for image_rows in rows.values():
        table.rows.extend(image_rows)
    bad = problems.bad_images()
    for image, line in negatives.items():
        if image in rows or image in bad:
            problems.add(rle_csv, line, "conflicting_rows", image,
                         f"{image} is listed as '-1' (no finding) and also has masks; the '-1' row is ignored")
        else:
            table.negatives.append(image)
    return table
