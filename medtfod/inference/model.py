"""`ExportedModel`: a `medtfod export` folder as one object.

It knows its own layout, so no caller joins these onto a path again:

    EXPORT/saved_model/          the SavedModel (`exporter_lib_v2`)
    EXPORT/label_map.pbtxt       the classes the model was trained on
    EXPORT/pipeline.config       the config it was trained with (family, input size, NMS IoU)
    EXPORT/export.json           what was exported (step, checkpoint, the training data's grey window)
    EXPORT/operating_point.json  the score threshold `medtfod calibrate` chose (optional)

`predict` runs the model on images and returns `Prediction`s whose boxes are pixel `Box`es
(float xmin, ymin, xmax, ymax, origin at the top-left corner).
"""
from __future__ import annotations

import json
import os
from typing import Optional, Tuple

from ..core.errors import UserError
from ..core.labelmap import LabelMap, read_label_map

DEFAULT_MIN_SCORE = 0.5


def saved_model_dir(model: str) -> str:
    """The SavedModel folder of `model` (an export folder or its saved_model/)."""
    for candidate in (os.path.join(model, "saved_model"), model):
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise UserError(f"no SavedModel in {model} (expected saved_model/saved_model.pb); run medtfod export")


def export_dir(model: str) -> str:
    """The export folder of `model` (the folder or its saved_model/), where the label map and
    the operating point live."""
    return os.path.dirname(saved_model_dir(model).rstrip("/\\"))


class ExportedModel:
    """An export folder (`medtfod export` output).

    Args:
      path: the export folder or its `saved_model/`.

    Raises:
      UserError: no SavedModel there.
    """

    def __init__(self, path: str):
        self.saved_model_dir = saved_model_dir(os.fspath(path))
        self.path = export_dir(os.fspath(path))
        self._label_map: Optional[LabelMap] = None
        self._detect_fn = None

    def __repr__(self) -> str:
        return f"ExportedModel({self.path!r})"

    @classmethod
    def export(cls, config: str, model_dir: str, out: str, *, checkpoint: Optional[str] = None,
               input_type: str = "image_tensor", tflite: bool = False, verbose: bool = False) -> "ExportedModel":
        """Export a training run (`medtfod export`: the OD API's `exporter_lib_v2`) and open the result.

        Args:
          config: the run's pipeline.config.
          model_dir: the training folder.
          out: the export folder to write (assembled aside, moved into place when complete).
          checkpoint: 'best' (the default when the run kept one), 'latest' or a checkpoint prefix.
          input_type: 'image_tensor' (uint8, one image per call) or 'float_image_tensor' (batches).
          tflite: also write a TFLite model (SSD only).
          verbose: show TensorFlow's own output.
        """
        from ..core.fence import check_outputs
        from ..odapi.export import export
        from ..training.config import data_inputs
        check_outputs({"out": out}, dict(data_inputs(config), config=config, model_dir=model_dir))
        export(config, model_dir, out, input_type=input_type, verbose=verbose, tflite=tflite, checkpoint=checkpoint)
        return cls(out)

    @property
    def label_map_path(self) -> str:
        return os.path.join(self.path, "label_map.pbtxt")

    @property
    def pipeline_config_path(self) -> str:
        return os.path.join(self.path, "pipeline.config")

    @property
    def label_map(self) -> LabelMap:
        if self._label_map is None:
            self._label_map = read_label_map(self.label_map_path)
        return self._label_map

    @property
    def info(self) -> dict:
        """{'family': e.g. 'ssd (ssd_mobilenet_v2_fpn_keras)', 'input': e.g. '320x320 px',
        'step': the exported checkpoint's step}, 'unknown'/None where the folder does not say."""
        info = {"family": "unknown", "input": "unknown", "step": None}
        if os.path.isfile(self.pipeline_config_path):
            from ..odapi.protos import read_pipeline_config
            model = read_pipeline_config(self.pipeline_config_path).model
            kind = model.WhichOneof("model")
            arch = getattr(model, kind)
            info["family"] = f"{kind} ({arch.feature_extractor.type})"
            resizer = arch.image_resizer
            which = resizer.WhichOneof("image_resizer_oneof")
            if which == "fixed_shape_resizer":
                info["input"] = f"{resizer.fixed_shape_resizer.width}x{resizer.fixed_shape_resizer.height} px"
            elif which == "keep_aspect_ratio_resizer":
                r = resizer.keep_aspect_ratio_resizer
                info["input"] = f"keep aspect, {r.min_dimension}-{r.max_dimension} px"
        record = os.path.join(self.path, "export.json")  # written by medtfod export: the exported step
        if os.path.isfile(record):
            with open(record, encoding="utf-8") as f:
                info["step"] = json.load(f).get("step")
        return info

    @property
    def window(self) -> Optional[dict]:
        """{'window': spec, 'clahe': bool} of the grey window the training data was converted with
        (`core.windowing`): what export.json recorded at export time, else what the manifest of the
        dataset named by pipeline.config's train input says (if it is still there); None when
        neither says (an export from before windows were recorded, of data found nowhere)."""
        record = os.path.join(self.path, "export.json")
        if os.path.isfile(record):
            with open(record, encoding="utf-8") as f:
                data = json.load(f)
            if isinstance(data.get("window"), str):
                return {"window": data["window"], "clahe": bool(data.get("clahe", False))}
        if os.path.isfile(self.pipeline_config_path):
            from ..data.manifest import recorded_window
            from ..odapi.protos import read_pipeline_config
            config = read_pipeline_config(self.pipeline_config_path)
            found = recorded_window(config.train_input_reader.tf_record_input_reader.input_path)
            if found is not None:
                return {"window": found["window"], "clahe": found["clahe"]}
        return None

    @property
    def input_pixels(self) -> Optional[int]:
        """The model's input size in pixels: a fixed shape's larger side, a keep-aspect-ratio
        resizer's min_dimension; None when the folder has no pipeline.config."""
        if not os.path.isfile(self.pipeline_config_path):
            return None
        from ..odapi.protos import read_pipeline_config
        model = read_pipeline_config(self.pipeline_config_path).model
        resizer = getattr(model, model.WhichOneof("model")).image_resizer
        if resizer.WhichOneof("image_resizer_oneof") == "fixed_shape_resizer":
            return max(resizer.fixed_shape_resizer.width, resizer.fixed_shape_resizer.height)
        if resizer.WhichOneof("image_resizer_oneof") == "keep_aspect_ratio_resizer":
            return resizer.keep_aspect_ratio_resizer.min_dimension
        return None

    @property
    def family(self) -> str:
        return self.info["family"]

    @property
    def nms_iou(self) -> Optional[float]:
        """The IoU threshold of the model's own (second-stage) NMS, from its pipeline.config (None
        when the folder has none, or for a family without one)."""
        if not os.path.isfile(self.pipeline_config_path):
            return None
        from ..odapi import protos
        model = protos.read_pipeline_config(self.pipeline_config_path).model
        kind = model.WhichOneof("model")
        if kind == "ssd":
            return model.ssd.post_processing.batch_non_max_suppression.iou_threshold or None
        if kind == "faster_rcnn":
            return model.faster_rcnn.second_stage_post_processing.batch_non_max_suppression.iou_threshold or None
        return None

    @property
    def operating_point(self) -> Optional[dict]:
        """The threshold `medtfod calibrate` stored (with the sensitivity and FP/image it gave), or None."""
        from .operating_point import read_operating_point
        return read_operating_point(self.path)

    def min_score(self, min_score: Optional[float] = None, fused: bool = False) -> Tuple[float, str]:
        """The threshold to use and where it came from: `min_score` when given, else the operating
        point `medtfod calibrate` stored here, else DEFAULT_MIN_SCORE. A `fused` score (several
        models or TTA views) has no operating point: a calibration belongs to one model's own scores."""
        from .operating_point import describe
        if min_score is not None:
            return min_score, "--min-score"
        if fused:
            return DEFAULT_MIN_SCORE, "the default (a fused score has no calibration yet)"
        point = self.operating_point
        if point:
            return float(point["min_score"]), f"the calibrated operating point ({describe(point)})"
        return DEFAULT_MIN_SCORE, "the default (run medtfod calibrate to choose one for your data)"

    def load(self):
        """The loaded SavedModel (`tf.saved_model.load`), loaded once and kept."""
        if self._detect_fn is None:
            from ..odapi.runtime import import_tensorflow
            tf = import_tensorflow(verbose=False)
            self._detect_fn = tf.saved_model.load(self.saved_model_dir)
        return self._detect_fn

    def predict(self, images, split: Optional[str] = None, min_score: Optional[float] = None, batch_size: int = 8,
                *, options=None):
        """Run the model on `images` and return one `Prediction` per image, in input order.

        Args:
          images: an image file, a folder (recursive) or a .txt list of paths; a numpy array (H, W)
            or (H, W, 3) uint8, or (H, W) uint16, a batch [N, H, W, 3], a PIL image or a file's
            bytes; a list of any of these; or a `medtfod.Dataset` (or its folder) with `split`.
          split: the dataset split, when `images` is a dataset.
          min_score: the score threshold; default: the calibrated operating point, else 0.5.
          batch_size: images per model call (a float_image_tensor export takes batches).
          options: a `medtfod.inference.predictor.PredictOptions` for everything else (window and
            clahe for DICOM and 16-bit inputs (default: the training data's, `window`), classes,
            max_per_image, tta, and more models, exports or their folders, to fuse with this
            one); its min_score and
            batch_size are overridden by the arguments above when those are given.

        Returns:
          a `Predictions` list: each item's `detections` are `Detection(image, label, score, Box)`;
          `to_rows()`, `save(folder)` and each prediction's `draw()` / `save(path)` write them out.
        """
        import dataclasses

        from .inputs import predict_inputs
        from .prediction import Predictions
        from .predictor import PredictOptions, Predictor
        options = options if options is not None else PredictOptions()
        if not isinstance(options, PredictOptions):
            raise UserError(f"options must be a medtfod.PredictOptions(...), not {type(options).__name__}")
        changes = {"batch_size": batch_size}
        if min_score is not None:
            changes["min_score"] = min_score
        options = dataclasses.replace(options, **changes)
        inputs, ground_truth, fenced = predict_inputs(images, split)
        models = [self, *(m if isinstance(m, ExportedModel) else ExportedModel(m) for m in options.models)]
        predictor = Predictor(models, options)
        if predictor.window_warning:
            import warnings
            warnings.warn(predictor.window_warning, UserWarning, stacklevel=2)
        return Predictions(predictor.run(inputs), predictor.label_map, ground_truth,
                           {**fenced, **{f"model {m.path}": m.path for m in models}})
