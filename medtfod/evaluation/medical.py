"""The medical metrics of an evaluation pass: AP@0.1/0.5, the FROC mean and the image-level AUC.

`medical_metrics` is what `medtfod train --eval-every` and `medtfod eval` hand to the OD API's
evaluation (`medtfod.odapi.collect`): the ground truth and detections of the eval split go in,
the `Medical/*` entries of the checkpoint's metric set come out, computed with
`medtfod.evaluation.metrics`, the same code as `medtfod metrics`.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

from ..core.annotations import Detection
from ..data.readers.detections import GroundTruth
from . import metrics

PREFIX = "Medical/"


def medical_metrics(gt: GroundTruth, dets: Sequence[Detection], iou_froc: float = 0.1) -> Dict[str, float]:
    """{'Medical/ap50', 'Medical/ap10', 'Medical/froc_mean', 'Medical/auc': value} of `dets`
    against `gt` (NaN where a metric is undefined, e.g. AUC without negatives); {} without images.

    Args:
      gt: image key -> [(label, Box)], [] for an image without findings.
      dets: the detections of those images, any score.
      iou_froc: the IoU a FROC hit needs.
    """
    if not gt:
        return {}
    values = {
        "ap50": metrics.average_precision(gt, dets, 0.5)["mean"],
        "ap10": metrics.average_precision(gt, dets, 0.1)["mean"],
        "froc_mean": metrics.froc(gt, dets, iou_froc)["mean"],
        "auc": metrics.image_level(gt, dets)["auc"],
    }
    return {PREFIX + k: (math.nan if v is None else float(v)) for k, v in values.items()}
