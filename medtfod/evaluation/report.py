"""`medtfod report`: one self-contained HTML page a radiologist can review.

The metrics are `medtfod.evaluation.evaluate.evaluate_all` on the split's detections (the same numbers as
`medtfod metrics --min-score T --by ...` on the same detections.csv at the report's threshold T),
with the manifest's patients for the bootstrap and its fields for the strata;
the confusion matrix and the gallery are `medtfod.evaluation.gallery` at the report's IoU and score
threshold; the history is read from the TensorBoard event files (`medtfod.training.history`). Images
and plots are embedded as `data:` URIs (gallery images as JPEG thumbnails): the file opens
offline, from disk, in any browser, and loads nothing from anywhere.
"""
from __future__ import annotations

import base64
import io
import os
import time
from dataclasses import dataclass
from typing import Optional, Tuple

from ..core import atomic
from ..core.errors import UserError
from .report_html import render

DEFAULT_MAX_IMAGES = 200
THUMBNAIL_PX = 384


def _data_uri(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def _thumbnail(dataset, entry, review, class_ids) -> str:
    """The image with ground truth (white) and its detections at the threshold, as a JPEG URI."""
    from PIL import Image

    from ..inference.draw import draw_boxes
    with Image.open(io.BytesIO(dataset.image_bytes(entry))) as image:
        drawn = draw_boxes(image.convert("RGB"), review.detections, class_ids, ground_truth=review.ground_truth)
    drawn.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    drawn.save(buffer, format="JPEG", quality=85)
    return _data_uri(buffer.getvalue(), "image/jpeg")


@dataclass(frozen=True)
class ReportOptions:
    """What the report shows besides the model and the split.

    Attributes:
      model_dir: a training folder: its TensorBoard history is plotted.
      detections: a detections.csv of the split made at --min-score 0 (else detect runs now).
      min_score: the threshold of the gallery and the confusion matrix (default: the export's
        operating point, else 0.5).
      max_images: the gallery keeps the worst this many images.
      iou: the IoU of a hit in the gallery and the confusion matrix.
      bootstrap: patient-bootstrap replicates of the intervals (0: none).
      by: image fields to stratify by besides lesion size, e.g. ('sex', 'age:0,40,60,120').
      size_bins, size_unit: the lesion-size strata, as `MetricsOptions`'.
      quiet: no progress bar.
      predict: how the model runs on the split when detect runs now (`PredictOptions`, e.g.
        `tile=320` for a model trained on tiles; its min_score is replaced by 0), or, with
        `detections`, how they were made. The operating point counts only for its own tiling.
    """

    model_dir: Optional[str] = None
    detections: Optional[str] = None
    min_score: Optional[float] = None
    max_images: int = DEFAULT_MAX_IMAGES
    iou: float = 0.1
    bootstrap: int = 200
    quiet: bool = False
    by: Tuple[str, ...] = ()
    size_bins: Optional[Tuple[float, ...]] = None
    size_unit: str = "px"
    predict: Optional[object] = None  # medtfod.inference.predictor.PredictOptions


def build_report(model, dataset_dir, split: str, out: str, options: Optional[ReportOptions] = None) -> dict:
    """Write the report to `out`; returns {'path', 'seconds' (building, without detect), 'images'}.

    `model` is an export folder or an `ExportedModel`, `dataset_dir` a dataset folder or a `Dataset`."""
    from ..data.dataset import Dataset
    from ..inference.detect import split_detections
    from ..inference.model import ExportedModel
    from .evaluate import MetricsOptions, evaluate_all, operating_threshold
    from .gallery import confusion_matrix, gallery_order, review

    o = options or ReportOptions()
    model_dir, iou = o.model_dir, o.iou
    exported = model if isinstance(model, ExportedModel) else ExportedModel(model)
    export = exported.path
    dataset = dataset_dir if isinstance(dataset_dir, Dataset) else Dataset(dataset_dir)
    dataset_dir = dataset.path
    data = dataset.manifest
    dataset_map = dataset.label_map
    export_map_path = exported.label_map_path
    export_map = exported.label_map if os.path.isfile(export_map_path) else dataset_map
    if dataset_map.ids != export_map.ids:
        raise UserError(f"the label maps disagree: {dataset.label_map_path} has "
                        f"{dataset_map.ids}, {export_map_path} has {export_map.ids}; report on the dataset the "
                        "model was trained for")
    from ..core.fence import check_outputs, need_file
    need_file("out", out)
    _check_report_out(out)
    check_outputs({"out": out}, {"model": export, "dataset": dataset_dir, "model_dir": model_dir,
                                 "detections": o.detections})
    entries = {e.name: e for e in data.split(split)}
    gt = dataset.ground_truth(split)
    tiling = o.predict.tiling if o.predict is not None else None
    record = operating_threshold(o.min_score, exported, tiling)
    threshold, threshold_source = float(record["min_score"]), str(record["detail"])
    dets = split_detections(export, dataset_dir, split, gt, o.detections, quiet=o.quiet, options=o.predict)
    started = time.time()
    names = dataset_map.names
    patients = data.patients(split)
    boxes = sum(len(v) for v in gt.values())
    page = {
        "dataset": os.path.abspath(dataset_dir), "split": split, "model": os.path.abspath(export),
        "images": len(gt), "patients": len(set(patients.values())),
        "boxes_per_class": {n: sum(1 for v in gt.values() for label, _ in v if label == n) for n in names},
        "negatives": sum(1 for v in gt.values() if not v), "model_info": exported.info,
        "threshold": threshold, "threshold_source": threshold_source, "iou": iou, "detections": len(dets),
        "tiling": tiling,
    }
    from . import report_plots as plots
    plots_uri = {}
    if boxes:
        page["metrics"] = evaluate_all(gt, dets, patients=patients, label_names=names, threshold=record,
                                       options=MetricsOptions(min_score=threshold, bootstrap=o.bootstrap, by=o.by,
                                                              size_bins=o.size_bins, size_unit=o.size_unit),
                                       meta=dataset.meta(split))
        at = page["metrics"]["at_threshold"]
        point = (at["fp_per_image"], at["sensitivity"]) if at["sensitivity"] is not None else None
        page["operating_point"] = point
        froc_ci = page["metrics"]["ci95"].get("froc", {})  # the same replicates as the other intervals
        band = {"low": [v[0] for v in froc_ci.values()] or [None], "high": [v[1] for v in froc_ci.values()] or [None]}
        plots_uri["FROC"] = _data_uri(plots.froc_plot(gt, dets, 0.1, band, point))
        for label in names:
            if page["boxes_per_class"][label]:
                plots_uri[f"precision-recall: {label}"] = _data_uri(plots.pr_plot(gt, dets, label, 0.5))
        roc = plots.roc_plot(gt, dets)
        forest = plots.forest_plot(page["metrics"]["strata"], at["sensitivity"])
        if forest:
            page["strata_plot"] = _data_uri(forest)
        if roc:
            plots_uri["image-level ROC"] = _data_uri(roc)
    reviews = review(gt, dets, iou, threshold)
    matrix = confusion_matrix(reviews, names)
    page["confusion"] = matrix
    plots_uri["confusion matrix"] = _data_uri(plots.confusion_plot(matrix))
    page["plots"] = plots_uri
    page["history"], page["history_note"] = _history(model_dir, plots)
    order, left_out = gallery_order(reviews, o.max_images)
    page["gallery"] = [{"image": r.image, "outcomes": r.outcomes, "classes": sorted({l for l, _ in r.ground_truth}
                                                                                   | {d.label for d in r.detections}),
                        "missed": len(r.missed), "fp": len(r.false_positives) + len(r.confused),
                        "tp": len(r.true_positives), "uri": _thumbnail(data, entries[r.image], r, dataset_map.ids)}
                       for r in order]
    page["left_out"] = left_out
    page["classes"] = names
    page["built_seconds"] = time.time() - started
    atomic.write_file(out, render(page))
    return {"path": out, "seconds": time.time() - started, "images": len(gt)}


def _check_report_out(path: str) -> None:
    """Refuse to replace a file at `path` that is not a report medtfod wrote."""
    from ..core.fence import need_ours

    def ours(existing: str) -> bool:
        with open(existing, encoding="utf-8", errors="replace") as f:
            return "<title>medtfod report" in f.read(4096)
    need_ours("--out", path, "a report", ours)


def _history(model_dir: Optional[str], plots):
    """({title: data URI} of the training curves, a note or None)."""
    if not model_dir:
        return {}, None
    if not os.path.isdir(model_dir):
        return {}, f"--model-dir {model_dir} was not found: no training history"
    from ..training.history import read_history
    runs = read_history(model_dir)
    if not runs:
        return {}, f"{model_dir} has no TensorBoard event files: no training history"
    train, evals = runs.get("train", {}), runs.get("eval", {})
    out = {}
    losses = {k: v for k, v in train.items() if k.startswith("Loss/")}
    if losses:
        out["training losses"] = _data_uri(plots.history_plot(losses, "training losses", log=True))
    if "learning_rate" in train:
        out["learning rate"] = _data_uri(plots.history_plot({"learning_rate": train["learning_rate"]}, "learning rate"))
    wanted = ("DetectionBoxes_Precision/mAP", "DetectionBoxes_Precision/mAP@.50IOU", "Medical/ap50", "Medical/ap10",
              "Medical/froc_mean", "Medical/auc")
    evaluated = {k: v for k, v in evals.items() if k in wanted}
    if evaluated:
        out["evaluations"] = _data_uri(plots.history_plot(evaluated, "evaluated checkpoints"))
    return out, None if out else f"{model_dir} has event files but no losses or evaluations"
