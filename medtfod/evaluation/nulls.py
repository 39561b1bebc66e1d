"""Why a number of metrics.json is null: metrics.json is strict JSON (no NaN), and a null
carries its reason in "nulls" ({"image_level.auc": "no image without findings in the split"})."""
from __future__ import annotations

from typing import Dict, Iterator, Tuple


def _leaves(value, path: str = "") -> Iterator[Tuple[str, object]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value and all(v is None for v in value):
        yield path, None   # an interval nothing defined
    elif isinstance(value, list):
        for k, item in enumerate(value):
            if isinstance(item, dict):
                yield from _leaves(item, f"{path}[{k}]")
            elif item is None:
                yield f"{path}[{k}]", None
    else:
        yield path, value


def _reason(path: str, positives: int, negatives: int) -> str:
    last = path.rsplit(".", 1)[-1]
    if ".edges[" in path or ".bins[" in path:
        return "an open end of the bins (infinity)"
    if path.startswith("strata.by.") and path.endswith(".bins"):
        return "the field is not binned: each value is a stratum"
    if path.startswith("strata") and ".ci95." in path:
        return "no interval: the stratum has fewer than 2 patients, or no replicate defines it"
    if path.startswith("strata"):
        return ("no bootstrap replicate of the stratum defines it" if ".ci95." in path
                else "the stratum has no lesion" if last in ("sensitivity", "mean_iou", "ap50") or ".froc." in path
                else "the stratum has no image")
    if path.startswith("coco."):
        return "pycocotools had nothing to measure (e.g. no box in that size range, or no box of the class)"
    if "auc" in last or path in ("image_level.specificity", "image_level.threshold"):
        return ("no image without findings in the split" if not negatives else
                "no image with findings in the split" if not positives else "undefined on these detections")
    if path == "image_level.sensitivity" or path.startswith(("ap.", "froc.", "at_threshold.")) or "froc" in path:
        return "no ground-truth box in the split"
    if path == "threshold.lowest_score":
        return "no detections"
    if path.startswith("ci95."):
        return "no bootstrap replicate defines it"
    return "undefined on this data"


def explain_nulls(result: dict, positives: int, negatives: int) -> Dict[str, str]:
    """{dotted path of each null in `result`: why} (images with and without findings decide
    which reason an image-level null has)."""
    return {path: _reason(path, positives, negatives) for path, value in _leaves(result) if value is None}
