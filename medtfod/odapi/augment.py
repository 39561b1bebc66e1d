"""Augmented training samples, made by the OD API's own decoder and preprocessor.

The path is the one `object_detection.inputs.train_input` takes up to augmentation: the
train input reader's TFRecords, decoded by the decoder `decoder_builder.build` makes for the
reader (label map, masks and all), then `inputs.augment_input_data` with the steps
`preprocessor_builder.build` makes of `train_config.data_augmentation_options`.

Why stop there and not call `train_input` itself: after augmentation `train_input` applies the
model's preprocessing (resize to the model's input, normalization to the backbone's range,
padding to a static shape) and batches. Those steps move no box relative to its image (the
resizer scales image and boxes together) but would have to be undone to draw a picture a person
can read, and they need the model built. What is shown is the image and boxes the model's
resizer receives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np

from ..core.boxes import Box
from ..core.errors import UserError
from . import protos
from .runtime import import_tensorflow, tidy_logging


@dataclass(frozen=True)
class AugmentedSample:
    """One augmented training example.

    Fields:
      image: uint8 array [height, width, channels], the augmented image (values 0-255).
      boxes: the augmented boxes, as medtfod `Box`es (float pixel xyxy on `image`).
      classes: the label map id (1-based) of each box.
      source: the example's `image/filename` (or `image/source_id` when it has no file name).
    """
    image: np.ndarray
    boxes: Sequence[Box]
    classes: Sequence[int]
    source: str


def _pixel_boxes(normalized, height: int, width: int) -> List[Box]:
    """The OD API's normalized `(ymin, xmin, ymax, xmax)` rows -> pixel `Box`es on a `height` x
    `width` image (converted here, where the OD API's tensors are read)."""
    return [Box(float(x0) * width, float(y0) * height, float(x1) * width, float(y1) * height)
            for y0, x0, y1, x1 in normalized]


def _decoded_examples(reader, count: int, tf) -> List[dict]:
    """Up to `count` decoded examples with at least one box, from `reader`'s TFRecords in order."""
    from object_detection.builders import decoder_builder
    paths = [p for pattern in reader.tf_record_input_reader.input_path for p in sorted(tf.io.gfile.glob(pattern))]
    if not paths:
        patterns = ", ".join(reader.tf_record_input_reader.input_path) or "(none)"
        raise UserError(f"the config's train_input_reader matches no TFRecord file: {patterns}")
    decoder = decoder_builder.build(reader)
    dataset = tf.data.TFRecordDataset(paths).map(decoder.decode)
    dataset = dataset.filter(lambda d: tf.shape(d["groundtruth_boxes"])[0] > 0).take(count)
    return list(dataset)


def augmented_samples(config: Union[str, "object"], n: int = 16, seed: Optional[int] = 0) -> List[AugmentedSample]:
    """`n` training examples augmented with `config`'s `data_augmentation_options`.

    The first `n` training examples that have a box are used, in the TFRecords' order; when there
    are fewer, they are augmented again (each time with fresh random draws). Images without a box
    are skipped: they show nothing of where the boxes go.

    Args:
      config: a pipeline config path or `TrainEvalPipelineConfig`.
      n: how many samples.
      seed: TensorFlow's global seed, so the same call draws the same samples; None draws anew.

    Returns:
      `AugmentedSample`s, boxes in pixels on each augmented image.

    Raises:
      UserError: no TFRecords, or no training example with a box.
    """
    if n < 1:
        raise UserError(f"--n {n}: expected at least 1 sample")
    if isinstance(config, str):
        config = protos.read_pipeline_config(config)
    tf = import_tensorflow(verbose=False)
    tidy_logging(verbose=False)
    from object_detection import inputs
    from object_detection.builders import preprocessor_builder
    if seed is not None:
        tf.random.set_seed(seed)
    examples = _decoded_examples(config.train_input_reader, n, tf)
    if not examples:
        raise UserError("no training example has a box: the preview draws boxes, so it needs at least one")
    steps = [preprocessor_builder.build(step) for step in config.train_config.data_augmentation_options]
    samples = []
    for i in range(n):
        example = dict(examples[i % len(examples)])
        out = inputs.augment_input_data(example, steps) if steps else example
        image = tf.cast(tf.clip_by_value(tf.round(tf.cast(out["image"], tf.float32)), 0, 255), tf.uint8).numpy()
        height, width = image.shape[:2]
        source = example["filename"].numpy().decode("utf-8") or example["source_id"].numpy().decode("utf-8")
        samples.append(AugmentedSample(image=image, boxes=_pixel_boxes(out["groundtruth_boxes"].numpy(), height, width),
                                       classes=[int(c) for c in out["groundtruth_classes"].numpy()], source=source))
    return samples
