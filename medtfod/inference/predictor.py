"""Running one or more exported models over a stream of images: decoding in threads, batching
images of one size, test-time augmentation and fusion, the threshold.

The SavedModel (`image_tensor` input) takes uint8 `[1, H, W, 3]`; grayscale images are
replicated to three channels, as in training. Its boxes are the OD API's normalized
`(ymin, xmin, ymax, xmax)`; they are converted once, here, to pixel `Box`es.
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..core.annotations import Detection
from ..core.boxes import Box
from ..core.errors import UserError
from ..core.labelmap import read_label_map
from . import ensemble
from .inputs import load_image


@dataclass(frozen=True)
class PredictOptions:
    """How to run the model(s).

    Attributes:
      min_score: keep detections scoring at least this; None: the export's calibrated operating
        point, else 0.5 (a fused score: 0.5).
      max_per_image: keep at most this many detections per image (highest scores first).
      classes: keep only these labels (None: all).
      batch_size: images per model call, for exports that take batches.
      workers: threads decoding the next images (and, in `detect`, drawing the previous ones).
      tta: test-time augmentations, from `ensemble.TTA` ('hflip').
      fuse: 'wbf', 'nms' or 'mean' to fuse several models/views (default 'wbf' when there are).
      fuse_iou: the IoU at which boxes of different views are one finding (default: the models'
        own NMS IoU).
      models: further `ExportedModel`s fused with the first (an ensemble).
      label_map: a label map file to name classes with instead of the export's own.
    """

    min_score: Optional[float] = None
    max_per_image: int = 100
    classes: Optional[Sequence[str]] = None
    batch_size: int = 8
    workers: int = 2
    tta: Sequence[str] = ()
    fuse: Optional[str] = None
    fuse_iou: Optional[float] = None
    models: Sequence = ()  # of medtfod.inference.model.ExportedModel
    label_map: Optional[str] = None


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
        [(label, Box)] outlined in white)."""
        from .outputs import render
        image = self.image if self.image is not None else load_image(self.source)[0]
        if image is None:
            raise UserError(f"{self.name}: cannot be drawn ({self.error})")
        class_ids = class_ids or self.class_ids or {label: i + 1 for i, label in enumerate(dict.fromkeys(self.labels))}
        bitmaps = self.masks or []
        return render(image, self.detections, ground_truth, bitmaps, class_ids)

    def save(self, path: str, ground_truth=None, class_ids=None) -> str:
        """Write the drawn copy to `path` (PNG, or JPEG for a .jpg/.jpeg path); returns the path."""
        from ..core import atomic
        drawn = self.draw(ground_truth, class_ids)
        buffer = io.BytesIO()
        is_jpeg = path.lower().endswith((".jpg", ".jpeg"))
        drawn.save(buffer, format="JPEG" if is_jpeg else "PNG", **({"quality": 90} if is_jpeg else {}))
        atomic.write_file(path, buffer.getvalue())
        return path


def model_input(detect_fn, batch_size: int) -> Tuple[int, type]:
    """(images per model call, pixel dtype) for a loaded SavedModel: `batch_size` float32 images
    for a `float_image_tensor` export (signature `[None, H, W, 3]`), one uint8 image for the
    default `image_tensor` export (fixed at `[1, H, W, 3]`).

    Raises UserError for exports that take encoded strings or tf.Examples.
    """
    signature = getattr(detect_fn, "signatures", {}).get("serving_default")
    if signature is None:  # a plain function (tests): one uint8 image at a time
        return 1, np.uint8
    spec = next(iter(signature.structured_input_signature[1].values()))
    if spec.shape.rank != 4 or spec.dtype.name not in ("uint8", "float32"):
        raise UserError(f"detect runs image_tensor or float_image_tensor exports; this one takes {spec.dtype.name} "
                        f"{spec.shape} (export again without --input-type, or with float_image_tensor)")
    dtype = np.float32 if spec.dtype.name == "float32" else np.uint8
    return (max(1, batch_size) if spec.shape[0] is None else 1), dtype


class Predictor:
    """One or more exported models (fused when several, or with TTA) and how to run them.

    Args:
      models: the `ExportedModel`s (one, or an ensemble sharing one label map).
      options: `PredictOptions`.
      detect_fns: loaded SavedModels when the caller has them already (benchmarks); by default
        each model's `load()`.
    """

    def __init__(self, models: Sequence, options: PredictOptions, detect_fns=None):
        self.models = list(models)
        self.options = options
        self.views = len(self.models) * (1 + len(options.tta))
        unknown_tta = [t for t in options.tta if t not in ensemble.TTA]
        if unknown_tta:
            raise UserError(f"--tta {unknown_tta[0]!r}: choose from {', '.join(ensemble.TTA)}")
        self.fuse, self.fuse_iou = options.fuse, options.fuse_iou
        if self.views > 1:
            self.fuse = self.fuse or "wbf"
            self.fuse_iou = self.fuse_iou or ensemble.default_iou([m.nms_iou for m in self.models])
        self.min_score, self.min_score_source = self.models[0].min_score(options.min_score, fused=self.views > 1)
        self.label_map = read_label_map(options.label_map) if options.label_map else self.models[0].label_map
        if len(self.models) > 1:
            ensemble.check_label_maps([m.path for m in self.models], [m.label_map for m in self.models])
        unknown = [c for c in options.classes or () if c not in self.label_map.ids]
        if unknown:
            raise UserError(f"--classes: {', '.join(unknown)} not in the label map ({', '.join(self.label_map.names)})")
        self._detect_fns = detect_fns

    @property
    def detect_fns(self) -> list:
        if self._detect_fns is None:
            self._detect_fns = [m.load() for m in self.models]
        return self._detect_fns

    def run(self, inputs: Sequence[Tuple[str, object]], pool: Optional[ThreadPoolExecutor] = None,
            top_scores: bool = False, keep_images: bool = False) -> Iterator[Prediction]:
        """Predictions for `inputs` [(name, source)], yielded as their batch finishes (an unreadable
        image at once, with its `error`): every input once, in input order within a batch.

        `pool` decodes the next images while the model runs (one of `workers` threads is made when
        not given); `top_scores` fills each prediction's `top_score`; `keep_images` leaves the
        decoded image on the prediction (for drawing).
        """
        from ..odapi.runtime import import_tensorflow
        tf = import_tensorflow(verbose=False)
        detect_fns = self.detect_fns
        inputs_of = [model_input(fn, self.options.batch_size) for fn in detect_fns]
        capacity = min(c for c, _ in inputs_of)
        self.batch = capacity
        own_pool = pool is None
        pool = pool or ThreadPoolExecutor(max_workers=max(1, self.options.workers))
        try:
            batch = []  # (index, name, source, image)
            ahead = max(4, 2 * capacity)  # decodes kept running ahead of the model
            loads = [pool.submit(load_image, source) for _, source in inputs[:ahead]]
            for i, (name, source) in enumerate(inputs):
                if i + ahead < len(inputs):
                    loads.append(pool.submit(load_image, inputs[i + ahead][1]))
                image, error = loads[i].result()
                loads[i] = None
                if image is None:
                    yield Prediction(i, name, source, error=error, class_ids=self.label_map.ids)
                    continue
                if batch and batch[0][3].size != image.size:  # a batch holds one image size
                    yield from self._run_batch(tf, detect_fns, inputs_of, batch, top_scores, keep_images)
                batch.append((i, name, source, image))
                if len(batch) == capacity:
                    yield from self._run_batch(tf, detect_fns, inputs_of, batch, top_scores, keep_images)
            if batch:
                yield from self._run_batch(tf, detect_fns, inputs_of, batch, top_scores, keep_images)
        finally:
            if own_pool:
                pool.shutdown()

    def _run_batch(self, tf, detect_fns, inputs_of, batch, top_scores, keep_images) -> Iterator[Prediction]:
        """One model call (per model and view) on the images in `batch`, all of one size."""
        pixels = np.stack([np.asarray(image) for _, _, _, image in batch])
        results = []
        for fn, (_, dtype) in zip(detect_fns, inputs_of):
            results.append({k: v.numpy() for k, v in fn(tf.constant(pixels.astype(dtype, copy=False))).items()})
            if "hflip" in self.options.tta:
                flipped = fn(tf.constant(np.ascontiguousarray(pixels[:, :, ::-1]).astype(dtype, copy=False)))
                results.append(ensemble.hflip_back({k: v.numpy() for k, v in flipped.items()}))
        result = results[0] if len(results) == 1 else ensemble.fuse(results, self.fuse, self.fuse_iou,
                                                                    self.options.max_per_image)
        done = []
        for j, (index, name, source, image) in enumerate(batch):
            found, keep = self._keep(result, j, name, image.size)
            w, h = image.size
            done.append(Prediction(
                index, name, source, w, h, found,
                box_masks=result["detection_masks"][j][keep] if "detection_masks" in result else None,
                top_score=self._top_score(result, j) if top_scores else None,
                channels=image.info.get("channels", 3), image=image if keep_images else None,
                class_ids=self.label_map.ids))
        batch.clear()
        return iter(done)

    def _keep(self, result, j: int, name: str, size) -> Tuple[List[Detection], List[int]]:
        """`Detection`s of image j (`name`) of a batch result that pass the filters, and their
        indices in the result."""
        w, h = size
        classes, max_per_image = self.options.classes, self.options.max_per_image
        n = int(result["num_detections"][j])
        found, keep = [], []
        for k, (yxyx, score, cls) in enumerate(zip(result["detection_boxes"][j][:n],
                                                   result["detection_scores"][j][:n],
                                                   result["detection_classes"][j][:n])):
            label = self.label_map.name_of(int(cls))
            score = round(float(score), 6)  # as detections.csv writes it, so a threshold read from it means the same
            if score < self.min_score or (classes and label not in classes) or len(found) >= max_per_image:
                continue
            found.append(Detection(name, label, score, Box.from_normalized_yxyx(yxyx, w, h)))
            keep.append(k)
        return found, keep

    def _top_score(self, result, j: int) -> float:
        """The highest score of image j's detections (of the wanted classes), before any threshold."""
        classes = self.options.classes
        n = int(result["num_detections"][j])
        scores = [round(float(score), 6) for score, cls in zip(result["detection_scores"][j][:n],
                                                                result["detection_classes"][j][:n])
                  if not classes or self.label_map.name_of(int(cls)) in classes]
        return max(scores, default=0.0)


class Predictions(list):
    """The predictions of `ExportedModel.predict`, in input order, with the ways to write them out."""

    def __init__(self, predictions: Iterable[Prediction], predictor: Predictor, ground_truth=None):
        super().__init__(sorted(predictions, key=lambda p: p.index))
        self.predictor = predictor
        self.ground_truth = ground_truth

    def to_rows(self) -> list:
        """Every detection as (image, label, score, xmin, ymin, xmax, ymax), detections.csv's columns."""
        return [row for p in self for row in p.to_rows()]

    def save(self, out: str, draw: bool = True, draw_format: Optional[str] = None) -> str:
        """Write `out/detections.csv`, `detections.json`, `coco_results.json`, `images.csv` and (with
        `draw`) the drawn copies, exactly as `medtfod detect` writes them; returns `out`."""
        from .outputs import save_predictions
        save_predictions(self, out, self.predictor.label_map, self.ground_truth, draw=draw, draw_format=draw_format)
        return out


def named_inputs(images, split: Optional[str] = None):
    """([(name, source)], ground truth or None, {option: input} outputs must stay clear of) for
    what `predict` accepts: a path (file, folder or .txt list), paths, arrays, PIL images, or a
    Dataset with a split."""
    import os

    from ..data.dataset import Dataset
    from .inputs import resolve_inputs
    if isinstance(images, Dataset):
        if split is None:
            raise UserError(f"predict on a Dataset needs split= (one of {', '.join(images.splits)})")
        return resolve_inputs(None, images.path, split)
    if isinstance(images, (str, os.PathLike)):
        path = os.fspath(images)
        if os.path.isfile(path) and not path.lower().endswith(".txt"):
            return [(os.path.basename(path), path)], None, {"images": path}
        return resolve_inputs(path)
    items = list(images)
    if all(isinstance(i, (str, os.PathLike)) for i in items):
        from ..core.fence import safe_names
        paths = [os.fspath(i) for i in items]
        return list(zip(safe_names(paths), paths)), None, {}
    return [(f"image{k}.png", item) for k, item in enumerate(items)], None, {}
