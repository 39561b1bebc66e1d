"""Run one OD API operation that a compatibility fix exists for; used by test_compat.py.

    python tests/compat_probe.py CHECK [CHECK...]      (MEDTFOD_COMPAT_SKIP=fix leaves a fix out)

Prints 'ok CHECK' for each check that works; lets the failure propagate otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check_model_build():          # needs legacy_keras and tensorflow_io
    from medtfod.odapi.checks import build_and_run_ssd
    build_and_run_ssd(image_size=64)


def check_inputs_import():        # needs estimator
    from object_detection import inputs  # noqa: F401


def check_decode():               # needs slim_control_flow
    import tensorflow as tf
    from object_detection.data_decoders import tf_example_decoder
    from medtfod.core.annotations import ImageRecord, Object
    from medtfod.core.boxes import Box
    from medtfod.core.labelmap import LabelMap
    from medtfod.data.writers.tfrecord import example_bytes
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", (8, 6)).save(buf, "PNG")
    record = ImageRecord("a.png", "a.png", 8, 6, 1, "png", "1", [Object("x", Box(1, 1, 4, 5))])
    decoded = tf_example_decoder.TfExampleDecoder().decode(
        tf.constant(example_bytes(record, buf.getvalue(), LabelMap.from_names(["x"]))))
    assert decoded["image"].shape == (6, 8, 3)


def check_draw_label():           # needs pillow_getsize
    from PIL import Image
    from object_detection.utils import visualization_utils
    image = Image.new("RGB", (64, 64))
    visualization_utils.draw_bounding_box_on_image(image, 0.1, 0.1, 0.5, 0.5, display_str_list=["Nodule: 90%"])


CHECKS = {"model_build": check_model_build, "inputs_import": check_inputs_import,
          "decode": check_decode, "draw_label": check_draw_label}

if __name__ == "__main__":
    from medtfod.odapi.runtime import import_tensorflow
    import_tensorflow(verbose=False)
    for name in sys.argv[1:]:
        CHECKS[name]()
        print("ok", name, flush=True)
