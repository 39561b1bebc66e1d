"""Operating point: the score threshold that reaches a target sensitivity, or stays within a
false-positive budget, on a labelled split (normally val), stored beside the export as
`operating_point.json` for `medtfod detect` to use by default.

The threshold is read off the FROC curve (`metrics.froc_curve`: lesion-level sensitivity
over all classes, a hit being a same-class detection at IoU >= `iou`, and false positives per
image counting negatives too), so it means what the FROC table in `medtfod metrics` means.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Optional, Sequence, Tuple

from ..core import atomic
from ..core.annotations import Detection
from ..core.errors import UserError
from .metrics import froc_curve
from ..data.readers.detections import GroundTruth

OPERATING_POINT = "operating_point.json"


def choose_threshold(gt: GroundTruth, dets: Sequence[Detection], sensitivity: Optional[float] = None,
                     fp_per_image: Optional[float] = None, iou: float = 0.1) -> dict:
    """The operating point for exactly one target.

    sensitivity: the highest threshold whose sensitivity is at least this (fewest false
      positives that reach it).
    fp_per_image: the lowest threshold whose average false positives per image is at most this
      (the most sensitivity the budget allows).

    Returns {'min_score', 'sensitivity', 'avg_fp'} at that threshold (detections with score >=
    min_score are kept). Raises UserError when the target cannot be reached, with the best the
    detections allow.
    """
    if (sensitivity is None) == (fp_per_image is None):
        raise UserError("give exactly one target: --sensitivity or --fp-per-image")
    if sensitivity is not None and not 0 < sensitivity <= 1:
        raise UserError(f"--sensitivity {sensitivity} must be in (0, 1]")
    if fp_per_image is not None and fp_per_image < 0:
        raise UserError(f"--fp-per-image {fp_per_image} must be >= 0")
    curve = froc_curve(gt, dets, iou)
    if curve["sensitivity"][0] is None:
        raise UserError("the split has no ground-truth boxes: nothing to calibrate sensitivity against")
    points = list(zip(curve["threshold"], curve["sensitivity"], curve["avg_fp"]))[1:]  # [0] keeps nothing
    if not points:
        raise UserError("the model made no detections on the split: nothing to choose a threshold from")
    if sensitivity is not None:
        reached = [p for p in points if p[1] >= sensitivity - 1e-12]
        if not reached:
            raise UserError(f"sensitivity {sensitivity:g} is out of reach: with every detection kept the model finds "
                            f"{points[-1][1]:.3f} of the boxes (at {points[-1][2]:.2f} FP/image, IoU >= {iou:g})")
        threshold, sens, fp = reached[0]
    else:
        within = [p for p in points if p[2] <= fp_per_image + 1e-12]
        if not within:
            threshold, sens, fp = points[0]
            raise UserError(f"{fp_per_image:g} FP/image is out of reach: even the top-scoring detection alone "
                            f"(score {threshold:.4f}) gives {fp:.2f} FP/image")
        threshold, sens, fp = within[-1]
    return {"min_score": threshold, "sensitivity": sens, "avg_fp": fp}


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
            f"(target {target}, IoU >= {record.get('iou', 0.1):g})")
