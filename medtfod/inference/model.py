"""`ExportedModel`: a `medtfod export` folder as one object.

It knows its own layout, so no caller joins these onto a path again:

    EXPORT/saved_model/          the SavedModel (`exporter_lib_v2`)
    EXPORT/label_map.pbtxt       the classes the model was trained on
    EXPORT/pipeline.config       the config it was trained with (family, input size, NMS IoU)
    EXPORT/export.json           what was exported (step, checkpoint, the training data's grey window)
    EXPORT/operating_point.json  the score threshold `medtfod calibrate` chose (optional)
    EXPORT/model.onnx            the same model for ONNX Runtime (`export --onnx`, `to_onnx`; optional)

With `runtime='onnx'` (or a path to model.onnx) it runs model.onnx with ONNX Runtime and never
imports TensorFlow or the OD API; the SavedModel folder may then be absent.

`predict` runs the model on images and returns `Prediction`s whose boxes are pixel `Box`es
(float xmin, ymin, xmax, ymax, origin at the top-left corner).
"""
from __future__ import annotations

import json
import os
from typing import Optional, Tuple

from ..core.errors import UserError
from ..core.labelmap import LabelMap, read_label_map
from .onnx_model import EXPORT_HINT, ONNX_NAME, RUNTIMES

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


def config_facts(pipeline_config) -> dict:
    """{'family': e.g. 'ssd (ssd_mobilenet_v2_fpn_keras)', 'input': e.g. '320x320 px', 'input_pixels': a
    fixed shape's larger side or a keep-aspect resizer's min_dimension (None otherwise), 'nms_iou': the
    (second-stage) NMS IoU or None} of a parsed pipeline config."""
    model = pipeline_config.model
    kind = model.WhichOneof("model")
    arch = getattr(model, kind)
    facts = {"family": f"{kind} ({arch.feature_extractor.type})", "input": "unknown", "input_pixels": None,
             "nms_iou": None}
    resizer = arch.image_resizer
    which = resizer.WhichOneof("image_resizer_oneof")
    if which == "fixed_shape_resizer":
        facts["input"] = f"{resizer.fixed_shape_resizer.width}x{resizer.fixed_shape_resizer.height} px"
        facts["input_pixels"] = max(resizer.fixed_shape_resizer.width, resizer.fixed_shape_resizer.height)
    elif which == "keep_aspect_ratio_resizer":
        r = resizer.keep_aspect_ratio_resizer
        facts["input"] = f"keep aspect, {r.min_dimension}-{r.max_dimension} px"
        facts["input_pixels"] = r.min_dimension
    if kind == "ssd":
        facts["nms_iou"] = model.ssd.post_processing.batch_non_max_suppression.iou_threshold or None
    elif kind == "faster_rcnn":
        facts["nms_iou"] = model.faster_rcnn.second_stage_post_processing.batch_non_max_suppression.iou_threshold \
            or None
    return facts


class ExportedModel:
    """An export folder (`medtfod export` output).

    Args:
      path: the export folder or its `saved_model/`; or a model.onnx file in an export folder.
      runtime: 'tf' (the SavedModel, the default) or 'onnx' (model.onnx with ONNX Runtime; the
        default for a .onnx path).

    Raises:
      UserError: no SavedModel there (runtime 'tf'), or no model.onnx (runtime 'onnx').
    """

    def __init__(self, path: str, runtime: Optional[str] = None):
        path = os.fspath(path)
        is_onnx_file = path.lower().endswith(".onnx")
        if runtime is not None and runtime not in RUNTIMES:
            raise UserError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        self.runtime = runtime or ("onnx" if is_onnx_file else "tf")
        self._label_map: Optional[LabelMap] = None
        self._detect_fn = None
        if self.runtime == "tf":
            if is_onnx_file:
                raise UserError(f"{path} is an ONNX model: run it with --runtime onnx")
            self.saved_model_dir = saved_model_dir(path)
            self.path = export_dir(path)
            self.onnx_path = os.path.join(self.path, ONNX_NAME)
            return
        if is_onnx_file:
            if not os.path.isfile(path):
                raise UserError(f"{path} does not exist; make it with {EXPORT_HINT}")
            self.path, self.onnx_path = os.path.dirname(os.path.abspath(path)), path
        else:
            folder = path.rstrip("/\\")
            self.path = os.path.dirname(folder) if os.path.basename(folder) == "saved_model" else folder
            self.onnx_path = os.path.join(self.path, ONNX_NAME)
            if not os.path.isfile(self.onnx_path):
                raise UserError(f"--runtime onnx: no {ONNX_NAME} in {self.path}; make it with "
                                f"medtfod export --onnx --config ... --model-dir ... --out {self.path} "
                                "(or ExportedModel(EXPORT).to_onnx())")
        found = os.path.join(self.path, "saved_model")
        self.saved_model_dir = found if os.path.isfile(os.path.join(found, "saved_model.pb")) else None

    def __repr__(self) -> str:
        return f"ExportedModel({self.path!r})"

    @classmethod
    def export(cls, config: str, model_dir: str, out: str, *, checkpoint: Optional[str] = None,
               input_type: str = "image_tensor", tflite: bool = False, onnx: bool = False,
               verbose: bool = False) -> "ExportedModel":
        """Export a training run (`medtfod export`: the OD API's `exporter_lib_v2`) and open the result.

        Args:
          config: the run's pipeline.config.
          model_dir: the training folder.
          out: the export folder to write (assembled aside, moved into place when complete).
          checkpoint: 'best' (the default when the run kept one), 'latest' or a checkpoint prefix.
          input_type: 'image_tensor' (uint8, one image per call) or 'float_image_tensor' (batches).
          tflite: also write a TFLite model (SSD only).
          onnx: also write model.onnx, checked against the SavedModel (`to_onnx`).
          verbose: show TensorFlow's own output.
        """
        from ..core.fence import check_outputs
        from ..odapi.export import export
        from ..training.config import data_inputs
        check_outputs({"out": out}, dict(data_inputs(config), config=config, model_dir=model_dir))
        export(config, model_dir, out, input_type=input_type, verbose=verbose, tflite=tflite, checkpoint=checkpoint)
        exported = cls(out)
        if onnx:
            exported.to_onnx(verbose=verbose)
        return exported

    def to_onnx(self, images: Optional[str] = None, count: Optional[int] = None, verbose: bool = False) -> dict:
        """Write EXPORT/model.onnx (tf2onnx, opset 17, float32 `[N, H, W, 3]` input) and check it
        against the SavedModel: see `medtfod.odapi.onnx_export.write_onnx`.

        Args:
          images: a TFRecord glob to check on; default: the pipeline.config's eval records, else
            synthetic images.
          count: how many images to check (default `onnx_export.PARITY_IMAGES`).

        Returns:
          export.json's "onnx" record: the file, tf2onnx and opset versions, and the parity
          {images, max_box_difference, max_score_difference, counts_equal, worst_image, passed}.

        Raises:
          UserError: conversion failed (naming the ops tf2onnx could not convert), or the parity
            check failed (the SavedModel is kept; model.onnx is not written).
        """
        from ..odapi.onnx_export import PARITY_IMAGES, write_onnx
        if self.saved_model_dir is None:
            raise UserError(f"{self.path} has no SavedModel to convert (saved_model/saved_model.pb)")
        return write_onnx(self, images=images, count=count or PARITY_IMAGES, verbose=verbose)

    @property
    def label_map_path(self) -> str:
        return os.path.join(self.path, "label_map.pbtxt")

    @property
    def pipeline_config_path(self) -> str:
        return os.path.join(self.path, "pipeline.config")

    @property
    def label_map(self) -> LabelMap:
        if self._label_map is None:
            if self.runtime == "onnx" and not os.path.isfile(self.label_map_path):
                from .onnx_model import labels_of  # a model.onnx on its own: the classes it carries
                self._label_map = labels_of(self.onnx_path)
            else:
                self._label_map = read_label_map(self.label_map_path)
        return self._label_map

    @property
    def record(self) -> dict:
        """export.json, written by medtfod export (step, checkpoint, input type; "model" and "onnx"
        after `to_onnx`), or {} when the folder has none."""
        path = os.path.join(self.path, "export.json")
        if not os.path.isfile(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    @property
    def facts(self) -> dict:
        """{'family', 'input', 'nms_iou'} of the model (`config_facts`), read from pipeline.config;
        without the OD API (the light ONNX install) from what `to_onnx` recorded of it in export.json."""
        if os.path.isfile(self.pipeline_config_path):
            try:
                from ..odapi.protos import read_pipeline_config
            except ImportError:  # no OD API protos here
                pass
            else:
                return config_facts(read_pipeline_config(self.pipeline_config_path))
        return dict(self.record.get("model") or {})

    @property
    def info(self) -> dict:
        """{'family': e.g. 'ssd (ssd_mobilenet_v2_fpn_keras)', 'input': e.g. '320x320 px',
        'step': the exported checkpoint's step}, 'unknown'/None where the folder does not say."""
        facts = self.facts
        return {"family": facts.get("family", "unknown"), "input": facts.get("input", "unknown"),
                "step": self.record.get("step")}

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
            try:
                from ..odapi.protos import read_pipeline_config
            except ImportError:  # the light ONNX install: export.json's record above is all there is
                return None
            config = read_pipeline_config(self.pipeline_config_path)
            found = recorded_window(config.train_input_reader.tf_record_input_reader.input_path)
            if found is not None:
                return {"window": found["window"], "clahe": found["clahe"]}
        return None

    @property
    def training_tiles(self) -> Optional[int]:
        """The tile size the model was trained on (`convert --tile`, recorded in export.json), or None."""
        size = self.record.get("training_tiles")
        return int(size) if isinstance(size, int) and not isinstance(size, bool) else None

    @property
    def input_pixels(self) -> Optional[int]:
        """The model's input size in pixels: a fixed shape's larger side, a keep-aspect-ratio
        resizer's min_dimension; None when the folder has no pipeline.config (nor, in the light
        install, export.json's record of it)."""
        return self.facts.get("input_pixels")

    @property
    def family(self) -> str:
        return self.info["family"]

    @property
    def nms_iou(self) -> Optional[float]:
        """The IoU threshold of the model's own (second-stage) NMS, from its pipeline.config (None
        when the folder has none, or for a family without one)."""
        return self.facts.get("nms_iou")

    @property
    def operating_point(self) -> Optional[dict]:
        """The threshold `medtfod calibrate` stored (with the sensitivity and FP/image it gave), or None."""
        from .operating_point import read_operating_point
        return read_operating_point(self.path)

    def min_score(self, min_score: Optional[float] = None, fused: bool = False,
                  tiling: Optional[dict] = None) -> Tuple[float, str]:
        """The threshold to use and where it came from: `min_score` when given, else the operating
        point `medtfod calibrate` stored here, else DEFAULT_MIN_SCORE. A `fused` score (several
        models or TTA views) has no operating point: a calibration belongs to one model's own scores.
        Nor does a run tiled otherwise than the calibration (`tiling`: `PredictOptions.tiling`; None
        for whole images): tiled scores come from other pixels, and merging changes them again."""
        from .operating_point import describe, tiling_mismatch
        if min_score is not None:
            return min_score, "--min-score"
        if fused:
            return DEFAULT_MIN_SCORE, "the default (a fused score has no calibration yet)"
        point = self.operating_point
        mismatch = tiling_mismatch(point, tiling) if point else None
        if mismatch:
            return DEFAULT_MIN_SCORE, f"the default ({mismatch})"
        if point:
            return float(point["min_score"]), f"the calibrated operating point ({describe(point)})"
        return DEFAULT_MIN_SCORE, "the default (run medtfod calibrate to choose one for your data)"

    def load(self):
        """The loaded SavedModel (`tf.saved_model.load`), or with runtime 'onnx' the
        `OnnxDetector` of model.onnx (no TensorFlow); loaded once and kept."""
        if self._detect_fn is None and self.runtime == "onnx":
            from .onnx_model import OnnxDetector
            self._detect_fn = OnnxDetector(self.onnx_path, self.label_map, self.facts)
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
        models = [self, *(m if isinstance(m, ExportedModel) else ExportedModel(m, self.runtime)
                          for m in options.models)]
        predictor = Predictor(models, options)
        if predictor.window_warning:
            import warnings
            warnings.warn(predictor.window_warning, UserWarning, stacklevel=2)
        return Predictions(predictor.run(inputs), predictor.label_map, ground_truth,
                           {**fenced, **{f"model {m.path}": m.path for m in models}})
