"""What a reviewer looks at, at one IoU and score threshold: the detection confusion matrix and
each image's outcome (missed lesions, false positives, true positives), ordered worst first.

Matching (one rule for both): per image, detections at or above the threshold in descending
score order each take the still-unmatched ground-truth box with IoU >= `iou`, preferring one of
the detection's own class (highest IoU), else the highest-IoU box of another class. Pure
Python on `GroundTruth` and `Detection`s; boxes are pixel `Box`es.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..core.annotations import Detection
from ..core.boxes import iou as box_iou
from ..data.readers.detections import GroundTruth

BACKGROUND = "background"


@dataclass
class ImageReview:
    """One image's outcome at the threshold.

    Attributes:
      missed: ground-truth (label, Box) pairs no detection matched.
      false_positives: detections that matched nothing, or matched a box of another class.
      true_positives: detections that matched a box of their class.
      confused: (true label, detection) pairs: a box found with the wrong label.
    """

    image: str
    ground_truth: List[Tuple[str, object]]
    detections: List[Detection]
    missed: List[Tuple[str, object]] = field(default_factory=list)
    false_positives: List[Detection] = field(default_factory=list)
    true_positives: List[Detection] = field(default_factory=list)
    confused: List[Tuple[str, Detection]] = field(default_factory=list)

    @property
    def outcomes(self) -> List[str]:
        found = [name for name, items in (("missed", self.missed), ("fp", self.false_positives + [d for _, d in self.confused]),
                                          ("tp", self.true_positives)) if items]
        return found or ["negative"]


def review_image(image: str, truth, detections: Sequence[Detection], iou: float, min_score: float) -> ImageReview:
    kept = sorted((d for d in detections if d.score >= min_score), key=lambda d: -d.score)
    result = ImageReview(image, list(truth), kept)
    free = list(range(len(truth)))
    for det in kept:
        candidates = [(box_iou(truth[j][1], det.box), j) for j in free]
        candidates = [(v, j) for v, j in candidates if v >= iou]
        own = [(v, j) for v, j in candidates if truth[j][0] == det.label]
        pick = max(own or candidates, default=None)
        if pick is None:
            result.false_positives.append(det)
            continue
        free.remove(pick[1])
        label = truth[pick[1]][0]
        if label == det.label:
            result.true_positives.append(det)
        else:
            result.confused.append((label, det))
    result.missed = [truth[j] for j in free]
    return result


def review(gt: GroundTruth, dets: Sequence[Detection], iou: float, min_score: float) -> Dict[str, ImageReview]:
    """Every image of `gt` reviewed (detections on images outside `gt` are ignored)."""
    by_image: Dict[str, List[Detection]] = {image: [] for image in gt}
    for d in dets:
        if d.image in by_image:
            by_image[d.image].append(d)
    return {image: review_image(image, gt[image], by_image[image], iou, min_score) for image in sorted(gt)}


def confusion_matrix(reviews: Dict[str, ImageReview], classes: Sequence[str]) -> Dict[str, Dict[str, int]]:
    """matrix[true][predicted] over `classes` plus 'background' (Ultralytics' convention): a
    missed box counts true class -> background, a false positive background -> class, a wrong
    label true class -> detected class."""
    names = list(classes) + [BACKGROUND]
    matrix = {t: {p: 0 for p in names} for t in names}
    for r in reviews.values():
        for det in r.true_positives:
            matrix[det.label][det.label] += 1
        for label, det in r.confused:
            matrix[label][det.label] += 1
        for det in r.false_positives:
            matrix[BACKGROUND][det.label] += 1
        for label, _ in r.missed:
            matrix[label][BACKGROUND] += 1
    return matrix


def gallery_order(reviews: Dict[str, ImageReview], limit: Optional[int] = None) -> Tuple[List[ImageReview], int]:
    """Worst first: images with missed lesions (most missed first), then images with false
    positives (highest-scoring false positive first), then the lowest-scoring true positives,
    then the rest; at most `limit`. Returns (the kept reviews, how many were left out)."""
    def key(r: ImageReview):
        wrong = r.false_positives + [d for _, d in r.confused]
        if r.missed:
            return (0, -len(r.missed), r.image)
        if wrong:
            return (1, -max(d.score for d in wrong), r.image)
        if r.true_positives:
            return (2, min(d.score for d in r.true_positives), r.image)
        return (3, 0.0, r.image)
    ordered = sorted(reviews.values(), key=key)
    if limit is None or len(ordered) <= limit:
        return ordered, 0
    return ordered[:limit], len(ordered) - limit
