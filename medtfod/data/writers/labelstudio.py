"""Label Studio import tasks with the model's boxes as `predictions` (RectangleLabels).

Label Studio convention (converted here, once): a region's `value` holds x, y, width and
height in percent (0-100) of the image's `original_width`/`original_height`, (x, y) the
top-left corner; our boxes are float pixels, so x = 100 * xmin / width, and so on. `from_name`
and `to_name` name the controls of `labeling_config` ("label" and "image"), which is the
labeling interface to create the project with. Each region carries its detection's `score`;
the prediction's `score` is the image's highest one (Label Studio sorts tasks by it).

Images are referred to as `url_prefix + name`; the default serves them from Label Studio's
local storage (start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to the folder detect read the images from).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from ...core.annotations import Detection

DEFAULT_URL_PREFIX = "/data/local-files/?d="
DECIMALS = 6


def labeling_config(labels: Sequence[str]) -> str:
    """The labeling interface XML whose control names the tasks' regions use."""
    lines = ["<View>", '  <Image name="image" value="$image"/>', '  <RectangleLabels name="label" toName="image">']
    lines += [f"    <Label value={quoteattr(label)}/>" for label in labels]
    return "\n".join(lines + ["  </RectangleLabels>", "</View>", ""])


def _pct(value: float, size: int) -> float:
    return round(100.0 * value / size, DECIMALS)


def tasks(images: Sequence[Tuple[str, int, int, List[Detection]]], model_version: str,
          url_prefix: str = DEFAULT_URL_PREFIX) -> list:
    """One task per (name, width, height, detections) image, in that order."""
    out = []
    for k, (name, width, height, found) in enumerate(images, start=1):
        regions = [{
            "id": f"medtfod-{k}-{j}", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "value": {"x": _pct(d.box.xmin, width), "y": _pct(d.box.ymin, height),
                      "width": _pct(d.box.xmax - d.box.xmin, width), "height": _pct(d.box.ymax - d.box.ymin, height),
                      "rotation": 0, "rectanglelabels": [d.label]},
            "score": round(float(d.score), DECIMALS),
        } for j, d in enumerate(found, start=1)]
        task = {"data": {"image": url_prefix + quote(name.replace("\\", "/"), safe="/")},
                "predictions": [{"model_version": model_version, "result": regions,
                                 "score": max((r["score"] for r in regions), default=0.0)}]}
        out.append(task)
    return out
