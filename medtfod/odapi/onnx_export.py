"""ONNX export: an export folder's model -> EXPORT/model.onnx with tf2onnx, checked against the SavedModel.

tf2onnx converts a `float_image_tensor` SavedModel (float32 `[None, None, None, 3]`: batches of
any size), so detect's batching works with model.onnx too. The export's own SavedModel is used
when it is one; an `image_tensor` export (uint8, one image per call) is first exported again with
`float_image_tensor` from EXPORT/checkpoint/ into a temporary folder (another ~40 s for an SSD).

The parity check runs the export's own SavedModel and model.onnx (one batched call) on the same
images: the first `count` images of the pipeline.config's eval TFRecords, else synthetic ones.
Per image, the detections scoring above PARITY_MIN_SCORE must be as many in both, and each ONNX
detection above it is paired with the SavedModel's of the same class nearest to it; the largest
box (normalized ymin, xmin, ymax, xmax), score and (Mask R-CNN)
mask probability differences go into export.json's "onnx" record.
Above PARITY_TOLERANCE (or a different count) model.onnx is not written and a UserError names the
worst image and its differences; the SavedModel stays as it is.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core import atomic
from ..core.errors import UserError
from ..inference.onnx_model import ONNX_NAME, OnnxDetector, metadata_for
from .runtime import import_tensorflow

OPSET = 17
PARITY_TOLERANCE = 1e-3   # normalized box units (1 px in 1000) and score
PARITY_MIN_SCORE = 0.05   # detections compared: those scoring above this
PARITY_IMAGES = 4


def compare_image(reference: Dict[str, np.ndarray], candidate: Dict[str, np.ndarray], j: int,
                  min_score: float = PARITY_MIN_SCORE) -> Dict[str, float]:
    """How far image j's detections in `candidate` (model.onnx) are from `reference`'s (the SavedModel).

    Both are batched outputs keyed like the SavedModel's (`detection_boxes` `[N, K, 4]` normalized
    ymin, xmin, ymax, xmax; `detection_scores`, `detection_classes` `[N, K]`; `num_detections` `[N]`,
    detections sorted by score). The candidate's detections above `min_score` are each paired with
    the nearest reference detection of the same class (among all the reference's detections, so a
    near-tie just above the threshold still finds its partner). Below the threshold an undertrained
    model's scores tie exactly (flat image regions), and which of the tied boxes NMS keeps differs
    between runtimes, so those are not compared. Returns {'reference': count above min_score,
    'candidate': count above min_score, 'compared': detections paired, 'box': largest box difference,
    'score': largest score difference, 'mask': largest mask probability difference (Mask R-CNN's
    `detection_masks` `[N, K, h, w]`; 0 without masks)}; infinite when a detection has no partner of
    its class.
    """
    def top(result, everything=False):
        n = int(np.asarray(result["num_detections"])[j])
        scores = np.asarray(result["detection_scores"])[j][:n]
        keep = np.ones(n, bool) if everything else scores > min_score
        return (np.asarray(result["detection_boxes"])[j][:n][keep], scores[keep],
                np.asarray(result["detection_classes"])[j][:n][keep].astype(int), int(np.sum(scores > min_score)),
                np.flatnonzero(keep))

    c_boxes, c_scores, c_classes, c_above, c_index = top(candidate)
    r_boxes, r_scores, r_classes, r_above, r_index = top(reference, everything=True)
    out = {"reference": r_above, "candidate": c_above, "compared": len(c_scores), "box": 0.0, "score": 0.0,
           "mask": 0.0}
    masks = "detection_masks" in reference and "detection_masks" in candidate
    for k, box, score, cls in zip(c_index, c_boxes, c_scores, c_classes):
        same = np.flatnonzero(r_classes == cls)
        if not len(same):
            return dict(out, box=float("inf"), score=float("inf"), mask=float("inf"))
        box_gaps = np.abs(r_boxes[same] - box).max(axis=1)
        gaps = np.maximum(box_gaps, np.abs(r_scores[same] - score))
        best = int(np.argmin(gaps))
        out["box"] = max(out["box"], float(box_gaps[best]))
        out["score"] = max(out["score"], float(abs(r_scores[same][best] - score)))
        if masks:
            gap = np.abs(np.asarray(reference["detection_masks"])[j][r_index[same[best]]]
                         - np.asarray(candidate["detection_masks"])[j][k]).max()
            out["mask"] = max(out["mask"], float(gap))
    return out


def summarize(names: Sequence[str], per_image: Sequence[Dict[str, float]],
              tolerance: float = PARITY_TOLERANCE) -> dict:
    """The parity record over all images: the largest differences, whether every count agreed, the
    worst image (a count mismatch first, else the largest difference) and whether it passed."""
    def badness(item):
        return (item["reference"] != item["candidate"], max(item["box"], item["score"], item.get("mask", 0.0)))
    worst = max(range(len(per_image)), key=lambda i: badness(per_image[i])) if per_image else None
    counts_equal = all(p["reference"] == p["candidate"] for p in per_image)
    box = max((p["box"] for p in per_image), default=0.0)
    score = max((p["score"] for p in per_image), default=0.0)
    mask = max((p.get("mask", 0.0) for p in per_image), default=0.0)
    return {"images": len(per_image), "min_score": PARITY_MIN_SCORE, "tolerance": tolerance,
            "detections_compared": int(sum(p["compared"] for p in per_image)),
            "max_box_difference": box if np.isfinite(box) else None,
            "max_score_difference": score if np.isfinite(score) else None,
            "max_mask_difference": mask if np.isfinite(mask) else None,
            "counts_equal": counts_equal,
            "worst_image": None if worst is None else dict(per_image[worst], name=names[worst]),
            "passed": bool(counts_equal and max(box, score, mask) <= tolerance)}


def parity_images(pipeline_config, pattern: Optional[str], count: int) -> Tuple[List[str], List[np.ndarray], str]:
    """(names, uint8 RGB images, where they came from): the first `count` images of `pattern` (a
    TFRecord glob) or of the config's eval TFRecords; else `count` seeded synthetic images of the
    model's input size (smooth background, bright blobs)."""
    tf = import_tensorflow(False)
    patterns = [pattern] if pattern else list(pipeline_config.eval_input_reader[0].tf_record_input_reader.input_path)
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    names, images = [], []
    features = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                "image/filename": tf.io.FixedLenFeature([], tf.string, default_value="")}
    for record in tf.data.TFRecordDataset(files).take(count) if files else ():
        example = tf.io.parse_single_example(record, features)
        images.append(tf.io.decode_image(example["image/encoded"], channels=3, expand_animations=False).numpy())
        names.append(example["image/filename"].numpy().decode() or f"record {len(names)}")
    if images:
        return names, images, f"{len(images)} images of {', '.join(patterns)}"
    if pattern:
        raise UserError(f"no images in the TFRecords {pattern}")
    size = 320
    resizer = getattr(pipeline_config.model, pipeline_config.model.WhichOneof("model")).image_resizer
    if resizer.HasField("fixed_shape_resizer"):
        size = resizer.fixed_shape_resizer.height
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        image = 60 + 40 * np.sin(xx / size * 3 + i)[..., None] + rng.normal(0, 8, (size, size, 1))
        for _ in range(3):
            cy, cx, r = rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size, rng.uniform(0.05, 0.15) * size
            image = image + 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        images.append(np.clip(np.repeat(image, 3, axis=2), 0, 255).astype(np.uint8))
        names.append(f"synthetic {i}")
    return names, images, f"{count} synthetic {size}x{size} images (the config's eval TFRecords are not there)"


def check_available() -> None:
    """A UserError, before any work, when tf2onnx, onnx or onnxruntime is not installed."""
    import importlib.util
    missing = [name for name in ("tf2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--onnx needs {', '.join(missing)} (pinned in requirements/cpu.txt): "
                        "python scripts/bootstrap.py install")


def convert(saved_model: str, output: str, verbose: bool = False) -> str:
    """tf2onnx (`python -m tf2onnx.convert`, opset OPSET) from `saved_model` to `output`; returns its
    version. Its output goes to the library log (live with `verbose`). Raises UserError naming the
    ops it could not convert."""
    import logging
    check_available()
    import tf2onnx
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved_model, "--output", output,
           "--opset", str(OPSET), "--signature_def", "serving_default"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log = done.stdout + done.stderr
    if verbose:
        print(log, file=sys.stderr, flush=True)
    else:  # to medtfod.log, like TensorFlow's own output
        logging.getLogger("tensorflow").info("tf2onnx:\n%s", log)
    unsupported = set(re.findall(r"Tensorflow op \[[^:\]]*: ([A-Za-z0-9_]+)\] is not supported", log))
    for counter in re.findall(r"Unsupported ops: Counter\(\{([^}]*)\}\)", log):
        unsupported |= set(re.findall(r"'([A-Za-z0-9_]+)'", counter))
    unsupported = sorted(unsupported)
    if done.returncode != 0 or not os.path.isfile(output) or unsupported:
        if unsupported:
            raise UserError(f"tf2onnx {tf2onnx.__version__} cannot convert this model: TensorFlow op(s) "
                            f"{', '.join(unsupported)} have no ONNX (opset {OPSET}) conversion; use the SavedModel")
        last = [line for line in log.splitlines() if line.strip()][-3:]
        raise UserError(f"tf2onnx {tf2onnx.__version__} failed to convert {saved_model} (exit status "
                        f"{done.returncode}): {' | '.join(last)[-500:]}")
    return tf2onnx.__version__


def float_saved_model(model, tmp: str) -> str:
    """A float_image_tensor SavedModel of `model` (an `ExportedModel`): its own when it is one,
    else one exported again from EXPORT/checkpoint/ into `tmp`."""
    tf = import_tensorflow(False)
    from ..inference.predictor import model_input
    if model.record.get("input_type") == "float_image_tensor" or \
            model_input(tf.saved_model.load(model.saved_model_dir), 2) == (2, np.float32):
        return model.saved_model_dir
    from object_detection import exporter_lib_v2

    from .protos import read_pipeline_config
    from .runtime import tidy_logging
    checkpoint = os.path.join(model.path, "checkpoint")
    if not tf.train.latest_checkpoint(checkpoint):
        raise UserError(f"{model.path} is an image_tensor export without its checkpoint/ folder, so it cannot be "
                        "exported again with float_image_tensor for ONNX; export with --input-type float_image_tensor")
    tidy_logging(False)
    print("onnx: exporting the checkpoint again with float_image_tensor (batches of float32 images)", flush=True)
    exporter_lib_v2.export_inference_graph("float_image_tensor", read_pipeline_config(model.pipeline_config_path),
                                           checkpoint, os.path.join(tmp, "float"))
    return os.path.join(tmp, "float", "saved_model")


def write_onnx(model, images: Optional[str] = None, count: int = PARITY_IMAGES, verbose: bool = False) -> dict:
    """Convert `model` (an `ExportedModel` with a SavedModel) to EXPORT/model.onnx, check it (module
    docstring) and record the result in export.json under "onnx" (and the config's facts under
    "model", for the light install that cannot read pipeline.config). Returns the "onnx" record."""
    import onnx

    from .protos import read_pipeline_config
    tf = import_tensorflow(False)
    from ..inference.predictor import model_input
    config = read_pipeline_config(model.pipeline_config_path)
    facts = model.facts
    names, pictures, source = parity_images(config, images, count)
    with tempfile.TemporaryDirectory(prefix="medtfod-onnx-") as tmp:
        staged = os.path.join(tmp, ONNX_NAME)
        version = convert(float_saved_model(model, tmp), staged, verbose)
        proto = onnx.load(staged)
        for key, value in metadata_for(model.label_map, facts).items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, staged)
        saved = tf.saved_model.load(model.saved_model_dir)
        _, dtype = model_input(saved, 1)
        detector = OnnxDetector(staged, model.label_map, facts)
        per_image = []
        for group in _same_size_groups(pictures):
            onnx_out = detector(np.stack([pictures[i] for i in group]).astype(np.float32))
            for j, i in enumerate(group):
                ref = {k: v.numpy() for k, v in saved(tf.constant(pictures[i][None].astype(dtype))).items()}
                per_image.append((i, compare_image(ref, {k: v[j:j + 1] for k, v in onnx_out.items()}, j=0)))
        per_image = [p for _, p in sorted(per_image, key=lambda item: item[0])]
        record = {"file": ONNX_NAME, "opset": OPSET, "tf2onnx": version, "input": "float32 [N, H, W, 3], RGB 0-255",
                  "checked_on": source, "parity": summarize(names, per_image)}
        record["written"] = record["parity"]["passed"]
        final = os.path.join(model.path, ONNX_NAME)
        if record["written"]:
            os.replace(_copy_beside(staged, final), final)
        elif os.path.isfile(final):  # an earlier model.onnx must not outlive the record saying this one failed
            os.remove(final)
    _record(model.path, record, facts)
    parity = record["parity"]
    worst = parity["worst_image"] or {}
    line = (f"onnx: {parity['images']} images ({source}): largest box difference "
            f"{_g(parity['max_box_difference'])}, score {_g(parity['max_score_difference'])}"
            + (f", mask {_g(parity['max_mask_difference'])}" if parity["max_mask_difference"] else "") + " over "
            f"{parity['detections_compared']} detections above {PARITY_MIN_SCORE:g}; counts "
            f"{'equal' if parity['counts_equal'] else 'DIFFERENT'}")
    print(line, flush=True)
    if not record["written"]:
        raise UserError(f"model.onnx disagrees with the SavedModel beyond {PARITY_TOLERANCE:g} (normalized box units "
                        f"and score): worst image {worst.get('name')!r}: {worst.get('reference')} detections above "
                        f"{PARITY_MIN_SCORE:g} with TensorFlow, {worst.get('candidate')} with ONNX Runtime, box "
                        f"difference {_g(worst.get('box'))}, score {_g(worst.get('score'))}, mask "
                        f"{_g(worst.get('mask'))}. No model.onnx was "
                        f"written; the SavedModel in {model.path} is unchanged (details in export.json)")
    return record


def _g(value) -> str:
    return "inf" if value is None or not np.isfinite(value) else f"{value:.2g}"


def _same_size_groups(images: Sequence[np.ndarray]) -> List[List[int]]:
    groups: Dict[tuple, List[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape, []).append(i)
    return list(groups.values())


def _copy_beside(src: str, final: str) -> str:
    """A copy of `src` in `final`'s folder (so the rename into place is atomic), returned."""
    import shutil
    fd, path = tempfile.mkstemp(prefix=f".{os.path.basename(final)}.", dir=os.path.dirname(final))
    os.close(fd)
    shutil.copyfile(src, path)
    os.chmod(path, 0o644)
    return path


def _record(folder: str, record: dict, facts: dict) -> None:
    """export.json's "onnx" and "model" entries, and the folder's MARKER list, updated in place."""
    path = os.path.join(folder, "export.json")
    existing = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            existing = json.load(f)
    existing.update(onnx=record, model=facts)
    atomic.write_file(path, json.dumps(existing, indent=2) + "\n")
    if os.path.isfile(os.path.join(folder, atomic.MARKER)):  # model.onnx is medtfod's: a re-export replaces it
        atomic.write_file(os.path.join(folder, atomic.MARKER), atomic.marker_text(atomic.files_in(folder)))
