"""Every metric of a split's detections, in the layout of metrics.json (`medtfod metrics`, the
report, cross-validation).

One threshold rule. Threshold-free metrics (AP, FROC, image-level AUC, COCO) use every
detection given: detect with `--min-score 0` for them to mean what they say. Threshold-dependent
ones are computed at one operating threshold, stated in "threshold": the IoBB table, image-level
sensitivity/specificity, the confusion matrix, sensitivity and FP/image at the threshold, and
the per-lesion best IoU. The threshold is `--min-score` when given, else the export's
calibrated operating point (`--model`), else detect's default (0.5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

from ..data.readers.detections import Detection, GroundTruth
from .bootstrap import detection_cis
from .matching import FROC_RATES, threshold_key

FORMAT = "medtfod-metrics"


@dataclass(frozen=True)
class MetricsOptions:
    """How `evaluate` measures.

    Attributes:
      min_score: the operating threshold (None: the model's operating point, else 0.5).
      iou_froc: the IoU of a hit for FROC, sensitivity at the threshold and the confusion matrix.
      bootstrap: patient-bootstrap replicates of the 95% CIs (0: none).
      size_bins: lesion-size bin edges (longer side; None: tertiles of the split's GT sizes;
        an empty tuple: no size strata).
      size_unit: 'px', or 'mm' from the images' pixel spacing.
      by: image fields to stratify by, e.g. ('sex', 'age:0,40,60,120').
    """

    min_score: Optional[float] = None
    iou_froc: float = 0.1
    bootstrap: int = 200
    size_bins: Optional[Sequence[float]] = None
    size_unit: str = "px"
    by: Sequence[str] = ()

    def __post_init__(self):
        """Checked as the command checks its flags; `size_bins` may be '0,16,inf', `by` one name."""
        import math

        from ..core.errors import UserError
        from .stratify import by_fields, parse_bins

        def fraction(name, value, low_open=False):
            ok = isinstance(value, (int, float)) and not math.isnan(value) and (0 < value <= 1 if low_open
                                                                                else 0 <= value <= 1)
            if not ok:
                raise UserError(f"{name}={value!r}: give a number from 0 ({'exclusive' if low_open else 'inclusive'}) "
                                "to 1")
        if self.min_score is not None:
            fraction("min_score", self.min_score)
        fraction("iou_froc", self.iou_froc, low_open=True)
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise UserError(f"bootstrap={self.bootstrap!r}: give a whole number of replicates, 0 or more")
        if self.size_unit not in ("px", "mm"):
            raise UserError(f"size_unit={self.size_unit!r}: expected 'px' or 'mm'")
        if self.size_bins is not None and (isinstance(self.size_bins, str) or len(self.size_bins)):
            object.__setattr__(self, "size_bins", tuple(parse_bins(self.size_bins, "--size-bins", sizes=True)))
        object.__setattr__(self, "by", (self.by,) if isinstance(self.by, str) else tuple(self.by))
        by_fields(self.by)


def operating_threshold(min_score: Optional[float] = None, model=None,
                        tiling: Optional[dict] = None) -> Dict[str, object]:
    """{'min_score', 'source' ('min_score' | 'operating_point' | 'default'), 'detail'}: the
    threshold of the threshold-dependent metrics and where it came from. `model`: an export
    folder or `ExportedModel` whose operating_point.json is used when `min_score` is None and it
    was calibrated with the detections' `tiling` (`PredictOptions.tiling`; None: whole images)."""
    from ..inference.model import DEFAULT_MIN_SCORE, ExportedModel
    from ..inference.operating_point import describe, tiling_mismatch
    if min_score is not None:
        return {"min_score": float(min_score), "source": "min_score", "detail": "--min-score"}
    if model is not None:
        exported = model if isinstance(model, ExportedModel) else ExportedModel(model)
        point = exported.operating_point
        mismatch = tiling_mismatch(point, tiling) if point else None
        if mismatch:
            return {"min_score": DEFAULT_MIN_SCORE, "source": "default",
                    "detail": f"detect's default {DEFAULT_MIN_SCORE:g} ({mismatch})"}
        if point:
            return {"min_score": float(point["min_score"]), "source": "operating_point",
                    "detail": f"{exported.path}: {describe(point)}", "split": point.get("split")}
    return {"min_score": DEFAULT_MIN_SCORE, "source": "default",
            "detail": f"detect's default {DEFAULT_MIN_SCORE:g} (no --min-score and no calibrated --model)"}


def metrics_warnings(result: dict, source: str, dataset, split: Optional[str], dets: Sequence[Detection]) -> list:
    """Lines that tell a user the numbers may not mean what they think: no detections, a CSV cut
    above the threshold or far above 0, detections of one split evaluated on all, a threshold
    calibrated on the split it is evaluated on."""
    from ..inference.detect import THRESHOLDED_BELOW
    t = result["threshold"]
    lowest, threshold = t["lowest_score"], t["min_score"]
    lines = []
    if not dets:
        lines.append(f"warning: {source} holds no detection: every lesion counts as missed")
    elif lowest > threshold:
        lines.append(f"warning: the lowest score in {source} is {lowest:g}, above the threshold {threshold:g}: "
                     f"detections scoring from {threshold:g} to {lowest:g} may be missing, so the numbers at the "
                     "threshold can be too low; run detect with --min-score 0")
    elif lowest >= THRESHOLDED_BELOW:
        lines.append(f"note: the lowest score in {source} is {lowest:g}: AP, FROC and AUC rank only the detections "
                     "detect kept; run detect with --min-score 0 for them to cover every detection")
    if split is None and dets and len(dataset.splits) > 1:
        split_of = {e.name: e.split for e in dataset.images()}
        on = sorted({split_of[d.image] for d in dets})
        if len(on) < len(dataset.splits):
            lines.append(f"warning: no --split: every image of the dataset is evaluated, but the detections are on "
                         f"images of {', '.join(on)} only; the others count as images with nothing found. Give "
                         f"--split {on[0]}")
    if t["source"] == "operating_point" and split is not None and t.get("split") == split:
        lines.append(f"note: the threshold was calibrated on this split ({split}): the numbers at it are "
                     "optimistic; calibrate on val and evaluate on test")
    return lines


def check_metrics_out(path: str) -> None:
    """Refuse to replace a file at `path` that `medtfod metrics` did not write."""
    import json

    from ..core.fence import need_ours

    def ours(existing: str) -> bool:
        with open(existing, encoding="utf-8") as f:
            old = json.load(f)
        return isinstance(old, dict) and (old.get("format") == FORMAT or {"ap", "froc", "coco"} <= set(old))
    need_ours("--out", path, "a metrics file", ours)


def _at_threshold(gt, dets, patients, meta, threshold: float, o: MetricsOptions,
                  matched: Dict[float, list]) -> Tuple[dict, dict]:
    """(the "at_threshold" section, the "strata" section)."""
    from . import stratify
    from .lesions import lesion_overlaps, lesion_summary
    from .strata import AP_IOU, MIN_LESIONS, STRATA_RATES, match, measure
    lesions = lesion_overlaps(gt, dets, threshold)
    m = match(gt, dets, lesions, patients, threshold, o.iou_froc, matched)
    overall = measure(m, stratify.all_images(m), o.bootstrap)
    kept = int((m.det_score >= threshold).sum())
    section = {"detections": kept, "hits": int(m.lesion_hit.sum()), "lesions": overall["lesions"],
               "missed": overall["lesions"] - int(m.lesion_hit.sum()), "false_positives": kept - int(m.lesion_hit.sum()),
               "sensitivity": overall["sensitivity"], "fp_per_image": overall["fp_per_image"],
               **lesion_summary(lesions)}
    if "ci95" in overall:
        section["ci95"] = {k: overall["ci95"][k] for k in ("sensitivity", "fp_per_image", "mean_iou")}
    strata: Dict[str, object] = {"iou": o.iou_froc, "ap_iou": AP_IOU, "rates": list(STRATA_RATES),
                                 "min_lesions": MIN_LESIONS}
    if o.size_bins is None or len(o.size_bins):
        lesion_sizes, det_sizes = stratify.sizes(m, [lesion.box for lesion in lesions], [d.box for d in dets],
                                                 meta, o.size_unit)
        edges, parts = stratify.size_strata(m, lesion_sizes, det_sizes, o.size_bins, o.size_unit)
        strata["size"] = {"unit": o.size_unit, "source": "tertiles" if o.size_bins is None else "given",
                          "edges": stratify.edges_json(edges),
                          "strata": [measure(m, s, o.bootstrap) for s in parts]}
    by = stratify.by_fields(o.by)
    if by:
        strata["by"] = {name: {"bins": stratify.edges_json(bins), "strata": [measure(m, s, o.bootstrap)
                                                         for s in stratify.field_strata(m, meta, name, bins)]}
                        for name, bins in by.items()}
    return section, strata


def evaluate_all(gt: GroundTruth, dets: Sequence[Detection], *, patients: Optional[Dict[str, str]] = None,
                 label_names: Optional[Sequence[str]] = None, threshold: Optional[Mapping[str, object]] = None,
                 options: Optional[MetricsOptions] = None,
                 meta: Optional[Mapping[str, Mapping[str, str]]] = None) -> dict:
    """Every metric, in the layout of metrics.json (see `medtfod.evaluation.metrics` for each
    definition, `strata` for the strata).

    `patients` (image -> patient id, from the dataset manifest) are the units the bootstrap
    resamples; without them each image is its own unit. `threshold` is `operating_threshold`'s
    record (default: options.min_score, else 0.5). `meta` (image -> manifest fields) is what
    `--by` and `--size-unit mm` read. "ci95" states the resampling unit ('patient' or 'image'),
    how many units there were and the number of replicates, and holds the intervals of the
    AP@0.5 mean, the FROC mean and each rate, the AUC and the numbers at the threshold.
    """
    from .gallery import confusion_matrix, review
    from .metrics import AP_IOUS, average_precision, coco_metrics, froc, image_level, iobb_localization
    from .nulls import explain_nulls
    o = options or MetricsOptions()
    record = dict(threshold or operating_threshold(o.min_score))
    t = float(record["min_score"])
    kept = [d for d in dets if d.score >= t]
    units = patients if patients is not None else {image: image for image in gt}
    names = list(label_names) if label_names is not None else None
    from .matching import match_detections
    matched = {v: match_detections(gt, dets, v) for v in {*AP_IOUS, o.iou_froc}}   # once for every metric
    at_threshold, strata = _at_threshold(gt, dets, units, meta or {}, t, o, matched)
    record.update(detections=len(dets), kept=len(kept), lowest_score=min((d.score for d in dets), default=None))
    result = {
        "format": FORMAT,
        "threshold": record,
        "ap": {threshold_key(v): average_precision(gt, dets, v, matched[v]) for v in AP_IOUS},
        "froc": froc(gt, dets, o.iou_froc, matched=matched[o.iou_froc]),
        "image_level": image_level(gt, dets, threshold=t),
        "coco": coco_metrics(gt, dets, names),
        "at_threshold": at_threshold,
        "iobb": iobb_localization(gt, kept),
        "confusion": confusion_matrix(review(gt, dets, o.iou_froc, t), names or sorted(
            {label for objects in gt.values() for label, _ in objects} | {d.label for d in dets})),
        "strata": strata,
        "ci95": {},
    }
    if o.bootstrap:
        result["ci95"] = {"unit": "patient" if patients is not None else "image",
                          "groups": len({units[image] for image in gt if image in units}), "replicates": o.bootstrap}
        intervals = detection_cis(gt, dets, units, n=o.bootstrap, iou_ap=0.5, iou_froc=o.iou_froc)
        for name in ("ap50_mean", "froc_mean", "auc"):
            result["ci95"][name] = list(intervals[name])
        result["ci95"]["froc"] = {threshold_key(r): list(intervals[f"froc@{threshold_key(r)}"]) for r in FROC_RATES}
    positives = sum(1 for objects in gt.values() if objects)
    result["nulls"] = explain_nulls(result, positives, len(gt) - positives)
    return result


def evaluate(dataset, split: Optional[str], detections, *, model=None, options: Optional[MetricsOptions] = None,
             tiling: Optional[dict] = None) -> dict:
    """The metrics of `detections` on a split of `dataset`, in the layout of metrics.json (what
    `medtfod metrics` writes): see `evaluate_all`.

    Args:
      dataset: a `medtfod.Dataset` or its folder.
      split: the split the detections are of ('val', 'test', ...; None: every image).
      detections: a detections.csv path (as `medtfod detect` writes it, best made with
        --min-score 0), or `Detection`s, or the predictions of `ExportedModel.predict` (taken
        as detections.csv would hold them: `as_csv_detections`).
      model: the export the detections are of: its operating point is the threshold when
        options.min_score is None.
      options: `MetricsOptions` (threshold, IoU, bootstrap, strata).
      tiling: how the detections were made (`PredictOptions.tiling`; None: whole images): the
        model's operating point counts only when it was calibrated the same way.
    """
    from ..data.dataset import Dataset
    from ..data.readers.detections import as_csv_detections
    o = options or MetricsOptions()
    data = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    gt = data.ground_truth(split)
    dets = as_csv_detections(detections, labels=data.label_names, images=gt)
    return evaluate_all(gt, dets, patients=data.patients(split), label_names=data.label_names,
                        threshold=operating_threshold(o.min_score, model, tiling), options=o, meta=data.meta(split))
