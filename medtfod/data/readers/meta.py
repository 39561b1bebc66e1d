"""`--meta COL[,COL...]`: extra columns of a table (csv, siim) or keys of COCO's image entries,
kept as per-image fields in the manifest (`Table.meta`).

Each field is named by its column in lower case ('Patient Age' -> 'patient age'); its value is
the cell as written, stripped (a JSON number or boolean as JSON writes it). An empty cell or a
JSON null is left out, never guessed. Several rows of one image must agree on each field.
"""
from __future__ import annotations

import json
from typing import Dict, Iterable, List, Optional, Tuple

from ...core.errors import UserError, did_you_mean


def parse_meta(spec: Optional[str]) -> List[str]:
    """'Age,Sex' -> ['Age', 'Sex'] (the columns as given; [] for None or '')."""
    if not spec:
        return []
    columns = [c.strip() for c in spec.split(",")]
    if not all(columns):
        raise UserError(f"--meta {spec!r}: expected column names separated by commas, e.g. --meta age,sex")
    return columns


def check_columns(path: str, wanted: List[str], available: Iterable[str], what: str = "column") -> None:
    """A `UserError` for the first `--meta` column not among `available`, naming the file,
    the column, those available and the nearest one."""
    available = list(dict.fromkeys(available))
    for column in wanted:
        if column not in available:
            raise UserError(f"{path}: --meta {what} {column!r} is not in the file; its {what}s: "
                            f"{', '.join(map(repr, available)) or 'none'}{did_you_mean(column, available)}")


def field_value(value) -> str:
    """A cell as a field value: a string stripped, a JSON number or boolean as JSON writes
    it, None as '' (absent). Lists and objects are not field values (ValueError)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise ValueError(f"{type(value).__name__} {json.dumps(value)[:60]}")


class MetaCollector:
    """Per-image fields from the rows of one file, checked for agreement.

    Args:
      path: the file, for messages.
      columns: the `--meta` columns, as named in the file.
    """

    def __init__(self, path: str, columns: List[str]):
        self.path = path
        self.columns = columns
        self.meta: Dict[str, Dict[str, str]] = {}
        self._where: Dict[Tuple[str, str], Optional[int]] = {}

    def add(self, image: str, line: Optional[int], cells: Dict[str, object]) -> None:
        """The `--meta` cells of one row of `image` (column -> value).

        Raises:
          UserError: a cell disagrees with an earlier row of the same image (file, both
            lines, both values), or is a JSON list or object.
        """
        at = f"{self.path}:{line}" if line is not None else self.path
        for column in self.columns:
            try:
                value = field_value(cells.get(column))
            except ValueError as e:
                raise UserError(f"{at}: --meta {column!r} of {image} is {e}; expected a string or a number") from None
            if not value:
                continue
            key = column.lower()
            fields = self.meta.setdefault(image, {})
            if key in fields and fields[key] != value:
                first = self._where[(image, key)]
                earlier = f"line {first}" if first is not None else "an earlier entry"
                raise UserError(f"{at}: {image} has {column!r} {value!r} here but {fields[key]!r} on {earlier}; "
                                "the rows of one image must agree on its --meta fields")
            fields[key] = value
            self._where.setdefault((image, key), line)
