"""Tiled detection (`detect --tile`): the model runs on overlapping windows of each image at its
native resolution, instead of on the whole image shrunk to the model's input, so a 20 px nodule
on a 2048 px film keeps its 20 px. Boxes found in a window are mapped back into the whole image
and merged across the windows' borders.

Windows (`tile_windows`, the grid in `medtfod.core.tiles` that `convert --tile` cuts training tiles
on) are `size` x `size` pixels (the image's own side where it is smaller), at origins 0, s, 2s,
... with s = round(size * (1 - overlap)), the last one flush with the image's far edge, so
every window has one shape and windows of a batch of images share a model
call. `full` adds the whole image (shrunk by the model's resizer, as without tiling) as one more
window, for lesions larger than a window.

Results follow the OD API's SavedModel outputs (see `ensemble`): `detection_boxes` [B, N, 4]
normalized (ymin, xmin, ymax, xmax), here relative to the whole image after the mapping.

Merging (`merge`), per image and class over every window's boxes taken as one set:
    nms   a box overlapping a higher-scoring one by more than the IoU is dropped
    wbf   overlapping boxes become their score-weighted mean (scores averaged)
    none  every window's boxes are kept (with overlap 0, each image part is seen once)
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np

from ..core.errors import UserError
from ..core.tiles import MAX_OVERLAP, Window, check_overlap, check_size, origins, tile_windows  # noqa: F401 - the grid, re-exported

MERGES = ("nms", "wbf", "none")
Result = Dict[str, np.ndarray]


def check_tiling(size: int, overlap: float, merge: str) -> None:
    """Raises UserError for a tile size below 1, an overlap outside [0, 0.9) or an unknown merge."""
    check_size(size)
    check_overlap(overlap)
    if merge not in MERGES:
        raise UserError(f"tile_merge={merge!r}: choose one of {', '.join(MERGES)}")


def check_tile_size(size: int, model_input: int, model: str) -> None:
    """Raises UserError when windows would be smaller than the model's input (each would be
    upscaled: more compute, no detail gained)."""
    if size < model_input:
        raise UserError(f"--tile {size} is smaller than the {model_input} px input of {model}: a window would be "
                        f"enlarged to the input; give --tile {model_input} or more")


def _calls(run: Callable[[np.ndarray], Result], pixels: np.ndarray, capacity: int) -> Result:
    """`run` over `pixels` [n, H, W, 3] in chunks of `capacity`, results concatenated."""
    parts = [run(pixels[i:i + capacity]) for i in range(0, len(pixels), capacity)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _to_image(boxes: np.ndarray, window: Window, width: int, height: int) -> np.ndarray:
    """Normalized (ymin, xmin, ymax, xmax) in `window` -> normalized in the whole image."""
    scale = np.array([window.height / height, window.width / width] * 2)
    shift = np.array([window.y / height, window.x / width] * 2)
    return boxes * scale + shift


def detect_tiled(run: Callable[[np.ndarray], Result], pixels: np.ndarray, capacity: int, size: int,
                 overlap: float, merge: str, iou: float, full: bool = False) -> Result:
    """One batch result for `pixels` [B, H, W, 3] (images of one size) from `run` on their windows.

    Args:
      run: the model on a stack of equally sized images -> OD API outputs (numpy).
      capacity: images per `run` call (1 for an `image_tensor` export).
      size, overlap, merge, full: see the module docstring; iou: the merge's IoU.
    """
    batch, height, width = pixels.shape[:3]
    windows = tile_windows(width, height, size, overlap)
    crops = np.stack([pixels[b, w.y:w.y + w.height, w.x:w.x + w.width] for b in range(batch) for w in windows])
    found = _calls(run, crops, capacity)
    if "detection_masks" in found and merge != "none":
        raise UserError("tiling a Mask R-CNN export merges masks only with --tile-merge none")
    per_image: List[Tuple[List[np.ndarray], ...]] = [([], [], [], []) for _ in range(batch)]
    for k in range(len(crops)):
        b, window = divmod(k, len(windows))[0], windows[k % len(windows)]
        n = int(found["num_detections"][k])
        keep = per_image[b]
        keep[0].append(_to_image(found["detection_boxes"][k][:n].astype(np.float64), window, width, height))
        keep[1].append(found["detection_scores"][k][:n])
        keep[2].append(found["detection_classes"][k][:n])
        if "detection_masks" in found:
            keep[3].append(found["detection_masks"][k][:n])
    if full:
        whole = _calls(run, pixels, capacity)
        if ("detection_masks" in whole) != ("detection_masks" in found):
            raise UserError("tiling: the model returned masks for some calls only")
        for b in range(batch):
            n = int(whole["num_detections"][b])
            for i, key in enumerate(("detection_boxes", "detection_scores", "detection_classes", "detection_masks")):
                if key in whole:
                    per_image[b][i].append(whole[key][b][:n].astype(np.float64) if i == 0 else whole[key][b][:n])
    merged = _pad(per_image, masks="detection_masks" in found)
    if merge == "none" or (len(windows) == 1 and not full):  # one window: nothing to merge across
        return merged
    from .ensemble import fuse
    return fuse([merged], merge, iou, max_detections=max(1, int(merged["num_detections"].max(initial=0))))


def _pad(per_image, masks: bool) -> Result:
    """Per-image lists of arrays -> one batch result, each image's boxes by descending score."""
    counts = [sum(len(s) for s in scores) for _, scores, _, _ in per_image]
    n = max(1, max(counts))
    batch = len(per_image)
    out = {"detection_boxes": np.zeros((batch, n, 4), np.float32),
           "detection_scores": np.zeros((batch, n), np.float32),
           "detection_classes": np.zeros((batch, n), np.float32),
           "num_detections": np.asarray(counts, np.float32)}
    for b, (boxes, scores, classes, box_masks) in enumerate(per_image):
        if not counts[b]:
            continue
        scores = np.concatenate(scores)
        order = np.argsort(-scores, kind="stable")
        out["detection_boxes"][b, :counts[b]] = np.concatenate(boxes)[order]
        out["detection_scores"][b, :counts[b]] = scores[order]
        out["detection_classes"][b, :counts[b]] = np.concatenate(classes)[order]
        if masks:
            stacked = np.concatenate(box_masks)[order]
            if "detection_masks" not in out:
                out["detection_masks"] = np.zeros((batch, n) + stacked.shape[1:], stacked.dtype)
            out["detection_masks"][b, :counts[b]] = stacked
    return out
