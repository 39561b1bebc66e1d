"""The clustering loops of weighted boxes fusion, NMS and non-maximum weighted, compiled by numba.

They do what `ensemble-boxes` 1.0.9 does per image and class (`weighted_boxes_fusion` with
conf_type 'avg', `nms`, `non_maximum_weighted`; weights of 1), down to its arithmetic: sums of
coordinates accumulate in float32 as its `get_weighted_box` does, IoUs are float64 in its order
of operations, a NaN IoU is treated as its NumPy calls treat it, and NMS orders boxes with
numba's own argsort, as its `nms_float_fast` does (ties come out as there). `fusion` prepares
the inputs and orders the outputs; the two together equal ensemble-boxes (tests/test_fusion.py).

Every kernel takes the boxes of a whole batch grouped by (image, class):

    coords  [M, 4] float64  normalized (x1, y1, x2, y2), x1 <= x2, y1 <= y2, nonzero area
    scores  [M] float64
    starts  [G + 1] int64   group g is rows starts[g]:starts[g + 1]
    order   [M] int64       (wbf, mean) rows of each group, highest score first

and returns one row per fused box, groups in order: (coords [K, 4] float64, scores [K] float64,
group [K] int64). Compiled on first
use and cached beside this file (`cache=True`); `nogil`, so detect's drawing threads run meanwhile.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True, error_model="numpy")  # numpy: 0/0 is NaN, as in ensemble-boxes


@njit(**_JIT)
def _outputs(m):
    """Room for up to m fused boxes: coordinates, scores, groups."""
    return np.zeros((m, 4)), np.zeros(m), np.zeros(m, np.int64)


@njit(**_JIT)
def wbf(coords, scores, starts, order, views, thr):
    """Weighted boxes fusion, conf_type 'avg': a box joins the cluster whose fused box it overlaps
    most (IoU > thr, first of equals), else starts one; a cluster's box is the score-weighted mean
    of its boxes (float32 sums), its score the mean score times min(views, size) / views."""
    out_coords, out_scores, out_group = _outputs(coords.shape[0])
    acc = np.zeros((coords.shape[0], 4), np.float32)  # sum of score * coordinate, per cluster
    conf = np.zeros(coords.shape[0])  # sum of scores
    size = np.zeros(coords.shape[0], np.int64)
    n = 0
    for g in range(starts.shape[0] - 1):
        first = n
        for p in range(starts[g], starts[g + 1]):
            i = order[p]
            x1, y1, x2, y2 = coords[i, 0], coords[i, 1], coords[i, 2], coords[i, 3]
            s = scores[i]
            area = (x2 - x1) * (y2 - y1)
            best, best_iou = -1, -np.inf
            for c in range(first, n):  # np.argmax over the clusters: the first maximum, or the first NaN
                xa, ya = max(out_coords[c, 0], x1), max(out_coords[c, 1], y1)
                xb, yb = min(out_coords[c, 2], x2), min(out_coords[c, 3], y2)
                inter = max(xb - xa, 0.0) * max(yb - ya, 0.0)
                cluster_area = (out_coords[c, 2] - out_coords[c, 0]) * (out_coords[c, 3] - out_coords[c, 1])
                iou = inter / (cluster_area + area - inter)
                if iou != iou:
                    best, best_iou = c, iou
                    break
                if iou > best_iou:
                    best, best_iou = c, iou
            if best >= 0 and not best_iou <= thr:
                c = best
                size[c] += 1
                conf[c] += s
                for k in range(4):
                    acc[c, k] = np.float32(np.float64(acc[c, k]) + s * coords[i, k])
                for k in range(4):
                    out_coords[c, k] = np.float32(np.float64(acc[c, k]) / conf[c])
                out_scores[c] = np.float32(conf[c] / size[c])
            else:  # a new cluster keeps the box as it is until a second box joins
                c = n
                n += 1
                size[c], conf[c], out_scores[c], out_group[c] = 1, s, s, g
                for k in range(4):
                    acc[c, k] = np.float32(0.0 + s * coords[i, k])
                    out_coords[c, k] = coords[i, k]
        for c in range(first, n):
            out_scores[c] = out_scores[c] * min(views, size[c]) / views
    return out_coords[:n], out_scores[:n], out_group[:n]


@njit(**_JIT)
def nms(coords, scores, starts, thr):
    """Greedy NMS per group: highest score first (numba's argsort, reversed), a box is dropped
    when its IoU with a kept box is not <= thr. Kept boxes in keep order."""
    out_coords, out_scores, out_group = _outputs(coords.shape[0])
    n = 0
    for g in range(starts.shape[0] - 1):
        lo, hi = starts[g], starts[g + 1]
        order = scores[lo:hi].argsort()[::-1] + lo
        dropped = np.zeros(hi - lo, np.bool_)
        for a in range(hi - lo):
            if dropped[a]:
                continue
            i = order[a]
            out_group[n], out_scores[n] = g, scores[i]
            for k in range(4):
                out_coords[n, k] = coords[i, k]
            n += 1
            area_i = (coords[i, 2] - coords[i, 0]) * (coords[i, 3] - coords[i, 1])
            for b in range(a + 1, hi - lo):
                if dropped[b]:
                    continue
                j = order[b]
                w = max(0.0, min(coords[i, 2], coords[j, 2]) - max(coords[i, 0], coords[j, 0]))
                h = max(0.0, min(coords[i, 3], coords[j, 3]) - max(coords[i, 1], coords[j, 1]))
                inter = w * h
                area_j = (coords[j, 2] - coords[j, 0]) * (coords[j, 3] - coords[j, 1])
                if not inter / (area_i + area_j - inter) <= thr:
                    dropped[b] = True
    return out_coords[:n], out_scores[:n], out_group[:n]


@njit(**_JIT)
def _iou(a, b):
    """ensemble-boxes' `bb_intersection_over_union` (0.0 without intersection)."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    if inter == 0:
        return 0.0
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@njit(**_JIT)
def mean(coords, scores, starts, order, thr):
    """Non-maximum weighted: a box joins the earlier cluster head it overlaps most (IoU > thr, the
    first of equals), else heads a cluster; a cluster's box is its boxes' mean weighted by score
    times IoU with the head (float32 sums), its score the head's (as float32)."""
    out_coords, out_scores, out_group = _outputs(coords.shape[0])
    cluster = np.zeros(coords.shape[0], np.int64)  # per sorted row: its cluster
    head = np.zeros(coords.shape[0], np.int64)  # per cluster: its first row
    n = 0
    for g in range(starts.shape[0] - 1):
        first = n
        lo, hi = starts[g], starts[g + 1]
        for p in range(lo, hi):
            i = order[p]
            best, best_iou = -1, thr
            for c in range(first, n):
                iou = _iou(coords[head[c]], coords[i])
                if iou > best_iou:
                    best, best_iou = c, iou
            if best < 0:
                best = n
                head[n], out_group[n] = i, g
                n += 1
            cluster[p] = best
        acc = np.zeros((n - first, 4), np.float32)
        conf = np.zeros(n - first)
        for p in range(lo, hi):
            i, c = order[p], cluster[p]
            weight = scores[i] * _iou(coords[i], coords[head[c]])
            conf[c - first] += weight
            for k in range(4):
                acc[c - first, k] = np.float32(np.float64(acc[c - first, k]) + weight * coords[i, k])
        for c in range(first, n):
            out_scores[c] = np.float32(scores[head[c]])
            for k in range(4):
                out_coords[c, k] = np.float32(np.float64(acc[c - first, k]) / conf[c - first])
    return out_coords[:n], out_scores[:n], out_group[:n]
