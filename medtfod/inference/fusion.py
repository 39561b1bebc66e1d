"""Fusing a batch's results of several views in one pass: the boxes of every image and class of
the batch are prepared with NumPy at once and clustered by the compiled loops of
`fusion_kernels`, instead of `ensemble-boxes`' Python per image (3-13 ms an image for two views
of an SSD's 100 boxes, as long as the model itself; this takes ~0.1 ms).

The results equal `ensemble-boxes` 1.0.9 called per image (`weighted_boxes_fusion(...,
skip_box_thr=0.0, conf_type='avg')`, `nms`, `non_maximum_weighted(..., skip_box_thr=0.0)`) and
ordered as `ensemble.fuse` orders them, to 1e-6 (tests/test_fusion.py, ensemble-boxes as the
reference), including its quirks: boxes are clipped to [0, 1], corners given in the wrong order
are swapped, zero-area boxes are dropped (and, for wbf and mean, negative scores); ties in score
keep the order its sorts give them. Class ids are integral label-map ids.

Inputs and outputs are the OD API's batch results (see `ensemble`): `detection_boxes` [B, N, 4]
normalized (ymin, xmin, ymax, xmax); the kernels work on normalized (x1, y1, x2, y2).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from . import fusion_kernels


def _stack(results: Sequence[Dict[str, np.ndarray]]) -> Tuple[np.ndarray, ...]:
    """Every view's boxes side by side: xyxy [B, T, 4] float64 clipped to [0, 1], scores and
    classes [B, T], and which entries are detections [B, T] (T: the views' N summed, view by view)."""
    boxes, scores, classes, valid = [], [], [], []
    for r in results:
        yxyx = np.asarray(r["detection_boxes"], np.float64)
        boxes.append(np.clip(yxyx[..., [1, 0, 3, 2]], 0.0, 1.0))
        scores.append(np.asarray(r["detection_scores"], np.float64))
        classes.append(np.asarray(r["detection_classes"], np.float64))
        n = np.asarray(r["num_detections"]).astype(np.int64)
        valid.append(np.arange(yxyx.shape[1]) < n[:, None])
    return tuple(np.concatenate(parts, axis=1) for parts in (boxes, scores, classes, valid))


def _prepare(results, method: str) -> Tuple[np.ndarray, ...]:
    """The boxes ensemble-boxes keeps, flattened image by image in view order: (image [M],
    xyxy [M, 4] with x1 <= x2 and y1 <= y2, score [M], class [M] int64)."""
    xyxy, scores, classes, keep = _stack(results)
    x1, y1, x2, y2 = (xyxy[..., k] for k in range(4))
    if method == "nms":  # prepare_boxes: elementwise min / max
        x1, x2, y1, y2 = np.minimum(x1, x2), np.maximum(x1, x2), np.minimum(y1, y2), np.maximum(y1, y2)
    else:  # prefilter_boxes: swapped when x2 < x1; scores below skip_box_thr=0.0 are dropped
        x1, x2 = np.where(x2 < x1, x2, x1), np.where(x2 < x1, x1, x2)
        y1, y2 = np.where(y2 < y1, y2, y1), np.where(y2 < y1, y1, y2)
        keep = keep & ~(scores < 0.0)
    keep = keep & ((x2 - x1) * (y2 - y1) != 0.0)
    image, _ = np.nonzero(keep)
    xyxy = np.stack([x1[keep], y1[keep], x2[keep], y2[keep]], axis=1)
    return image, xyxy, scores[keep], classes[keep].astype(np.int64)


def _groups(image: np.ndarray, classes: np.ndarray, by_first_seen: bool) -> Tuple[np.ndarray, ...]:
    """Rows grouped by (image, class), stably: (permutation [M], group starts [G + 1], image of
    each group [G]). Classes of an image come in order of first appearance (ensemble-boxes' dict
    in wbf and mean) or ascending (np.unique in nms). Needs at least one row."""
    low = classes.min()
    _, first, group = np.unique(image * (int(classes.max() - low) + 1) + (classes - low),
                                return_index=True, return_inverse=True)
    if by_first_seen:  # rows are image by image, so the first row of each pair orders them
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        group = rank[group]
        first = np.sort(first)
    perm = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=len(first)))]).astype(np.int64)
    return perm, starts, image[first]


def fuse_batch(results: Sequence[Dict[str, np.ndarray]], method: str, iou: float,
               max_detections: int) -> Dict[str, np.ndarray]:
    """One batch result (OD API layout, [B, max_detections] padded with zeros) from the same
    batch's results of several views, fused per image and class by `method` ('wbf', 'nms' or
    'mean') at IoU `iou`; the highest `max_detections` scores of each image, highest first."""
    batch = len(results[0]["num_detections"])
    out = {"detection_boxes": np.zeros((batch, max_detections, 4), np.float32),
           "detection_scores": np.zeros((batch, max_detections), np.float32),
           "detection_classes": np.zeros((batch, max_detections), np.float32),
           "num_detections": np.zeros(batch, np.float32)}
    image, xyxy, scores, classes = _prepare(results, method)
    if not len(scores):
        return out
    perm, starts, group_image = _groups(image, classes, by_first_seen=method != "nms")
    xyxy, scores, classes = np.ascontiguousarray(xyxy[perm]), scores[perm], classes[perm]
    thr = float(iou)
    if method == "nms":
        fused, fused_scores, group = fusion_kernels.nms(xyxy, scores, starts, thr)
    else:
        order = np.empty(len(scores), np.int64)
        for g in range(len(starts) - 1):  # ensemble-boxes' own sort, so that ties fall as there
            lo, hi = starts[g], starts[g + 1]
            order[lo:hi] = scores[lo:hi].argsort()[::-1] + lo
        if method == "wbf":
            fused, fused_scores, group = fusion_kernels.wbf(xyxy, scores, starts, order, len(results), thr)
        else:
            fused, fused_scores, group = fusion_kernels.mean(xyxy, scores, starts, order, thr)
    labels = classes[starts[group]]
    if method == "mean":
        fused_scores = fused_scores.astype(np.float32)  # its result is a float32 array, sorted as such
    cluster_image = group_image[group]
    bounds = np.searchsorted(cluster_image, np.arange(batch + 1))
    for j in range(batch):
        lo, hi = bounds[j], bounds[j + 1]
        if lo == hi:
            continue
        image_scores = fused_scores[lo:hi]
        if method == "nms":  # per class, then ensemble.fuse's stable sort by score
            order = np.argsort(-image_scores, kind="stable")
        else:  # the result sorted by argsort()[::-1], then ensemble.fuse's stable sort
            first = image_scores.argsort()[::-1]
            order = first[np.argsort(-image_scores[first], kind="stable")]
        order = order[:max_detections] + lo
        k = len(order)
        out["detection_boxes"][j, :k] = fused[order][:, [1, 0, 3, 2]]
        out["detection_scores"][j, :k] = fused_scores[order]
        out["detection_classes"][j, :k] = labels[order]
        out["num_detections"][j] = k
    return out
