"""An export's operating point, `EXPORT/operating_point.json`: the score threshold `medtfod
calibrate` chose (`evaluation.calibrate`), with the sensitivity and FP/image it gave, the target,
split and counts. `detect` and `ExportedModel.predict` use it when no threshold is given.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Optional, Tuple

from ..core import atomic
from ..core.errors import UserError

OPERATING_POINT = "operating_point.json"


def write_operating_point(export_dir: str, point: dict, **context) -> Tuple[str, dict]:
    """Store `point` (and where it came from: target, split, counts) in export_dir; returns
    the file's path and the record written."""
    path = os.path.join(export_dir, OPERATING_POINT)
    record = {**point, **context, "created": datetime.datetime.now().isoformat(timespec="seconds")}
    atomic.write_file(path, json.dumps(record, indent=2, allow_nan=False) + "\n")
    return path, record


def read_operating_point(export_dir: str) -> Optional[dict]:
    """The stored operating point of an export folder, or None when it was never calibrated."""
    path = os.path.join(export_dir, OPERATING_POINT)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        score = float(record["min_score"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a valid operating point ({e}); run medtfod calibrate again or delete it") from None
    if not 0 <= score <= 1:
        raise UserError(f"{path}: min_score {score} is not in [0, 1]; run medtfod calibrate again")
    return record


def describe(record: dict) -> str:
    target = (f"sensitivity >= {record['target_sensitivity']:g}" if record.get("target_sensitivity") is not None
              else f"<= {record['target_fp_per_image']:g} FP/image")
    return (f"min score {record['min_score']:.4f}: sensitivity {record['sensitivity']:.3f} at "
            f"{record['avg_fp']:.2f} FP/image on {record.get('images', '?')} {record.get('split', '')} images "
            f"(target {target}, IoU >= {record.get('iou', 0.1):g}"
            + (f", on {tiling_text(record['tiling'])})" if record.get("tiling") else ")"))


def tiling_text(tiling: Optional[dict]) -> str:
    if not tiling:
        return "whole images"
    return (f"{tiling['tile']} px tiles (overlap {tiling['overlap']:g}, {tiling['merge']} merge"
            + (", plus the whole image)" if tiling.get("full") else ")"))


def tiling_flags(tiling: Optional[dict]) -> str:
    if not tiling:
        return "without --tile"
    return (f"--tile {tiling['tile']} --tile-overlap {tiling['overlap']:g} --tile-merge {tiling['merge']}"
            + (" --tile-full" if tiling.get("full") else ""))


def tiling_mismatch(record: dict, tiling: Optional[dict]) -> Optional[str]:
    """Why the operating point `record` does not hold for a run tiled as `tiling` (None: it does).
    Points calibrated before calibrate could tile have no 'tiling': they are whole images'."""
    calibrated = record.get("tiling") or None
    if calibrated == (tiling or None):
        return None
    return (f"the calibrated operating point was chosen on {tiling_text(calibrated)} and this run detects on "
            f"{tiling_text(tiling)}, whose scores differ: run medtfod calibrate {tiling_flags(tiling)} for it")
