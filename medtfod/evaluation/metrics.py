"""Detection metrics for medical images: AP, FROC, IoBB localization, image-level ROC, COCO.

Inputs, for every function here:
  gt: dict image name -> list of `(label, Box)`; an image with an empty list is a negative
    (it still counts in FP/image and as a negative for image-level metrics).
  dets: list of `(image, label, score, Box)`; every `image` must be a key of `gt`.
Boxes are `medtfod.core.boxes.Box` (float pixel xmin, ymin, xmax, ymax, top-left origin).
Undefined values (a class without ground truth, AUC without negatives) are None, never NaN,
so results serialize to strict JSON. Thresholds are JSON keys written with `'%g'` ("0.1").
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.boxes import iobb, iou  # noqa: F401 (metrics.iou: the overlap functions live beside Box)
from ..core.errors import UserError, did_you_mean
from ..data.readers.detections import Detection, GroundTruth, read_detections_csv, read_ground_truth  # noqa: F401
from .matching import FROC_RATES, by_image, match_detections, threshold_key  # noqa: F401

AP_IOUS = (0.1, 0.25, 0.5)
IOBB_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _classes(gt: GroundTruth) -> List[str]:
    return sorted({label for objects in gt.values() for label, _ in objects})


def pr_curve(gt: GroundTruth, dets: Sequence[Detection], label: str, iou_threshold: float = 0.5,
             matched: Optional[List[Optional[int]]] = None) -> Tuple[List[float], List[float]]:
    """(recall, precision) after each detection of `label`, ranked by score (ties in input order)."""
    matched = match_detections(gt, dets, iou_threshold) if matched is None else matched
    n_gt = sum(1 for objects in gt.values() for name, _ in objects if name == label)
    recall, precision, tp = [], [], 0
    order = sorted((i for i, det in enumerate(dets) if det.label == label), key=lambda i: (-dets[i].score, i))
    for rank, i in enumerate(order, start=1):
        tp += matched[i] is not None
        recall.append(tp / n_gt if n_gt else 0.0)
        precision.append(tp / rank)
    return recall, precision


def _area_under_envelope(recall: List[float], precision: List[float]) -> float:
    rec, prec = [0.0] + recall + [1.0], [0.0] + precision + [0.0]
    for k in range(len(prec) - 2, -1, -1):
        prec[k] = max(prec[k], prec[k + 1])
    return sum((rec[k + 1] - rec[k]) * prec[k + 1] for k in range(len(rec) - 1))


def average_precision(gt: GroundTruth, dets: Sequence[Detection], iou_threshold: float = 0.5,
                      matched: Optional[List[Optional[int]]] = None) -> Dict[str, Optional[float]]:
    """Per-class all-point interpolated average precision (PASCAL VOC 2010+ definition).

    Detections are matched with `match_detections` at IoU >= `iou_threshold` and ranked by
    score over all images (equal scores in input order). Precision is replaced by its
    monotone envelope p(r) = max precision at any recall >= r, and AP is the exact area under
    that step curve from recall 0 to 1 (no 11- or 101-point sampling, unlike COCO).

    Returns:
      {class: AP} for every class with at least one GT box (a class without detections gets
      0.0; a class that only has detections is left out) and "mean": the unweighted mean over
      those classes (None when no class has GT boxes).
    """
    matched = match_detections(gt, dets, iou_threshold) if matched is None else matched
    result: Dict[str, Optional[float]] = {
        label: _area_under_envelope(*pr_curve(gt, dets, label, iou_threshold, matched)) for label in _classes(gt)}
    result["mean"] = float(np.mean(list(result.values()))) if result else None
    return result


def froc_curve(gt: GroundTruth, dets: Sequence[Detection], iou_threshold: float = 0.1,
               matched: Optional[List[Optional[int]]] = None) -> Dict[str, list]:
    """The FROC curve: one point per distinct detection score, from the highest down.

    A point keeps every detection with score >= its threshold (all classes; equal scores go
    in together). Hits are `match_detections` matches at IoU >= `iou_threshold` (same class,
    one detection per GT box; duplicates are false positives). sensitivity = matched GT boxes /
    all GT boxes; avg_fp = unmatched detections / number of images in `gt`, negatives included.
    The first point is the origin (threshold None: nothing kept).
    """
    matched = match_detections(gt, dets, iou_threshold) if matched is None else matched
    n_gt, n_images = sum(len(v) for v in gt.values()), len(gt)
    curve: Dict[str, list] = {"threshold": [None], "avg_fp": [0.0], "sensitivity": [0.0 if n_gt else None]}
    order = sorted(range(len(dets)), key=lambda i: -dets[i].score)
    tp = fp = 0
    for k, i in enumerate(order):
        tp, fp = tp + (matched[i] is not None), fp + (matched[i] is None)
        if k + 1 == len(order) or dets[order[k + 1]].score != dets[i].score:
            curve["threshold"].append(float(dets[i].score))
            curve["avg_fp"].append(fp / n_images)
            curve["sensitivity"].append(tp / n_gt if n_gt else None)
    return curve


def froc(gt: GroundTruth, dets: Sequence[Detection], iou_threshold: float = 0.1,
         fps: Sequence[float] = FROC_RATES, matched: Optional[List[Optional[int]]] = None) -> Dict[str, Optional[float]]:
    """Sensitivity at fixed average false positives per image, and their mean.

    For each rate r in `fps`: the highest sensitivity of any `froc_curve` point with
    avg_fp <= r (no interpolation between points; when the curve ends below r FP/image, its
    last point, i.e. all detections kept). "mean" averages the rates: with the default rates
    (1/8 ... 8) it is the LUNA16 competition performance metric (CPM). All None without GT.
    """
    curve = froc_curve(gt, dets, iou_threshold, matched)
    if curve["sensitivity"][0] is None:
        return {**{threshold_key(r): None for r in fps}, "mean": None}
    points = list(zip(curve["avg_fp"], curve["sensitivity"]))
    result = {threshold_key(r): max(s for f, s in points if f <= r) for r in fps}
    return {**result, "mean": float(np.mean(list(result.values())))}


def iobb_localization(gt: GroundTruth, dets: Sequence[Detection],
                      thresholds: Sequence[float] = IOBB_THRESHOLDS) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Localization accuracy and average false positives at IoBB thresholds (Wang et al. 2017, Table 4).

    Per class c with GT boxes, counted only on the images that have a GT box of c (in
    ChestX-ray8 the disease label is known and only those images are localized):
      accuracy = GT boxes of c hit by at least one detection of c on the same image with
        IoBB(gt, det) = intersection / detected-box area >= T, over all GT boxes of c;
      avg_fp = detections of c on those images that hit no GT box of c at IoBB >= T, divided
        by the number of those images.
    Not one-to-one: one detection may hit several GT boxes. All detections given are used, so
    apply the score cut-off first. False positives on other images are left to FROC and the
    image-level metrics.
    """
    index = by_image(gt, dets)
    result: Dict[str, Dict[str, Dict[str, float]]] = {}
    for label in _classes(gt):
        images = [image for image, objects in gt.items() if any(name == label for name, _ in objects)]
        result[label] = {}
        for t in thresholds:
            hit = total = fp = 0
            for image in images:
                boxes = [box for name, box in gt[image] if name == label]
                found = [dets[i].box for i in index.get(image, []) if dets[i].label == label]
                hit += sum(any(iobb(g, d) >= t for d in found) for g in boxes)
                fp += sum(not any(iobb(g, d) >= t for g in boxes) for d in found)
                total += len(boxes)
            result[label][threshold_key(t)] = {"accuracy": hit / total, "avg_fp": fp / len(images)}
    return result


def image_level(gt: GroundTruth, dets: Sequence[Detection], classes: Optional[Sequence[str]] = None,
                threshold: Optional[float] = None) -> Dict[str, Optional[float]]:
    """Image-level ROC AUC, sensitivity and specificity (is anything there?).

    Image score = highest score of its detections of `classes` (all classes when None), 0.0
    without any. An image is positive when it has a GT box of `classes`. AUC is the
    Mann-Whitney U statistic over all (positive, negative) pairs: 1 when the positive scores
    higher, 0.5 when tied, divided by the number of pairs (exact, equal to the trapezoidal
    area under the empirical ROC). An image is called positive when score >= threshold; without
    `threshold`, the Youden-optimal one (max sensitivity + specificity - 1 over the distinct
    image scores; ties: the highest threshold), which is optimistic on the data it is chosen on.
    Values are None when undefined (no positive or no negative image).
    """
    index = by_image(gt, dets)
    wanted = set(classes) if classes is not None else None
    scores, positive = [], []
    for image, objects in gt.items():
        own = [dets[i].score for i in index.get(image, []) if wanted is None or dets[i].label in wanted]
        scores.append(max(own, default=0.0))
        positive.append(any(wanted is None or name in wanted for name, _ in objects))
    s, y = np.asarray(scores, float), np.asarray(positive, bool)
    pos, neg = s[y], s[~y]
    auc = None
    if len(pos) and len(neg):
        distinct, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        midrank = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based ranks, ties averaged
        auc = float((midrank[y].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
        if threshold is None:
            candidates = distinct[::-1]  # highest first, so argmax picks the highest among ties
            youden = (len(pos) - np.searchsorted(np.sort(pos), candidates)) / len(pos) \
                + np.searchsorted(np.sort(neg), candidates) / len(neg)
            threshold = float(candidates[int(np.argmax(youden))])
    sens = float((pos >= threshold).mean()) if threshold is not None and len(pos) else None
    spec = float((neg < threshold).mean()) if threshold is not None and len(neg) else None
    return {"auc": auc, "sensitivity": sens, "specificity": spec, "threshold": threshold}


def coco_dicts(gt: GroundTruth, dets: Sequence[Detection], label_names: Sequence[str]) -> Tuple[dict, list]:
    """The COCO ground-truth dataset and result list, bbox `[x, y, w, h]` in pixels (image ids
    1.. in sorted name order, category ids 1.. in `label_names` order)."""
    by_image(gt, dets)
    category = {name: i for i, name in enumerate(label_names, start=1)}
    for label in sorted({name for objects in gt.values() for name, _ in objects} | {d.label for d in dets}):
        if label not in category:
            raise UserError(f"label {label!r} is not among the classes ({', '.join(label_names)})"
                            + did_you_mean(label, category))
    image_id = {name: i for i, name in enumerate(sorted(gt), start=1)}
    boxes = [(image, label, box) for image in sorted(gt) for label, box in gt[image]]
    annotations = [{"id": k, "image_id": image_id[image], "category_id": category[label], "bbox": list(box.to_xywh()),
                    "area": box.area, "iscrowd": 0} for k, (image, label, box) in enumerate(boxes, start=1)]
    dataset = {"images": [{"id": i, "file_name": name} for name, i in image_id.items()], "annotations": annotations,
               "categories": [{"id": i, "name": name} for name, i in category.items()]}
    results = [{"image_id": image_id[image], "category_id": category[label], "bbox": list(box.to_xywh()),
                "score": float(score)} for image, label, score, box in dets]
    return dataset, results


def coco_metrics(gt: GroundTruth, dets: Sequence[Detection], label_names: Optional[Sequence[str]] = None) -> dict:
    """pycocotools' COCOeval (bbox) summary: the 12 standard numbers plus per-class AP.

    AP is averaged over IoU 0.50:0.05:0.95 with 101-point interpolation, at most 100
    detections per image (highest scores); s/m/l are areas < 32^2, 32^2..96^2, > 96^2 pixels.
    pycocotools' -1 (nothing to measure, e.g. no small boxes) is reported as None.
    `label_names` sets the classes (default: the sorted GT and detection labels).

    Returns:
      {"AP", "AP50", ..., "ARl": value, "per_class": {class: AP@[.50:.95] or None}}.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = list(label_names) if label_names is not None else sorted(set(_classes(gt)) | {d.label for d in dets})
    dataset, results = coco_dicts(gt, dets, names)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        if results:
            found = truth.loadRes(results)
        else:  # loadRes cannot take an empty list
            found = COCO()
            found.dataset = {**dataset, "annotations": []}
            found.createIndex()
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    result = {key: (float(v) if v >= 0 else None) for key, v in zip(COCO_KEYS, evaluation.stats)}
    precision = evaluation.eval["precision"]  # [IoU, recall, class, area, max dets]
    result["per_class"] = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]
        result["per_class"][name] = float(p[p > -1].mean()) if (p > -1).any() else None
    return result
