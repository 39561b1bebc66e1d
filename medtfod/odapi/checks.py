"""Checks before the OD API runs: do a config's TFRecord globs match files (`train`, `eval`),
and can the OD API build and run a model here (`medtfod doctor`)?"""
from __future__ import annotations

import glob
import os

from ..core.errors import UserError
from .runtime import import_tensorflow


def _matches(pattern: str) -> bool:
    """Whether `pattern` matches a file, resolved as the OD API's `tf.io.gfile.glob` resolves
    it: a relative pattern from the working directory. A remote one (gs://, s3://...) is
    taken on trust: it cannot be listed without TensorFlow."""
    if "://" in pattern:
        return True
    return os.path.exists(pattern) or bool(glob.glob(pattern))


def check_input_files(config_path: str, *, train: bool = True, evaluation: bool = True) -> None:
    """Refuse (a `UserError`) a config whose TFRecord inputs match no file, before anything runs.

    Every pattern of `train_input_reader` (when `train`) and of each `eval_input_reader`
    (when `evaluation`) must match a file: the OD API would only fail once TensorFlow is up
    and the model folder written (`Did not find any input files matching the glob pattern`).
    Readers of another kind than `tf_record_input_reader` are left to the OD API. Reads only
    the config (no TensorFlow); a missing config is left to the caller.
    """
    from .protos import read_pipeline_config
    if not os.path.isfile(config_path):
        return
    config = read_pipeline_config(config_path)
    readers = [("train_input_reader", config.train_input_reader)] if train else []
    if evaluation:
        many = len(config.eval_input_reader) > 1
        readers += [(f"eval_input_reader[{i}]" if many else "eval_input_reader", r)
                    for i, r in enumerate(config.eval_input_reader)]
    for name, reader in readers:
        if reader.WhichOneof("input_reader") != "tf_record_input_reader":
            continue
        field = f"{name}.tf_record_input_reader.input_path"
        patterns = list(reader.tf_record_input_reader.input_path)
        if not patterns:
            raise UserError(f"{config_path}: {field} is empty; give the TFRecord files to read "
                            "(render the config with `medtfod config --data DATASET`)")
        for pattern in patterns:
            if not _matches(pattern):
                where = ("" if os.path.isabs(pattern) else
                         f" (a relative path, read from the working directory {os.getcwd()} as the OD API reads it)")
                raise UserError(f"{config_path}: {field} {pattern!r} matches no file{where}; fix the path in the "
                                "config, or convert the dataset it names first (medtfod convert)")


def build_and_run_ssd(image_size: int = 64) -> str:
    """Build the SSD template through the OD API's model builder and run one forward pass.

    Returns a one-line description; raises whatever the OD API raises when it cannot.
    """
    tf = import_tensorflow(verbose=False)
    from object_detection.builders import model_builder

    from ..core.resources import resource_path
    from .protos import read_pipeline_config

    config = read_pipeline_config(resource_path("pipeline_configs", "ssd_mobilenet_v2_fpnlite_320.config"))
    config.model.ssd.num_classes = 2
    config.model.ssd.image_resizer.fixed_shape_resizer.height = image_size
    config.model.ssd.image_resizer.fixed_shape_resizer.width = image_size
    model = model_builder.build(model_config=config.model, is_training=False)
    images, shapes = model.preprocess(tf.zeros([1, image_size, image_size, 3]))
    detections = model.postprocess(model.predict(images, shapes), shapes)
    boxes = detections["detection_boxes"].shape
    return f"built {type(model).__name__} and ran it on a {image_size}x{image_size} image: boxes {boxes}"
