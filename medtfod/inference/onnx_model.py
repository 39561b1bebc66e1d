"""`model.onnx` (written by `medtfod export --onnx`) run with ONNX Runtime: no TensorFlow, no OD API.

model.onnx is the OD API's `float_image_tensor` SavedModel converted by tf2onnx. It takes float32
`[N, H, W, 3]` RGB pixels 0-255 (resizing and normalization happen inside, as in the SavedModel)
and returns the SavedModel's outputs under the same names: `detection_boxes` `[N, 100, 4]`
normalized `(ymin, xmin, ymax, xmax)`, `detection_scores` and `detection_classes` `[N, 100]`
(label-map ids, as floats), `num_detections` `[N]`, and `detection_masks` for Mask R-CNN.

Its `metadata_props` record what it was made from (`medtfod.labels`, `medtfod.input`,
`medtfod.family`); `OnnxDetector` compares them with the export folder it is loaded from and
refuses a model.onnx that does not belong there (another label map or input size).
"""
from __future__ import annotations

import json
from typing import Dict, Optional, Tuple

import numpy as np

from ..core.errors import UserError
from ..core.labelmap import LabelMap

ONNX_NAME = "model.onnx"
RUNTIMES = ("tf", "onnx")
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections", "detection_masks")
LABELS_KEY, INPUT_KEY, FAMILY_KEY = "medtfod.labels", "medtfod.input", "medtfod.family"
EXPORT_HINT = "medtfod export --onnx (or ExportedModel(EXPORT).to_onnx())"


def metadata_for(label_map: LabelMap, facts: dict) -> Dict[str, str]:
    """The metadata_props model.onnx carries: the label map {id: name} as JSON, and the input
    size and family of the pipeline.config it was exported with (`ExportedModel.facts`)."""
    return {LABELS_KEY: json.dumps({str(i): name for name, i in sorted(label_map.ids.items(), key=lambda x: x[1])}),
            INPUT_KEY: str(facts.get("input", "unknown")), FAMILY_KEY: str(facts.get("family", "unknown"))}


def check_metadata(metadata: Dict[str, str], label_map: LabelMap, facts: dict, path: str) -> None:
    """A `UserError` when model.onnx's recorded label map or input size differs from its export
    folder's (label_map.pbtxt; the input size of pipeline.config, or of export.json's record)."""
    if LABELS_KEY not in metadata:
        raise UserError(f"{path} has no medtfod metadata (not written by medtfod export --onnx); "
                        f"make it with {EXPORT_HINT}")
    labels = {int(i): name for i, name in json.loads(metadata[LABELS_KEY]).items()}
    here = {i: name for name, i in label_map.ids.items()}
    if labels != here:
        raise UserError(f"{path} was exported with the classes {_classes(labels)}, but its folder's label_map.pbtxt "
                        f"has {_classes(here)}; export it again from this folder with {EXPORT_HINT}")
    expected, got = facts.get("input", "unknown"), metadata.get(INPUT_KEY, "unknown")
    if "unknown" not in (expected, got) and expected != got:
        raise UserError(f"{path} was exported for input {got!r}, but its folder's pipeline.config says {expected!r}; "
                        f"export it again from this folder with {EXPORT_HINT}")


def labels_of(path: str) -> LabelMap:
    """The label map model.onnx carries in its metadata (for a model.onnx copied without its export
    folder's label_map.pbtxt)."""
    ort = import_onnxruntime()
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own (non-public) exception types
        raise UserError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    if LABELS_KEY not in metadata:
        raise UserError(f"{path} has no label_map.pbtxt beside it and no medtfod metadata (not written by "
                        f"medtfod export --onnx); copy the export's label_map.pbtxt beside it")
    return LabelMap({name: int(i) for i, name in json.loads(metadata[LABELS_KEY]).items()})


def _classes(labels: Dict[int, str]) -> str:
    return ", ".join(f"{i}={name}" for i, name in sorted(labels.items()))


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("--runtime onnx needs onnxruntime, which this environment does not have; install it with "
                        "python scripts/bootstrap.py install (or install --runtime for the light inference "
                        "install)") from None
    return onnxruntime


class OnnxDetector:
    """A loaded model.onnx, called like the SavedModel but with numpy in and out.

    Args:
      path: the model.onnx file.
      label_map: its export folder's label map (checked against the model's metadata).
      facts: its export folder's {'input', 'family', ...} (`ExportedModel.facts`), checked too.
      threads: ONNX Runtime's intra-op threads (None: its default, one per core).

    Raises:
      UserError: onnxruntime missing, the file unreadable, or its metadata disagreeing with the folder.
    """

    def __init__(self, path: str, label_map: LabelMap, facts: dict, threads: Optional[int] = None):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its "implicit input name" graph warnings say nothing a user can act on
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own (non-public) exception types
            raise UserError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]}); "
                            f"export it again with {EXPORT_HINT}") from None
        self.path = path
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        check_metadata(self.metadata, label_map, facts, path)
        spec = self.session.get_inputs()[0]
        self.input_name, self.input_shape, self.input_type = spec.name, spec.shape, spec.type
        self.outputs = [o.name for o in self.session.get_outputs() if o.name in OUTPUTS]
        missing = {"detection_boxes", "detection_scores", "detection_classes", "num_detections"} - set(self.outputs)
        if missing or len(self.input_shape) != 4 or self.input_type not in ("tensor(float)", "tensor(uint8)"):
            raise UserError(f"{path}: expected an image input [N, H, W, 3] and the OD API's detection outputs; it "
                            f"takes {self.input_type} {self.input_shape} and lacks {', '.join(sorted(missing))}")

    def model_input(self, batch_size: int) -> Tuple[int, type]:
        """(images per call, pixel dtype): `batch_size` when the batch dimension is free."""
        dtype = np.float32 if self.input_type == "tensor(float)" else np.uint8
        fixed = isinstance(self.input_shape[0], int)
        return (self.input_shape[0] if fixed else max(1, batch_size)), dtype

    def __call__(self, pixels: np.ndarray) -> Dict[str, np.ndarray]:
        """The detections for `pixels` `[N, H, W, 3]`, keyed like the SavedModel's outputs."""
        _, dtype = self.model_input(1)
        values = self.session.run(self.outputs, {self.input_name: np.asarray(pixels).astype(dtype, copy=False)})
        return dict(zip(self.outputs, values))
