"""The OD API's own decoder and label-map parser accept what `convert` writes."""
import csv
import json
import glob
import os

import pytest

from medtfod.cli import main

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def converted(tiny_nih, tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "data"
    assert main(["convert", "nih", "--bbox-csv", tiny_nih["bbox_csv"], "--images", tiny_nih["images"],
                 "--data-entry", tiny_nih["data_entry"], "--label-map", tiny_nih["label_map"],
                 "--out", str(out), "--shard-size", "5", "-q"]) == 0
    return str(out)


def table_boxes(path):
    boxes = {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    for image, label, x, y, w, h in rows:
        boxes.setdefault(image, []).append((label, float(x), float(y), float(w), float(h)))
    return boxes


def test_decoder_matches_table(converted, tiny_nih):
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    from object_detection.core import standard_fields as fields
    from object_detection.data_decoders import tf_example_decoder

    label_map = os.path.join(converted, "label_map.pbtxt")
    decoder = tf_example_decoder.TfExampleDecoder(label_map_proto_file=label_map)
    expected = table_boxes(tiny_nih["bbox_csv"])
    ids = {"Mass": 1, "Nodule": 2}
    files = sorted(glob.glob(os.path.join(converted, "tfrecords", "*.record-*")))
    assert len(files) >= 4  # about 24 images at 5 per shard, over two splits
    seen = set()
    for raw in tf.data.TFRecordDataset(files):
        d = decoder.decode(raw)
        name = d[fields.InputDataFields.source_id].numpy().decode()
        seen.add(name)
        assert d[fields.InputDataFields.image].shape == (64, 64, 3)
        got_boxes = d[fields.InputDataFields.groundtruth_boxes].numpy()
        got_classes = d[fields.InputDataFields.groundtruth_classes].numpy().tolist()
        want = expected.get(name, [])
        assert got_classes == [ids[label] for label, *_ in want]
        for (label, x, y, w, h), (ymin, xmin, ymax, xmax) in zip(want, got_boxes):
            for a, e in zip((ymin, xmin, ymax, xmax), (y / 64, x / 64, (y + h) / 64, (x + w) / 64)):
                assert a == pytest.approx(e, abs=1e-6)
    assert len(seen) == 24


def test_label_map_util_reads_ours(converted):
    from medtfod.odapi.runtime import import_tensorflow
    import_tensorflow(verbose=False)
    from object_detection.utils import label_map_util

    index = label_map_util.create_category_index_from_labelmap(os.path.join(converted, "label_map.pbtxt"))
    assert index == {1: {"id": 1, "name": "Mass"}, 2: {"id": 2, "name": "Nodule"}}


def test_png_masks_decode_with_odapi(tmp_path):
    """Polygons from a COCO source become PNG instance masks the OD API decodes to the same pixels."""
    import numpy as np
    from PIL import Image

    from medtfod.core.masks import Mask
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    from object_detection.core import standard_fields as fields
    from object_detection.data_decoders import tf_example_decoder
    from object_detection.protos import input_reader_pb2

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(images / "a.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(images / "b.png")
    polygon = [5.0, 5.0, 25.0, 5.0, 25.0, 20.0, 5.0, 20.0]
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                       {"id": 2, "file_name": "b.png", "width": 40, "height": 30}],
            "categories": [{"id": 7, "name": "nodule"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 20, 15],
                             "segmentation": [polygon], "iscrowd": 0, "area": 300},
                            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [2, 3, 10, 6],
                             "segmentation": [], "iscrowd": 0, "area": 60}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    assert main(["convert", "coco", "--json", str(tmp_path / "c.json"), "--images", str(images),
                 "--out", str(out), "--split", "train=1.0", "-q"]) == 0
    decoder = tf_example_decoder.TfExampleDecoder(load_instance_masks=True,
                                                  instance_mask_type=input_reader_pb2.PNG_MASKS)
    raw_a, raw_b = list(tf.data.TFRecordDataset([str(out / "tfrecords" / "train.record-00000-of-00001")]))
    masks = decoder.decode(raw_a)[fields.InputDataFields.groundtruth_instance_masks].numpy()
    assert masks.shape == (1, 30, 40)
    assert (masks[0] == Mask(polygons=(tuple(polygon),)).to_bitmap(40, 30)).all() and masks[0].sum() > 250
    # a box without an outline, in a dataset with masks, gets its filled box as mask
    masks_b = decoder.decode(raw_b)[fields.InputDataFields.groundtruth_instance_masks].numpy()
    assert masks_b.shape == (1, 30, 40) and masks_b[0].sum() == 60 and masks_b[0, 3:9, 2:12].all()
