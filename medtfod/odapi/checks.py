"""Can the OD API build and run a model here? Used by `medtfod doctor`."""
from __future__ import annotations

from .runtime import import_tensorflow


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
