"""TFLite export for SSD models (RetinaNet too, an SSD): the OD API's `export_tflite_graph_lib_tf2` (what
`export_tflite_graph_tf2.py` runs) writes a SavedModel whose last op is the TFLite
`TFLite_Detection_PostProcess`; `tf.lite.TFLiteConverter` turns it into `model.tflite`.

The TFLite model takes a resized, normalized float image `[1, H, W, 3]` (the SavedModel does
both inside). `model.json` beside it records what a caller needs: the input size, the per-channel
`scale` and `offset` that map 0-255 pixels to the model's input (probed from the model's own
`preprocess`), and the class names by id. `TFLiteDetector` applies them, so boxes can be compared
with the SavedModel's on the same image (`compare`).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Dict, List, Optional

import numpy as np

from ..core.errors import UserError
from .runtime import import_tensorflow

TFLITE_NAME = "model.tflite"
META_NAME = "model.json"
BOX_TOLERANCE = 1e-3  # normalized coordinates: 1 px in 1000


def check_exportable(pipeline_config, config_path: str) -> None:
    """Raise UserError, before any work, when the OD API cannot convert this model to TFLite."""
    arch = pipeline_config.model.WhichOneof("model")
    if arch != "ssd":
        raise UserError(f"--tflite supports the SSD family only (SSD, RetinaNet); {config_path} is a {arch} model "
                        "(the OD API's TFLite export also has a CenterNet path, which medtfod does not run or check). "
                        "Leave out --tflite to export a SavedModel; export --onnx works for it.")
    if not pipeline_config.model.ssd.image_resizer.HasField("fixed_shape_resizer"):
        raise UserError(f"--tflite needs an SSD with a fixed_shape_resizer (a static input size); {config_path} "
                        "has another resizer")


def write_tflite(pipeline_config, model_dir: str, folder: str, max_detections: int = 100,
                 regular_nms: bool = True) -> str:
    """Write `folder/model.tflite` and `folder/model.json` from the latest checkpoint in
    `model_dir`; returns the .tflite path. Call `check_exportable` first.

    regular_nms: the per-class NMS the SavedModel uses (so both give the same boxes); False is
      TFLite's faster class-agnostic NMS.
    """
    tf = import_tensorflow(False)
    from object_detection import export_tflite_graph_lib_tf2
    from object_detection.builders import model_builder

    from ..core.labelmap import read_label_map

    resizer = pipeline_config.model.ssd.image_resizer.fixed_shape_resizer
    height, width = resizer.height, resizer.width
    scale, offset = _probe_normalization(model_builder.build(pipeline_config.model, is_training=False),
                                         height, width, tf)
    label_map = pipeline_config.train_input_reader.label_map_path
    labels = {str(i): name for name, i in read_label_map(label_map).ids.items()} \
        if label_map and os.path.isfile(label_map) else {}
    meta = {"input_size": [height, width], "scale": scale, "offset": offset,
            "input": "float32 [1, H, W, 3] = resized RGB pixels (0-255, bilinear) * scale + offset",
            "outputs": "boxes [1,N,4] normalized ymin,xmin,ymax,xmax; classes [1,N] 0-based; "
                       "scores [1,N]; count [1]",
            "labels": labels, "max_detections": max_detections, "regular_nms": regular_nms}
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory() as graph:
        export_tflite_graph_lib_tf2.export_tflite_model(pipeline_config, model_dir, graph, max_detections,
                                                        regular_nms)
        converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(graph, "saved_model"))
        with open(os.path.join(folder, TFLITE_NAME), "wb") as f:
            f.write(converter.convert())
    with open(os.path.join(folder, META_NAME), "w") as f:
        json.dump(meta, f, indent=2)
    return os.path.join(folder, TFLITE_NAME)


def _probe_normalization(model, height: int, width: int, tf):
    """Per-channel (scale, offset) with preprocess(pixels) == pixels * scale + offset, read from
    the model's own `preprocess` on a black and a white image (MobileNet: 2/255 and -1)."""
    black, _ = model.preprocess(tf.zeros([1, height, width, 3]))
    white, _ = model.preprocess(tf.fill([1, height, width, 3], 255.0))
    offset = black.numpy()[0, 0, 0].astype(float)
    scale = (white.numpy()[0, 0, 0] - offset) / 255.0
    return [round(float(v), 9) for v in scale], [round(float(v), 9) for v in offset]


class TFLiteDetector:
    """Runs `model.tflite` on uint8 RGB images of any size, as the SavedModel would."""

    def __init__(self, folder: str, num_threads: Optional[int] = None):
        tf = import_tensorflow(False)
        path = os.path.join(folder, TFLITE_NAME)
        if not os.path.isfile(path):
            raise UserError(f"no {TFLITE_NAME} in {folder}; export with `medtfod export --tflite`")
        with open(os.path.join(folder, META_NAME)) as f:
            self.meta = json.load(f)
        self._tf = tf
        with warnings.catch_warnings():  # "moving to ai_edge_litert": still works in the pinned TF 2.20
            warnings.simplefilter("ignore", UserWarning)
            self._interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]

    def __call__(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """Detections for one `[H, W, 3]` uint8 image, keyed like the SavedModel's outputs."""
        tf = self._tf
        height, width = self.meta["input_size"]
        resized = tf.image.resize(tf.cast(image[None], tf.float32), [height, width]).numpy()
        pixels = resized * np.float32(self.meta["scale"]) + np.float32(self.meta["offset"])
        self._interpreter.set_tensor(self._input, pixels.astype(np.float32))
        self._interpreter.invoke()
        outputs = [self._interpreter.get_tensor(i) for i in self._outputs]
        return _name_outputs(outputs)


def _name_outputs(outputs: List[np.ndarray]) -> Dict[str, np.ndarray]:
    """The four outputs by role: the postprocess op's tensor order changed between converter
    versions, so they are told apart by shape and content, not position."""
    boxes = next(o for o in outputs if o.ndim == 3)
    count = next(o for o in outputs if o.ndim == 1)
    pair = [o for o in outputs if o.ndim == 2]
    # classes are whole numbers; scores are not (both can be 0 only past the count)
    n = int(count[0])
    is_classes = [bool(np.all(o[0, :n] == np.round(o[0, :n]))) for o in pair]
    if is_classes[0] == is_classes[1]:  # all-integer scores: only when n == 0 or scores are 0/1
        classes, scores = pair if pair[1][0, :n].max(initial=0) <= 1 else pair[::-1]
    else:
        classes, scores = pair if is_classes[0] else pair[::-1]
    # the SavedModel clips boxes to the image; the TFLite op does not
    return {"detection_boxes": np.clip(boxes[0, :n], 0.0, 1.0), "detection_classes": classes[0, :n].astype(int) + 1,
            "detection_scores": scores[0, :n], "num_detections": n}


def compare(tflite: Dict[str, np.ndarray], saved: Dict[str, np.ndarray], top: int = 20) -> Dict[str, float]:
    """How far the TFLite model's `top` highest-scoring detections are from the SavedModel's.

    `saved` is the SavedModel's output for the same image (batch of one). Each TFLite detection is
    paired with the SavedModel detection of the same class nearest to it (scores agree to ~1e-7,
    so near-ties may swap places); returns the largest box (normalized) and score difference over
    the pairs, infinite when a detection has no partner of its class.
    """
    n = min(top, int(tflite["num_detections"]), int(np.asarray(saved["num_detections"])[0]))
    t_boxes, t_scores = tflite["detection_boxes"][:n], tflite["detection_scores"][:n]
    t_classes = tflite["detection_classes"][:n]
    s_boxes = np.asarray(saved["detection_boxes"])[0][:n + 5]
    s_scores = np.asarray(saved["detection_scores"])[0][:n + 5]
    s_classes = np.asarray(saved["detection_classes"])[0][:n + 5].astype(int)
    box_diff = score_diff = 0.0
    for box, score, cls in zip(t_boxes, t_scores, t_classes):
        same = np.flatnonzero(s_classes == cls)
        if not len(same):
            return {"compared": n, "max_box_difference": float("inf"), "max_score_difference": float("inf")}
        gaps = np.abs(s_boxes[same] - box).max(axis=1)
        best = same[int(np.argmin(gaps))]
        box_diff = max(box_diff, float(gaps.min()))
        score_diff = max(score_diff, float(abs(s_scores[best] - score)))
    return {"compared": n, "max_box_difference": box_diff, "max_score_difference": score_diff}


def first_eval_image(pipeline_config) -> Optional[np.ndarray]:
    """The first image of the config's eval TFRecords as uint8 RGB, or None when there are none."""
    tf = import_tensorflow(False)
    patterns = list(pipeline_config.eval_input_reader[0].tf_record_input_reader.input_path)
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    for record in tf.data.TFRecordDataset(files).take(1):
        example = tf.io.parse_single_example(record, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
        return tf.io.decode_image(example["image/encoded"], channels=3, expand_animations=False).numpy()
    return None


def self_check(folder: str, saved_model_dir: str, image: np.ndarray) -> Dict[str, float]:
    """Run the TFLite model in `folder` and the SavedModel on `image`, store the comparison in
    model.json under "check" and return it."""
    tf = import_tensorflow(False)
    saved = tf.saved_model.load(saved_model_dir)
    saved_out = {k: v.numpy() for k, v in saved.signatures["serving_default"](
        input_tensor=tf.constant(image[None])).items()}
    result = compare(TFLiteDetector(folder)(image), saved_out)
    path = os.path.join(folder, META_NAME)
    with open(path) as f:
        meta = json.load(f)
    meta["check"] = {k: v if np.isfinite(v) else None for k, v in result.items()}  # JSON has no inf
    with open(path, "w") as f:
        json.dump(meta, f, indent=2)
    return result
