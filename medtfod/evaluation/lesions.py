"""Per-lesion localization at the operating threshold: how well each ground-truth box is covered.

For every GT box: the best IoU, and separately the best IoBB (intersection / detected-box
area, Wang et al. 2017), of any detection of the same class on the same image with score >=
the threshold; 0 when there is none. Not one-to-one (one detection may be the best for two
boxes): this is the localization quality a reader sees, next to the one-to-one hit counts of
sensitivity and FROC. Write-ups that regress one box per image report its mean ("mean IoU").
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

import numpy as np

from ..core.boxes import Box, iobb, iou
from ..data.readers.detections import Detection, GroundTruth
from .matching import by_image

HISTOGRAM_EDGES = tuple(k / 10 for k in range(11))  # IoU 0, 0.1, ..., 1 (the last bin includes 1)


class Lesion(NamedTuple):
    """One GT box and its best same-class detection at the threshold."""

    image: str
    index: int        # its position in gt[image]
    label: str
    box: Box
    best_iou: float
    best_iobb: float


def lesion_overlaps(gt: GroundTruth, dets: Sequence[Detection], min_score: float) -> List[Lesion]:
    """Every GT box of `gt` (images in sorted order, boxes in their order) with the best IoU and
    IoBB of a same-class detection on its image scoring >= `min_score` (0.0 when none)."""
    index = by_image(gt, dets)
    lesions = []
    for image in sorted(gt):
        kept = [dets[i] for i in index.get(image, []) if dets[i].score >= min_score]
        for k, (label, box) in enumerate(gt[image]):
            own = [d.box for d in kept if d.label == label]
            lesions.append(Lesion(image, k, label, box, max((iou(box, d) for d in own), default=0.0),
                                  max((iobb(box, d) for d in own), default=0.0)))
    return lesions


def lesion_summary(lesions: Sequence[Lesion]) -> Dict[str, object]:
    """Mean and median best IoU, mean best IoBB, the share of lesions with any overlapping
    detection, a histogram of best IoU over `HISTOGRAM_EDGES`, and the same per class.
    Means are None without lesions."""
    values = np.array([lesion.best_iou for lesion in lesions], float)
    counts, _ = np.histogram(values, bins=HISTOGRAM_EDGES)
    result: Dict[str, object] = {
        "lesions": len(values),
        "mean_iou": float(values.mean()) if len(values) else None,
        "median_iou": float(np.median(values)) if len(values) else None,
        "mean_iobb": float(np.mean([lesion.best_iobb for lesion in lesions])) if len(values) else None,
        "overlapped": float((values > 0).mean()) if len(values) else None,
        "histogram": {"edges": list(HISTOGRAM_EDGES), "counts": [int(c) for c in counts]},
    }
    per_class = {}
    for label in sorted({lesion.label for lesion in lesions}):
        own = [lesion.best_iou for lesion in lesions if lesion.label == label]
        per_class[label] = {"lesions": len(own), "mean_iou": float(np.mean(own))}
    result["per_class"] = per_class
    return result
