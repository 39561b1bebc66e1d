"""Reading annotation tables: their text, and their header names compared loosely.

Shared by the table readers (NIH, SIIM, thyroid CSV, generic CSV, COCO JSON), so that each
reports an unreadable or non-UTF-8 file the same way.
"""
from __future__ import annotations

import re

from ...core.errors import UserError


def read_text(path: str) -> str:
    """A table's text, UTF-8 (BOM allowed); other encodings are a clear error."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; expected a table file (CSV)") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
                        "save the table as UTF-8 CSV") from None


def header_key(name: str) -> str:
    """A header name compared loosely: lower case, letters and digits only ('Patient ID' -> 'patientid')."""
    return re.sub(r"[^a-z0-9]", "", name.lower())
