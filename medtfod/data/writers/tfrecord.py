"""Sharded TFRecord files of OD API examples (`image/...` features, as the OD API's
`create_pascal_tf_record.py` writes them and its `TfExampleDecoder` reads them).

TFRecord framing (uint64 length, masked CRC32C of the length, data, masked CRC32C of the
data, all little-endian) is `medtfod.data.tfrecord_framing`'s. Boxes go in as the OD API expects: normalized to [0, 1],
stored per coordinate (`image/object/bbox/xmin` ...). The shards' names are
`medtfod.data.shard_sets`'.
"""
from __future__ import annotations

from ...core.annotations import ImageRecord
from ...core.labelmap import LabelMap
from .tfexample import BytesFeature, FloatFeature, Int64Feature, encode_example


def example_bytes(record: ImageRecord, encoded: bytes, label_map: LabelMap, with_masks: bool = False) -> bytes:
    """The OD API tf.Example for one image.

    Args:
      record: the image and its objects (pixel `Box`es in the image frame).
      encoded: the PNG/JPEG file bytes, passed through undecoded.
      label_map: gives each object's 1-based class id.
      with_masks: the dataset has instance masks, so every image with objects gets
        `image/object/mask` (Mask R-CNN's decoder expects one mask per box).
    """
    w, h = record.width, record.height
    norm = [o.box.to_normalized_yxyx(w, h) for o in record.objects]
    name = record.image_id.encode("utf-8")
    features = {
        "image/height": Int64Feature([h]),
        "image/width": Int64Feature([w]),
        "image/filename": BytesFeature([name]),
        "image/source_id": BytesFeature([name]),
        "image/encoded": BytesFeature([encoded]),
        "image/format": BytesFeature([b"png" if record.format == "png" else b"jpeg"]),
        "image/object/bbox/ymin": FloatFeature([b[0] for b in norm]),
        "image/object/bbox/xmin": FloatFeature([b[1] for b in norm]),
        "image/object/bbox/ymax": FloatFeature([b[2] for b in norm]),
        "image/object/bbox/xmax": FloatFeature([b[3] for b in norm]),
        "image/object/class/text": BytesFeature([o.label.encode("utf-8") for o in record.objects]),
        "image/object/class/label": Int64Feature([label_map.ids[o.label] for o in record.objects]),
        "image/object/difficult": Int64Feature([0] * len(record.objects)),
        "image/object/truncated": Int64Feature([0] * len(record.objects)),
        "image/object/view": BytesFeature([b"Unspecified"] * len(record.objects)),
    }
    if record.objects and (with_masks or record.has_masks):
        # One PNG per object (the OD API's PNG_MASKS); an object without a mask of its own
        # in a masked image gets its filled box, so masks and boxes stay aligned.
        from ...core.masks import Mask, png_bytes
        bitmaps = []
        for o in record.objects:
            mask = o.mask or Mask(polygons=((o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymin,
                                             o.box.xmax, o.box.ymax, o.box.xmin, o.box.ymax),))
            bitmaps.append(png_bytes(mask.to_bitmap(w, h)))
        features["image/object/mask"] = BytesFeature(bitmaps)
    return encode_example(features)
