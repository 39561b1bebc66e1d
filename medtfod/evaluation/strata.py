"""Stratified metrics: the detection numbers on a part of the data, with patient-bootstrap CIs.

Two kinds of strata (`medtfod.evaluation.stratify` builds them):
- **lesion size**: the GT boxes whose size (the longer side, in pixels or mm) lies in
  [low, high). A detection matched to a GT box of another stratum is left out (neither hit nor
  false positive); an unmatched detection belongs to the stratum of its own size; FP/image is
  over all images. (COCO's area ranges work the same way.)
- **an image field** (sex, age band, TI-RADS, ...): the images with that value, with their GT
  boxes and detections only.

Per stratum: lesions, images, patients; AP@0.5 (mean over the classes with GT boxes in the
stratum); FROC sensitivity at 0.5/1/2 FP per image (IoU `iou`); and at the operating threshold
the lesion-level sensitivity (one-to-one hits at IoU `iou`), FP per image and the mean
per-lesion best IoU (`medtfod.evaluation.lesions`). Matching is done once on the whole split
(`matching.match_detections`); a stratum only counts. CIs resample the patients that have an
image in the stratum (all patients for size strata), the replicates of `bootstrap.detection_cis`.
A stratum under `MIN_LESIONS` lesions is reported but flagged `too_small`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..data.readers.detections import Detection, GroundTruth
from .bootstrap import BLOCK_CELLS, last_of_runs, percentile_interval, replicate_weights, weighted_ap, weighted_froc
from .lesions import Lesion
from .matching import match_detections, threshold_key

STRATA_RATES = (0.5, 1, 2)
MIN_LESIONS = 10
AP_IOU = 0.5


@dataclass
class Matched:
    """The split matched once, as arrays (L lesions in `lesion_overlaps` order, D detections)."""

    images: List[str]
    patient_of: np.ndarray      # (images,) patient number
    lesion_image: np.ndarray    # (L,) image row
    lesion_class: np.ndarray    # (L,) class number
    lesion_iou: np.ndarray      # (L,) best IoU at the threshold
    lesion_hit: np.ndarray      # (L,) matched at IoU `iou` by a detection >= threshold
    det_image: np.ndarray       # (D,) image row
    det_class: np.ndarray       # (D,) class number (-1: a class without GT)
    det_score: np.ndarray
    match_ap: np.ndarray        # (D,) lesion number matched at IoU 0.5, -1 none
    match_froc: np.ndarray      # (D,) lesion number matched at IoU `iou`, -1 none
    classes: List[str]
    threshold: float


def match(gt: GroundTruth, dets: Sequence[Detection], lesions: Sequence[Lesion], patients: Dict[str, str],
          threshold: float, iou: float, matched: Optional[Dict[float, list]] = None) -> Matched:
    """`gt`, `dets` and their `lesion_overlaps` at `threshold`, matched at IoU 0.5 and `iou`
    (`matched`: {IoU: `match_detections` result} already computed, e.g. for AP and FROC)."""
    known = matched or {}

    def matching(at: float) -> list:
        return known[at] if at in known else match_detections(gt, dets, at)
    images = sorted(gt)
    row = {image: k for k, image in enumerate(images)}
    ids = sorted({patients.get(image, image) for image in images})
    number = {p: k for k, p in enumerate(ids)}
    classes = sorted({lesion.label for lesion in lesions})
    class_no = {c: k for k, c in enumerate(classes)}
    lesion_no = {(lesion.image, lesion.index): k for k, lesion in enumerate(lesions)}
    score = np.array([d.score for d in dets], float)

    def numbers(matched):
        return np.array([-1 if m is None else lesion_no[(d.image, m)] for d, m in zip(dets, matched)], int)

    match_froc = numbers(matching(iou))
    hit = np.zeros(len(lesions), bool)
    hit[match_froc[(match_froc >= 0) & (score >= threshold)]] = True
    return Matched(images, np.array([number[patients.get(image, image)] for image in images], int),
                   np.array([row[lesion.image] for lesion in lesions], int),
                   np.array([class_no[lesion.label] for lesion in lesions], int),
                   np.array([lesion.best_iou for lesion in lesions], float), hit,
                   np.array([row[d.image] for d in dets], int), np.array([class_no.get(d.label, -1) for d in dets], int),
                   score, numbers(matching(AP_IOU)), match_froc, classes, threshold)


@dataclass(frozen=True)
class Stratum:
    """A part of the split: `images` (bool per image row: their weights count, FP/image is over
    them), `lesions` (bool per lesion) and `unmatched` (bool per detection: an unmatched
    detection counts here). A size stratum weighs every image but shows (counts as its images
    and patients) those with a lesion in it."""

    name: str
    images: np.ndarray
    lesions: np.ndarray
    unmatched: np.ndarray
    resample: np.ndarray    # (images,) bool: the images whose patients the bootstrap draws
    shown: Optional[np.ndarray] = None  # the images counted as the stratum's (default `images`)


def _owned(matched: np.ndarray, s: Stratum) -> np.ndarray:
    """Per detection: does it count in `s`? A matched one when its lesion is in `s`, an
    unmatched one when `s.unmatched` says so."""
    own = s.unmatched.copy()
    hit = matched >= 0
    own[hit] = s.lesions[matched[hit]]
    return own


def _measure(m: Matched, w: np.ndarray, s: Stratum, rates: Sequence[float]) -> Dict[str, np.ndarray]:
    """Each metric of stratum `s` per row of image weights `w` (R, images); NaN when undefined."""
    w_img = w * s.images
    w_les = w_img[:, m.lesion_image] * s.lesions
    w_det = w_img[:, m.det_image]
    lesions, images = w_les.sum(axis=1), w_img.sum(axis=1)
    own_ap, own_froc = _owned(m.match_ap, s), _owned(m.match_froc, s)
    kept = m.det_score >= m.threshold
    out: Dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["sensitivity"] = (w_les * m.lesion_hit).sum(axis=1) / lesions
        out["mean_iou"] = (w_les * m.lesion_iou).sum(axis=1) / lesions
        out["fp_per_image"] = (w_det * (own_froc & kept & (m.match_froc < 0))).sum(axis=1) / images
        aps = np.full((len(w), len(m.classes)), np.nan)
        for c in range(len(m.classes)):
            n_gt = (w_les * (m.lesion_class == c)).sum(axis=1)
            ranked = np.flatnonzero(m.det_class == c)
            ranked = ranked[np.lexsort((ranked, -m.det_score[ranked]))]   # by score, then input order
            has = n_gt > 0
            if has.any():
                aps[has, c] = weighted_ap((w_det[:, ranked] * own_ap[ranked])[has], (m.match_ap[ranked] >= 0)
                                          .astype(float), n_gt[has])
        counted = (~np.isnan(aps)).sum(axis=1)
        out["ap50"] = np.where(counted > 0, np.nansum(aps, axis=1) / np.maximum(counted, 1), np.nan)
    order = np.argsort(-m.det_score, kind="stable")
    at_rate = weighted_froc((w_det * own_froc)[:, order], (m.match_froc[order] >= 0).astype(float),
                            last_of_runs(m.det_score[order]), lesions, images, rates)
    for r, found in zip(rates, at_rate):
        out[f"froc@{threshold_key(r)}"] = found
    out["lesions"], out["images"] = lesions, images
    return out


def _stratum_weights(m: Matched, s: Stratum, n: int, seed: int) -> np.ndarray:
    """(n, images) bootstrap weights drawing the patients of the stratum's `resample` images."""
    ids = np.unique(m.patient_of[s.resample])
    local = np.searchsorted(ids, m.patient_of)
    w = replicate_weights(np.where(s.resample, local, 0), len(ids), n, seed) if len(ids) else np.zeros((n, 0))
    return w * s.resample if len(ids) else np.zeros((n, len(m.images)))


def replicates(m: Matched, s: Stratum, n: int, seed: int = 0,
               rates: Sequence[float] = STRATA_RATES) -> Dict[str, np.ndarray]:
    """Each metric of stratum `s` in each of `n` patient-bootstrap replicates (drawing the
    patients of `s.resample`, as `measure` does): {key: (n,) array, NaN where undefined}; keys
    'sensitivity', 'mean_iou', 'fp_per_image', 'ap50', 'froc@<rate>' for each of `rates`,
    'lesions', 'images'. For a statistic `measure` does not report (e.g. the mean over rates)."""
    w = _stratum_weights(m, s, n, seed)
    block = max(1, BLOCK_CELLS // max(1, len(m.det_score)))   # replicates x detections per block
    parts = [_measure(m, w[k:k + block], s, rates) for k in range(0, n, block)] or [_measure(m, w, s, rates)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _value(x: float) -> Optional[float]:
    return None if np.isnan(x) else float(x)


def measure(m: Matched, s: Stratum, bootstrap: int = 200, seed: int = 0,
            rates: Sequence[float] = STRATA_RATES) -> Dict[str, object]:
    """The numbers of one stratum (see the module docstring), with "ci95" when `bootstrap`."""
    point = _measure(m, np.ones((1, len(m.images))), s, rates)
    shown = s.shown if s.shown is not None else s.images
    result: Dict[str, object] = {
        "name": s.name, "lesions": int(point["lesions"][0]), "images": int(shown.sum()),
        "patients": int(len(np.unique(m.patient_of[shown]))),
        "ap50": _value(point["ap50"][0]),
        "froc": {threshold_key(r): _value(point[f"froc@{threshold_key(r)}"][0]) for r in rates},
        "sensitivity": _value(point["sensitivity"][0]), "fp_per_image": _value(point["fp_per_image"][0]),
        "mean_iou": _value(point["mean_iou"][0]), "too_small": int(point["lesions"][0]) < MIN_LESIONS,
    }
    if bootstrap and len(np.unique(m.patient_of[s.resample])) < 2:   # one patient: every replicate is it
        result["ci95"] = {key: [None, None] for key in ("ap50", "sensitivity", "fp_per_image", "mean_iou")}
        result["ci95"]["froc"] = {threshold_key(r): [None, None] for r in rates}
    elif bootstrap:
        found = replicates(m, s, bootstrap, seed, rates)

        def ci(key):
            values = found[key]
            return list(percentile_interval(values[~np.isnan(values)]))
        result["ci95"] = {key: ci(key) for key in ("ap50", "sensitivity", "fp_per_image", "mean_iou")}
        result["ci95"]["froc"] = {threshold_key(r): ci(f"froc@{threshold_key(r)}") for r in rates}
    return result
