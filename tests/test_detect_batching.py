"""detect batches images of one size through a float_image_tensor export and gives the same
outputs as one image per call; tiny stand-in SavedModels whose detections depend on each image,
so a batch put back in the wrong order would show."""
import os

import numpy as np
import pytest
from PIL import Image

from medtfod.inference.detect import DetectOutputs, detect
from medtfod.inference.predictor import model_input
from medtfod.inference.predictor import PredictOptions
from medtfod.core.errors import UserError

pytestmark = pytest.mark.tf


def stand_in(tf, shape, dtype, calls):
    """A SavedModel-like module: one box per image, at the image's brightest quarter row band,
    scored by its mean brightness; counts the images per call in `calls`."""
    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(shape, dtype)])
        def __call__(self, images):
            images = tf.cast(images, tf.float32)
            n = tf.shape(images)[0]
            score = tf.reduce_mean(images, axis=[1, 2, 3]) / 255.0
            band = tf.cast(tf.argmax(tf.reduce_mean(images, axis=[2, 3]), axis=1), tf.float32) / \
                tf.cast(tf.shape(images)[1], tf.float32)
            boxes = tf.stack([band * 0.5, tf.fill([n], 0.1), band * 0.5 + 0.5, tf.fill([n], 0.6)], axis=1)
            return {"detection_boxes": boxes[:, None], "detection_scores": score[:, None],
                    "detection_classes": tf.ones([n, 1]), "num_detections": tf.ones([n])}

    module = Module()
    module.calls = calls
    return module


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    root = tmp_path_factory.mktemp("standins")
    paths = {}
    for name, shape, dtype in (("image", [1, None, None, 3], tf.uint8), ("float", [None, None, None, 3], tf.float32),
                               ("encoded", [None], tf.string)):
        folder = root / name
        if name == "encoded":
            class Encoded(tf.Module):
                @tf.function(input_signature=[tf.TensorSpec(shape, dtype)])
                def __call__(self, x):
                    return {"num_detections": tf.zeros([tf.shape(x)[0]])}
            module = Encoded()
        else:
            module = stand_in(tf, shape, dtype, [])
        tf.saved_model.save(module, str(folder / "saved_model"),
                            signatures=module.__call__.get_concrete_function())
        (folder / "label_map.pbtxt").write_text('item { id: 1 name: "Mass" }\n')
        paths[name] = str(folder)
    return tf, paths


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(11):
        size = (64, 48) if i % 4 == 3 else (80, 80)  # sizes change mid-stream, a batch holds one
        pixels = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
        pixels[(i * 5) % size[1]] = 250  # a bright row picks the box position
        Image.fromarray(pixels).save(folder / f"im{i:02d}.png")
    (folder / "im05.png").write_bytes(b"not a png")
    return folder


def test_model_input_reads_the_signature(models):
    tf, paths = models
    assert model_input(tf.saved_model.load(os.path.join(paths["image"], "saved_model")), 8) == (1, np.uint8)
    assert model_input(tf.saved_model.load(os.path.join(paths["float"], "saved_model")), 8) == (8, np.float32)
    with pytest.raises(UserError, match="image_tensor or float_image_tensor"):
        model_input(tf.saved_model.load(os.path.join(paths["encoded"], "saved_model")), 8)


def test_batched_detect_equals_one_image_per_call(models, images, tmp_path):
    tf, paths = models
    outs = {}
    for name, batch in (("image", 8), ("float", 4), ("float", 1)):
        model = tf.saved_model.load(os.path.join(paths[name], "saved_model"))
        calls = []
        original = model.__call__
        model_fn = lambda x, original=original, calls=calls: (calls.append(int(x.shape[0])), original(x))[1]
        model_fn.signatures = model.signatures
        out = tmp_path / f"{name}{batch}"
        summary = detect(paths[name], str(out), images=str(images),
                         options=PredictOptions(min_score=0.0, batch_size=batch),
                         outputs=DetectOutputs(quiet=True),
                         detect_fns=[model_fn])
        assert summary["images"] == 11 and summary["detections"] == 10 and len(summary["skipped"]) == 1
        outs[(name, batch)] = ((out / "detections.csv").read_text(), (out / "images.csv").read_text(), calls)
    assert outs[("image", 8)][2] == [1] * 10
    # im00-02 80x80 | im03 64x48 | im04, im06 80x80 (im05 unreadable) | im07 64x48 | im08-10 80x80
    assert outs[("float", 4)][2] == [3, 1, 2, 1, 3]
    assert outs[("float", 1)][2] == [1] * 10
    for key in (("float", 4), ("float", 1)):
        assert outs[key][:2] == outs[("image", 8)][:2]
    assert "im05.png,,,unreadable" in outs[("float", 4)][1]


def test_no_draw_writes_the_tables_only(models, images, tmp_path):
    tf, paths = models
    out = tmp_path / "tables"
    detect(paths["float"], str(out), images=str(images),
           options=PredictOptions(min_score=0.0),
           outputs=DetectOutputs(quiet=True, draw=False))
    assert sorted(p.name for p in out.iterdir()) == [".medtfod-detect", "coco_results.json", "detections.csv",
                                                     "detections.json", "images.csv"]
    assert len((out / "detections.csv").read_text().splitlines()) == 11  # header + 10 readable images
