"""The ground truth and detections of the OD API's own evaluation pass, handed to a callable.

`eager_eval_loop` feeds every evaluated batch to the evaluators `eval_util.get_evaluators`
returns and logs whatever their `evaluate()` returns (TensorBoard and the returned metric set).
`collect_detections(score)` adds one more evaluator to that list for the duration of a block:
it collects each image's ground truth and detections, and its `evaluate()` returns
`score(ground_truth, detections)` (e.g. `medtfod.evaluation.medical.medical_metrics`: AP@0.1/0.5,
the FROC mean and the image-level AUC, the same code as `medtfod metrics`). One pass over the
eval split gives the COCO numbers and these; no second process, no second inference.

Boxes arrive as the OD API's absolute `(ymin, xmin, ymax, xmax)` (`scale_to_absolute=True`,
in the original image's pixels when the eval input keeps it, else the resized image's: the
ground truth is scaled the same way, and IoU does not change with the scale).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List

import numpy as np

from ..core.annotations import Detection
from ..core.boxes import Box
from ..data.readers.detections import GroundTruth

Score = Callable[[GroundTruth, List[Detection]], Dict[str, float]]  # -> {metric name: value}


def _box(yxyx) -> Box:
    ymin, xmin, ymax, xmax = (float(v) for v in yxyx)
    return Box(xmin, ymin, xmax, ymax)


class DetectionCollector:
    """Duck-types the OD API's `DetectionEvaluator` (`add_eval_dict`, `evaluate`, `clear`)."""

    def __init__(self, categories: List[dict], score: Score):
        self.names = {int(c["id"]): str(c["name"]) for c in categories}
        self.score = score
        self.clear()

    def clear(self) -> None:
        self.gt: GroundTruth = {}
        self.dets: List[Detection] = []

    def add_eval_dict(self, eval_dict) -> None:
        from object_detection.core import standard_fields as fields
        arrays = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in eval_dict.items()}
        keys = arrays[fields.InputDataFields.key]
        gt_boxes = arrays[fields.InputDataFields.groundtruth_boxes]
        gt_classes = arrays[fields.InputDataFields.groundtruth_classes]
        num_gt = arrays.get(fields.InputDataFields.num_groundtruth_boxes)
        boxes = arrays[fields.DetectionResultFields.detection_boxes]
        scores = arrays[fields.DetectionResultFields.detection_scores]
        classes = arrays[fields.DetectionResultFields.detection_classes]
        num_det = arrays.get(fields.DetectionResultFields.num_detections)
        for b in range(len(keys)):
            key = keys[b].decode() if isinstance(keys[b], bytes) else str(keys[b])
            n_gt = int(num_gt[b]) if num_gt is not None else len(gt_boxes[b])
            self.gt[key] = [(self.names.get(int(c), str(int(c))), _box(yxyx))
                            for yxyx, c in zip(gt_boxes[b][:n_gt], gt_classes[b][:n_gt])
                            if yxyx[2] > yxyx[0] and yxyx[3] > yxyx[1]]  # padding rows are empty boxes
            n_det = int(num_det[b]) if num_det is not None else len(boxes[b])
            for yxyx, score, c in zip(boxes[b][:n_det], scores[b][:n_det], classes[b][:n_det]):
                if yxyx[2] > yxyx[0] and yxyx[3] > yxyx[1]:
                    self.dets.append(Detection(key, self.names.get(int(c), str(int(c))), float(score), _box(yxyx)))

    def evaluate(self) -> Dict[str, float]:
        return self.score(self.gt, self.dets)


@contextlib.contextmanager
def collect_detections(score: Score):
    """Within the block, every evaluator list the OD API builds also holds a `DetectionCollector`
    that hands what it collected to `score`."""
    from object_detection import eval_util
    original = eval_util.get_evaluators

    def with_collector(eval_config, categories, evaluator_options=None):
        return list(original(eval_config, categories, evaluator_options)) + [DetectionCollector(categories, score)]

    eval_util.get_evaluators = with_collector
    try:
        yield
    finally:
        eval_util.get_evaluators = original
