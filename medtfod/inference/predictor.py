"""Running one or more exported models over a stream of images: decoding in threads, batching
images of one size, test-time augmentation and fusion, the threshold.

The SavedModel (`image_tensor` input) takes uint8 `[1, H, W, 3]`; grayscale images are
replicated to three channels, as in training. A model.onnx (`onnx_model.OnnxDetector`) takes
float32 `[N, H, W, 3]` and is called with numpy arrays: TensorFlow is imported only when a model
is a SavedModel. Its boxes are the OD API's normalized
`(ymin, xmin, ymax, xmax)`; they are converted once, here, to pixel `Box`es.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..core.annotations import Detection
from ..core.boxes import Box
from ..core.errors import UserError
from ..core.labelmap import read_label_map
from ..core.windowing import parse_window
from . import ensemble, tiling
from .inputs import load_image
from .onnx_model import RUNTIMES
from .prediction import Prediction
from .windows import choose_window


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
      window: the grey window for DICOM and 16-bit inputs, a `core.windowing` spec ('lung', '400,40',
        ...); None: the one the (first) model's training data was converted with (`ExportedModel.window`),
        else 'header'. One that differs from the model's gets a warning (`Predictor.window_warning`).
      clahe: CLAHE after the window; None: as the model's training data.
      tile: run each model on overlapping tile x tile pixel windows of each image at its native
        resolution (`tiling`; at least the model's input size); None: the whole image.
      tile_overlap: the share of a window that overlaps its neighbour, in [0, 0.9).
      tile_merge: 'nms', 'wbf' or 'none': how boxes of overlapping windows are merged.
      tile_full: also run the whole image (shrunk to the input) and merge its boxes in.
      runtime: 'tf' (the SavedModel) or 'onnx' (model.onnx with ONNX Runtime, no TensorFlow);
        None: 'onnx' for a .onnx path, else 'tf'.
    """

    min_score: Optional[float] = None
    max_per_image: int = 100
    classes: Optional[Sequence[str]] = None
    batch_size: int = 8
    workers: int = 2
    tta: Sequence[str] = ()
    fuse: Optional[str] = None
    fuse_iou: Optional[float] = None
    models: Sequence = ()  # of medtfod.inference.model.ExportedModel, or export folders
    label_map: Optional[str] = None
    window: Optional[str] = None
    clahe: Optional[bool] = None
    tile: Optional[int] = None
    tile_overlap: float = 0.2
    tile_merge: str = "nms"
    tile_full: bool = False
    runtime: Optional[str] = None

    def __post_init__(self):
        def number(name, value, low, high, low_open=False):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or \
                    value < low or value > high or (low_open and value == low):
                raise UserError(f"{name}={value!r}: give a number from {low:g} ({'exclusive' if low_open else 'inclusive'})"
                                f" to {high:g}")
        if self.min_score is not None:
            number("min_score", self.min_score, 0, 1)
        if self.fuse_iou is not None:
            number("fuse_iou", self.fuse_iou, 0, 1, low_open=True)
        for name in ("max_per_image", "batch_size", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name}={value!r}: give a whole number, 1 or more")
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise UserError(f"runtime={self.runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if self.window is not None:
            parse_window(self.window, option="window")  # a UserError naming the value, before any work
        if self.clahe is not None and not isinstance(self.clahe, bool):
            raise UserError(f"clahe={self.clahe!r}: give True, False or None (as the model's training data)")
        if self.fuse is not None and self.fuse not in ensemble.METHODS:
            raise UserError(f"fuse={self.fuse!r}: choose one of {', '.join(ensemble.METHODS)}")
        if self.tile is not None:
            tiling.check_tiling(self.tile, self.tile_overlap, self.tile_merge)
        elif (self.tile_overlap, self.tile_merge, self.tile_full) != (0.2, "nms", False):
            raise UserError("tile_overlap, tile_merge and tile_full go with tile=PX (without it nothing is tiled)")
        for name in ("tta", "classes"):  # a lone name is a one-item list, not its letters
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))

    @property
    def tiling(self) -> Optional[dict]:
        """How these options tile, as `calibrate` records it beside an operating point (None: whole
        images). A threshold chosen on one tiling's scores does not hold for another's."""
        if self.tile is None:
            return None
        return {"tile": self.tile, "overlap": self.tile_overlap, "merge": self.tile_merge, "full": self.tile_full}


def model_input(detect_fn, batch_size: int) -> Tuple[int, type]:
    """(images per model call, pixel dtype) for a loaded SavedModel: `batch_size` float32 images
    for a `float_image_tensor` export (signature `[None, H, W, 3]`), one uint8 image for the
    default `image_tensor` export (fixed at `[1, H, W, 3]`).

    Raises UserError for exports that take encoded strings or tf.Examples.
    """
    if hasattr(detect_fn, "model_input"):  # an OnnxDetector
        return detect_fn.model_input(batch_size)
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
        self.min_score, self.min_score_source = self.models[0].min_score(options.min_score, fused=self.views > 1,
                                                                         tiling=options.tiling)
        self.label_map = read_label_map(options.label_map) if options.label_map else self.models[0].label_map
        if len(self.models) > 1:
            ensemble.check_label_maps([m.path for m in self.models], [m.label_map for m in self.models])
        unknown = [c for c in options.classes or () if c not in self.label_map.ids]
        if unknown:
            raise UserError(f"--classes: {', '.join(unknown)} not in the label map ({', '.join(self.label_map.names)})")
        if options.tile is not None:
            for m in self.models:
                if m.input_pixels:
                    tiling.check_tile_size(options.tile, m.input_pixels, m.path)
        self.tile_iou = self.fuse_iou or ensemble.default_iou([m.nms_iou for m in self.models])
        self._detect_fns = detect_fns
        self.window, self.window_source, self.window_warning = choose_window(self.models, options)

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
        detect_fns = self.detect_fns
        tf = None  # numpy in and out when every model is a model.onnx
        if not all(hasattr(fn, "model_input") for fn in detect_fns):
            from ..odapi.runtime import import_tensorflow
            tf = import_tensorflow(verbose=False)
        inputs_of = [model_input(fn, self.options.batch_size) for fn in detect_fns]
        capacity = min(c for c, _ in inputs_of)
        self.batch = capacity
        own_pool = pool is None
        pool = pool or ThreadPoolExecutor(max_workers=max(1, self.options.workers))
        try:
            batch = []  # (index, name, source, image)
            ahead = max(4, 2 * capacity)  # decodes kept running ahead of the model
            loads = [pool.submit(load_image, source, self.window) for _, source in inputs[:ahead]]
            for i, (name, source) in enumerate(inputs):
                if i + ahead < len(inputs):
                    loads.append(pool.submit(load_image, inputs[i + ahead][1], self.window))
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
        results, calls = [], []  # calls: the SavedModel views, run below (at once when several models)
        opts = self.options
        hflip = "hflip" in opts.tta
        for fn, (capacity, dtype) in zip(detect_fns, inputs_of):
            def run(px, fn=fn, dtype=dtype):
                return _call(tf, fn, np.ascontiguousarray(px).astype(dtype, copy=False))
            if opts.tile is not None or hasattr(fn, "model_input"):  # tiled, or ONNX Runtime (numpy in and out)
                def view(px, run=run, capacity=capacity):
                    if opts.tile is None:
                        return run(px)
                    return tiling.detect_tiled(run, px, capacity, opts.tile, opts.tile_overlap, opts.tile_merge,
                                               self.tile_iou, full=opts.tile_full)
                results.append(view(pixels))
                if hflip:
                    results.append(ensemble.hflip_back(view(pixels[:, :, ::-1])))
                continue
            calls.append((fn, dtype))
        if calls:
            tensors = {}  # per input dtype: the batch (made once)
            for _, dtype in calls:
                if dtype not in tensors:
                    tensors[dtype] = tf.constant(pixels.astype(dtype, copy=False))
            # (model, input, mirrored): per model its batch, then with TTA the batch's mirror image
            units = [(fn, tensors[dtype], k == 1) for fn, dtype in calls for k in range(1 + hflip)]

            def view(unit):
                fn, x, mirrored = unit
                if mirrored:  # made in the view's own thread, beside the plain view's call
                    x = tf.reverse(x, axis=[2])  # [B, H, W, 3]: W mirrored
                found = {k: v.numpy() for k, v in fn(x).items()}
                return ensemble.hflip_back(found) if mirrored else found
            if len(units) > 1:  # side by side in threads: one call leaves the cores idle between its ops
                with ThreadPoolExecutor(max_workers=len(units)) as side_by_side:
                    results.extend(side_by_side.map(view, units))
            else:
                results.append(view(units[0]))
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
                class_ids=self.label_map.ids, window=self.window))
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


def _call(tf, fn, pixels: np.ndarray) -> dict:
    """One model call on `pixels` [N, H, W, 3]: {output name: numpy array}. An `OnnxDetector`
    takes and returns numpy; a SavedModel (`tf` loaded) takes and returns tensors."""
    if hasattr(fn, "model_input"):
        return fn(pixels)
    return {k: v.numpy() for k, v in fn(tf.constant(pixels)).items()}
