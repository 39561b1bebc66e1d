"""What `ExportedModel.predict` returns: one `Prediction` per image, in a `Predictions` list
that writes them out as `medtfod detect` does. Boxes are pixel `Box`es (float xmin, ymin,
xmax, ymax, origin at the top-left corner)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple

import numpy as np

from ..core.annotations import Detection
from ..core.errors import UserError
from .inputs import load_image


@dataclass
class Prediction:
    """One image's result.

    Attributes:
      index: its position in the input.
      name: its output name (a relative path, a dataset image name, or `image<k>.png` for arrays).
      source: where its pixels came from (a path, a bytes loader, an array or a PIL image).
      width, height: pixels (0 when unreadable).
      detections: `Detection(image, label, score, Box)` that passed the threshold, best first.
      box_masks: Mask R-CNN's box-relative masks [N, h, w] (float, 0..1) for those detections, or None.
      error: why the image could not be read, else None.
      top_score: the highest score before the threshold (only when the predictor was asked for it).
      channels: 1 for a grayscale source, 3 for colour.
      image: the decoded RGB image while `detect` still needs it; None afterwards.
      class_ids: label -> id of the label map that named the detections (their drawing colours).
      inputs: {what: path} of the files and folders the prediction was read from, which `save`
        never writes into.
      window: the `core.windowing.Window` its DICOM/16-bit pixels were made with (a redraw decodes
        the source again with it); None: 'header'.
    """

    index: int
    name: str
    source: object
    width: int = 0
    height: int = 0
    detections: List[Detection] = field(default_factory=list)
    box_masks: Optional[np.ndarray] = None
    error: Optional[str] = None
    top_score: Optional[float] = None
    channels: int = 3
    image: object = None
    class_ids: Optional[dict] = None
    inputs: Optional[dict] = None
    window: object = None

    @property
    def boxes(self) -> np.ndarray:
        """[N, 4] float pixel (xmin, ymin, xmax, ymax)."""
        return np.array([[d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax] for d in self.detections],
                        np.float64).reshape(-1, 4)

    @property
    def labels(self) -> List[str]:
        return [d.label for d in self.detections]

    @property
    def scores(self) -> np.ndarray:
        return np.array([d.score for d in self.detections], np.float64)

    @property
    def masks(self) -> Optional[List[np.ndarray]]:
        """Whole-image boolean [H, W] masks, one per detection (Mask R-CNN), else None."""
        if self.box_masks is None:
            return None
        from ..core.masks import paste_box_mask
        return [paste_box_mask(m, d.box, self.width, self.height) for m, d in zip(self.box_masks, self.detections)]

    def to_rows(self) -> List[Tuple[str, str, float, float, float, float, float]]:
        """(image, label, score, xmin, ymin, xmax, ymax) per detection, as detections.csv holds them."""
        return [(d.image, d.label, round(d.score, 6), *(round(v, 2) for v in (d.box.xmin, d.box.ymin, d.box.xmax,
                                                                             d.box.ymax)))
                for d in self.detections]

    def draw(self, ground_truth=None, class_ids=None):
        """A PIL copy of the image with its detections drawn (masks blended in; `ground_truth`
        [(label, Box)], e.g. `Dataset.ground_truth(split)[name]`, outlined in white)."""
        from .outputs import render
        if ground_truth is not None and not all(isinstance(g, tuple) and len(g) == 2 for g in ground_truth):
            raise UserError("draw(ground_truth=...): give this image's [(label, Box), ...], e.g. "
                            "dataset.ground_truth(split)[prediction.name]")
        image = self.image if self.image is not None else load_image(self.source, self.window)[0]
        if image is None:
            raise UserError(f"{self.name}: cannot be drawn ({self.error})")
        class_ids = class_ids or self.class_ids or {label: i + 1 for i, label in enumerate(dict.fromkeys(self.labels))}
        bitmaps = self.masks or []
        return render(image, self.detections, ground_truth, bitmaps, class_ids)

    def save(self, path: str, ground_truth=None, class_ids=None) -> str:
        """Write the drawn copy to `path` (.png, or .jpg/.jpeg for JPEG quality 90); returns the path.
        Refused when `path` is the image itself or lies in a folder the prediction was read from."""
        from ..core import atomic, fence
        ext = os.path.splitext(path)[1].lower()
        if ext not in (".png", ".jpg", ".jpeg"):
            raise UserError(f"save {path}: give a .png or .jpg file name")
        fence.need_file("save", path)
        fence.check_outputs({"save": path}, {**(self.inputs or {}), **({"the image": os.fspath(self.source)}
                                                                      if isinstance(self.source, (str, os.PathLike))
                                                                      else {})})
        from .outputs import encoded
        atomic.write_file(path, encoded(self.draw(ground_truth, class_ids), path))
        return path


class Predictions(list):
    """The predictions of `ExportedModel.predict`, in input order, with the ways to write them out."""

    def __init__(self, predictions: Iterable[Prediction], label_map, ground_truth=None, inputs=None):
        super().__init__(sorted(predictions, key=lambda p: p.index))
        self.label_map = label_map
        self.ground_truth = ground_truth
        self.inputs = dict(inputs or {})
        for p in self:
            p.inputs = self.inputs

    def __getitem__(self, i):
        got = super().__getitem__(i)
        return Predictions(got, self.label_map, self.ground_truth, self.inputs) if isinstance(i, slice) else got

    def to_rows(self) -> list:
        """Every detection as (image, label, score, xmin, ymin, xmax, ymax), detections.csv's columns."""
        return [row for p in self for row in p.to_rows()]

    def save(self, out: str, draw: bool = True, draw_format: Optional[str] = None) -> str:
        """Write `out/detections.csv`, `detections.json`, `coco_results.json`, `images.csv` and (with
        `draw`) the drawn copies, exactly as `medtfod detect` writes them; returns `out`. Refused,
        before anything is written, when `out` is or lies in a folder the images were read from."""
        from ..core import fence
        from .outputs import check_drawn_names, save_predictions
        fence.need_folder("save", out)
        fence.check_outputs({"save": out}, self.inputs)
        if draw:
            check_drawn_names([p.name for p in self], draw_format)
        save_predictions(self, out, self.label_map, self.ground_truth, draw=draw, draw_format=draw_format)
        return out
