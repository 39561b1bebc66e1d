"""Operating point: the score threshold that reaches a target sensitivity, or stays within a
false-positive budget, on a labelled split (normally val), stored beside the export as
`operating_point.json` for `medtfod detect` to use by default.

The threshold is read off the FROC curve (`metrics.froc_curve`: lesion-level sensitivity
over all classes, a hit being a same-class detection at IoU >= `iou`, and false positives per
image counting negatives too), so it means what the FROC table in `medtfod metrics` means.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from ..core.annotations import Detection
from ..core.errors import UserError
from .metrics import froc_curve
from ..data.readers.detections import GroundTruth

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


def calibrate(model, dataset, split: str = "val", *, sensitivity: Optional[float] = None,
              fp_per_image: Optional[float] = None, iou: float = 0.1, detections=None,
              options=None) -> Tuple[str, dict]:
    """Choose the export's operating point on a labelled split (`medtfod calibrate`) and store it
    in the export folder, where `detect` and `ExportedModel.predict` find it.

    Args:
      model: an export folder or an `ExportedModel`.
      dataset: a dataset folder or a `Dataset`; `split` the split to calibrate on (not the one to report on).
      sensitivity / fp_per_image: the target (one of the two).
      iou: the IoU of a hit.
      detections: a detections.csv of the split made with --min-score 0, or the split's
        `Detection`s or predictions (`ExportedModel.predict(dataset, split, min_score=0)`);
        else the model runs now (without a progress bar: `medtfod calibrate` shows one).
      options: a `PredictOptions` the model runs with (e.g. `tile=320`): `detect` and `predict`
        use the operating point only when they tile the same way (recorded as 'tiling'). With
        `detections`, say here how they were made.

    Returns (the operating_point.json path, the record written).
    """
    import os

    from ..data.dataset import Dataset
    from ..inference.detect import check_on_split, split_detections
    from ..inference.model import ExportedModel
    from ..inference.operating_point import write_operating_point
    if options is not None and (options.models or options.tta):
        raise UserError("calibrate chooses one model's own threshold: give options without models or tta "
                        "(a fused score has no calibration)")
    exported = model if isinstance(model, ExportedModel) else ExportedModel(model)
    data = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    gt = data.ground_truth(split)
    if detections is None or isinstance(detections, (str, os.PathLike)):
        dets = split_detections(exported.path, data.path, split, gt, detections, quiet=True, options=options)
    else:
        from ..data.readers.detections import as_csv_detections
        dets = as_csv_detections(detections)
        check_on_split(dets, gt, split, data.path)
    point = choose_threshold(gt, dets, sensitivity=sensitivity, fp_per_image=fp_per_image, iou=iou)
    return write_operating_point(exported.path, point, target_sensitivity=sensitivity,
                                 target_fp_per_image=fp_per_image, iou=iou, dataset=os.path.abspath(data.path),
                                 split=split, images=len(gt), boxes=sum(len(v) for v in gt.values()),
                                 tiling=options.tiling if options is not None else None)
