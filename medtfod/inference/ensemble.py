"""Ensembles and test-time augmentation for detect: several SavedModels, and/or each image also
flipped, fused per image into one result as the `ensemble-boxes` package fuses them (by
`fusion`, which equals it and fuses a whole batch at once).

Results here are the OD API's SavedModel outputs as numpy arrays for a batch: `detection_boxes`
[B, N, 4] normalized (ymin, xmin, ymax, xmax), `detection_scores` [B, N], `detection_classes`
[B, N] (label-map ids, float as the OD API returns them), `num_detections` [B]. Fusion works on
normalized (x1, y1, x2, y2); `fusion` converts in and out.

Fusion methods (`--fuse`), per image and class, over every model and TTA view, with the boxes of
all scores (the threshold is applied after fusion):

    wbf   weighted boxes fusion (Solovyev et al. 2021), conf_type 'avg': a cluster's box is the
          score-weighted mean of its boxes, its score the mean score, scaled by the share of
          views that found it (one view of two: half its score)
    nms   non-maximum suppression across views: the highest-scoring box of a cluster stays
    mean  non-maximum weighted: the top box's score, its coordinates averaged over the cluster
          weighted by score and IoU
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from ..core.errors import UserError

METHODS = ("wbf", "nms", "mean")
TTA = ("hflip",)
DEFAULT_IOU = 0.55  # the WBF paper's, when an export's own NMS threshold cannot be read


def default_iou(nms_ious: Sequence[Optional[float]]) -> float:
    """Fusion IoU when none is given: the models' own NMS thresholds (`ExportedModel.nms_iou`; the
    highest of them). Boxes a model keeps apart then stay apart, so a model fused with itself is
    itself; boxes of different views that overlap more than any model allows for two findings are
    one finding."""
    found = [v for v in nms_ious if v]
    return max(found) if found else DEFAULT_IOU


def hflip_back(result: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The result of a horizontally flipped batch, in the original images' frame."""
    boxes = result["detection_boxes"].copy()
    boxes[..., 1], boxes[..., 3] = 1.0 - result["detection_boxes"][..., 3], 1.0 - result["detection_boxes"][..., 1]
    return {**result, "detection_boxes": boxes}


def fuse(results: Sequence[Dict[str, np.ndarray]], method: str = "wbf", iou: float = 0.55,
         max_detections: int = 100) -> Dict[str, np.ndarray]:
    """One batch result from the same batch's results of several views (see the module docstring)."""
    if method not in METHODS:
        raise UserError(f"--fuse {method!r}: choose one of {', '.join(METHODS)}")
    if any("detection_masks" in r for r in results):
        raise UserError("fusing Mask R-CNN masks is not supported: run --fuse/--tta with box models only")
    from .fusion import fuse_batch  # numba: loaded (and its loops compiled, once) on the first fusion
    return fuse_batch(results, method, iou, max_detections)


def check_label_maps(models: Sequence[str], maps: List) -> None:
    """Refuse models whose label maps differ, naming the first difference."""
    first = maps[0]
    for model, other in zip(models[1:], maps[1:]):
        if other.ids != first.ids:
            only_first = sorted(set(first.ids.items()) - set(other.ids.items()))
            only_other = sorted(set(other.ids.items()) - set(first.ids.items()))
            raise UserError(f"the models' label maps differ: {models[0]} has {only_first or 'nothing else'}, "
                            f"{model} has {only_other or 'nothing else'} (name, id); an ensemble needs one label map")
