"""Batch fusion (`inference.fusion`, compiled loops) equals ensemble-boxes called per image, the
reference it replaced on detect's hot path: random batches of 1-3 views with several classes,
empty views, identical boxes, tied scores, degenerate boxes; and it is faster (wbf, mean: >= 10x)."""
import time
import warnings

import numpy as np
import pytest

from medtfod.inference import ensemble


def reference_fuse(results, method, iou, max_detections=100):
    """`ensemble.fuse` as it was: ensemble-boxes per image, its result sorted by score (stable)."""
    from ensemble_boxes import nms, non_maximum_weighted, weighted_boxes_fusion
    batch = len(results[0]["num_detections"])
    boxes_out = np.zeros((batch, max_detections, 4), np.float32)
    scores_out = np.zeros((batch, max_detections), np.float32)
    classes_out = np.zeros((batch, max_detections), np.float32)
    counts = np.zeros(batch, np.float32)
    for j in range(batch):
        boxes, scores, labels = [], [], []
        for r in results:
            n = int(r["num_detections"][j])
            yxyx = np.asarray(r["detection_boxes"][j][:n], np.float64)
            boxes.append(np.clip(yxyx[:, [1, 0, 3, 2]], 0.0, 1.0))
            scores.append(np.asarray(r["detection_scores"][j][:n], np.float64))
            labels.append(np.asarray(r["detection_classes"][j][:n], np.float64))
        if not any(len(s) for s in scores):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "wbf":
                fused = weighted_boxes_fusion(boxes, scores, labels, iou_thr=iou, skip_box_thr=0.0, conf_type="avg")
            elif method == "mean":
                fused = non_maximum_weighted(boxes, scores, labels, iou_thr=iou, skip_box_thr=0.0)
            else:
                try:
                    fused = nms(boxes, scores, labels, iou_thr=iou)
                except ValueError:  # its np.concatenate([]) when every box has zero area: nothing is left
                    continue
        fused_boxes, fused_scores, fused_labels = fused
        order = np.argsort(-fused_scores, kind="stable")[:max_detections]
        k = len(order)
        boxes_out[j, :k] = np.asarray(fused_boxes)[order][:, [1, 0, 3, 2]]
        scores_out[j, :k] = np.asarray(fused_scores)[order]
        classes_out[j, :k] = np.asarray(fused_labels)[order]
        counts[j] = k
    return {"detection_boxes": boxes_out, "detection_scores": scores_out, "detection_classes": classes_out,
            "num_detections": counts}


def random_view(rng, batch, twin=None):
    """One view's OD API result: some boxes copied from `twin` (identical or jittered), tied and
    zero scores, corners swapped, zero-area and out-of-range boxes, padding past num_detections."""
    n = int(rng.integers(0, 13))
    corner = rng.random((batch, n, 2)) * 0.9
    boxes = np.concatenate([corner, corner + rng.random((batch, n, 2)) * 0.4 + 0.01], -1)  # ymin, xmin, ymax, xmax
    scores = rng.random((batch, n))
    if rng.random() < 0.5:
        scores = np.round(scores * 4) / 4  # many ties
    classes = rng.integers(1, 4, (batch, n)).astype(np.float64)
    if twin is not None and n and twin["detection_scores"].shape[1]:
        m = min(n, twin["detection_scores"].shape[1])
        copy = rng.random((batch, m)) < 0.6
        jitter = rng.normal(0, 0.02, (batch, m, 4)) * (rng.random((batch, m, 1)) < 0.5)
        boxes[:, :m][copy] = twin["detection_boxes"][:, :m][copy] + jitter[copy]
        same_score = copy & (rng.random((batch, m)) < 0.5)
        scores[:, :m][same_score] = twin["detection_scores"][:, :m][same_score]
        classes[:, :m][copy] = twin["detection_classes"][:, :m][copy]
    odd = rng.random((batch, n))
    boxes[odd < 0.05] = boxes[odd < 0.05][:, [2, 3, 0, 1]]  # corners swapped
    boxes[(odd >= 0.05) & (odd < 0.08), 3] = boxes[(odd >= 0.05) & (odd < 0.08), 1]  # zero width
    boxes[(odd >= 0.08) & (odd < 0.11)] -= 0.5  # partly or wholly outside [0, 1]
    scores[(odd >= 0.11) & (odd < 0.13)] = 0.0
    if rng.random() < 0.3:
        boxes[..., [1, 3]] = 1.0 - boxes[..., [3, 1]]
    num = rng.integers(0, n + 1, batch) if n else np.zeros(batch, int)
    if rng.random() < 0.2:
        num[:] = 0  # an empty view
    return {"detection_boxes": boxes.astype(np.float32), "detection_scores": scores.astype(np.float32),
            "detection_classes": classes.astype(np.float32), "num_detections": num.astype(np.float32)}


def assert_same(got, want):
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_array_equal(got["detection_classes"], want["detection_classes"])
    np.testing.assert_allclose(got["detection_scores"], want["detection_scores"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["detection_boxes"], want["detection_boxes"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ensemble.METHODS)
def test_batch_fusion_equals_ensemble_boxes_on_random_batches(method):
    rng = np.random.default_rng({"wbf": 1, "nms": 2, "mean": 3}[method])
    compared = 0
    for case in range(250):
        batch = int(rng.integers(1, 4))
        views = [random_view(rng, batch)]
        for _ in range(int(rng.integers(0, 3))):
            views.append(random_view(rng, batch, twin=views[0]))
        iou = float(rng.choice([0.0, 0.3, 0.55, 0.8, 1.0]))
        max_detections = int(rng.choice([3, 100]))
        want = reference_fuse(views, method, iou, max_detections)
        got = ensemble.fuse(views, method, iou, max_detections)
        try:
            assert_same(got, want)
        except AssertionError as e:
            raise AssertionError(f"case {case} ({len(views)} views, iou {iou}): {e}") from None
        compared += int(want["num_detections"].sum())
    assert compared > 1000  # the cases did fuse boxes


def ssd_like_batch(seed=0, batch=8, n=100):
    """A batch as a TTA pair: an SSD-like view (100 boxes, two classes, scores falling off) and
    the same view as its mirror image finds it (flipped back: nearly the same boxes, tied scores)."""
    rng = np.random.default_rng(seed)
    corner = rng.random((batch, n, 2)) * 0.8
    boxes = np.concatenate([corner, corner + rng.random((batch, n, 2)) * 0.2 + 0.01], -1).astype(np.float32)
    scores = np.sort(rng.random((batch, n)).astype(np.float32) ** 4, axis=1)[:, ::-1].copy()
    classes = rng.integers(1, 3, (batch, n)).astype(np.float32)
    view = {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes,
            "num_detections": np.full(batch, n, np.float32)}
    mirror = {**view, "detection_boxes": boxes + rng.normal(0, 0.005, boxes.shape).astype(np.float32)}
    return [view, mirror]


@pytest.mark.parametrize("method", ensemble.METHODS)
def test_batch_fusion_equals_ensemble_boxes_on_a_tta_batch_and_is_faster(method):
    views = ssd_like_batch()
    for twin in (views, [views[0], views[0]]):  # jittered mirror; a model fused with itself (all tied)
        want = reference_fuse(twin, method, 0.55)
        assert_same(ensemble.fuse(twin, method, 0.55), want)
    assert want["num_detections"].min() >= 90  # a model fused with itself keeps its (nearly) 100 boxes
    reference = min(_timed(lambda: reference_fuse(views, method, 0.55)) for _ in range(2))
    fast = min(_timed(lambda: ensemble.fuse(views, method, 0.55)) for _ in range(3))
    # ensemble-boxes' nms is compiled by numba already (~4x measured); its wbf and mean are Python (50-150x)
    assert fast * {"wbf": 10, "mean": 10, "nms": 2}[method] < reference, (fast, reference)


def _timed(run):
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def test_nms_of_an_image_whose_boxes_all_have_zero_area_gives_no_detections():
    from ensemble_boxes import nms
    flat = {"detection_boxes": np.array([[[0.2, 0.3, 0.2, 0.5], [0.1, 0.1, 0.4, 0.1]]], np.float32),
            "detection_scores": np.array([[0.9, 0.8]], np.float32),
            "detection_classes": np.array([[1, 1]], np.float32), "num_detections": np.array([2], np.float32)}
    with pytest.raises(ValueError), warnings.catch_warnings():  # ensemble-boxes: np.concatenate of nothing
        warnings.simplefilter("ignore")
        nms([np.array([[0.3, 0.2, 0.5, 0.2]])] * 2, [np.array([0.9])] * 2, [np.array([1.0])] * 2)
    for method in ensemble.METHODS:
        assert ensemble.fuse([flat, flat], method)["num_detections"].tolist() == [0]
