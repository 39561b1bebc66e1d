"""Matching detections to ground truth: the step every detection metric starts from.

Shared by `metrics` (AP, FROC, IoBB, image level) and `bootstrap` (their intervals), so that
neither imports the other's internals. Inputs as in `metrics`: `gt` maps image name -> list
of `(label, Box)`, `dets` is a list of `Detection(image, label, score, Box)`; boxes are pixel
`Box`es (float xmin, ymin, xmax, ymax, top-left origin).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence

from ..core.boxes import Box, iou
from ..core.errors import UserError
from ..data.readers.detections import Detection, GroundTruth

FROC_RATES = (0.125, 0.25, 0.5, 1, 2, 4, 8)


def threshold_key(value: float) -> str:
    """A threshold or rate as a JSON key of the results, written with `'%g'` (0.1 -> "0.1")."""
    return f"{value:g}"


def by_image(gt: GroundTruth, dets: Sequence[Detection]) -> Dict[str, List[int]]:
    """Indices of `dets` per image; refuses an empty `gt` and detections on images not in `gt`."""
    if not gt:
        raise UserError("no ground-truth images to evaluate against")
    index: Dict[str, List[int]] = defaultdict(list)
    for i, det in enumerate(dets):
        index[det.image].append(i)
    unknown = sorted(set(index) - set(gt))
    if unknown:
        raise UserError(f"{sum(len(index[u]) for u in unknown)} detections are on {len(unknown)} images that have no "
                        f"ground truth (first: {unknown[0]!r}); evaluate on the split the detections were run on")
    return index


def match_detections(gt: GroundTruth, dets: Sequence[Detection], threshold: float,
                     overlap: Callable[[Box, Box], float] = iou) -> List[Optional[int]]:
    """Greedy one-to-one matching of detections to ground-truth boxes.

    Per image and class, detections are taken by score, highest first (equal scores in input
    order); each one matches the still-unmatched GT box of the same class with the highest
    `overlap(gt_box, det_box)` that is >= `threshold` (equal overlaps: the GT box listed first
    in `gt[image]`). A detection that matches nothing is a false positive, including a second
    detection on an already-matched box. As in COCOeval, a lower-scored detection never takes
    a box from a higher-scored one, so keeping only detections above any score cut-off gives
    the same matches as matching those alone.

    Returns:
      For each detection, in input order, the index of its GT box in `gt[image]`, or None.
    """
    index = by_image(gt, dets)
    matched: List[Optional[int]] = [None] * len(dets)
    for image, det_ids in index.items():
        taken = set()
        for i in sorted(det_ids, key=lambda i: (-dets[i].score, i)):
            best, best_j = threshold, None
            for j, (label, box) in enumerate(gt[image]):
                if label != dets[i].label or j in taken:
                    continue
                value = overlap(box, dets[i].box)
                if value >= threshold and (best_j is None or value > best):
                    best, best_j = value, j
            if best_j is not None:
                taken.add(best_j)
                matched[i] = best_j
    return matched
