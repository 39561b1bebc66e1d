"""Stand-in detectors whose answers the tests know."""


def blob_finder(tf, shift=0.0, score=0.9):
    """A SavedModel-like module: one box around the pixels brighter than 128 (class 1, `score`),
    moved right by `shift` (normalized): a detector whose answer we know. An image without such
    pixels gets no detection."""
    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
        def __call__(self, images):
            bright = tf.reduce_max(images, axis=3) > 128
            rows, cols = tf.reduce_any(bright, axis=2)[0], tf.reduce_any(bright, axis=1)[0]
            h, w = tf.cast(tf.shape(rows)[0], tf.float32), tf.cast(tf.shape(cols)[0], tf.float32)
            first = lambda v: tf.cast(tf.argmax(tf.cast(v, tf.int32)), tf.float32)  # noqa: E731
            box = tf.stack([first(rows) / h, first(cols) / w + shift,
                            (h - first(tf.reverse(rows, [0]))) / h, (w - first(tf.reverse(cols, [0]))) / w + shift])
            found = tf.cast(tf.reduce_any(bright), tf.float32)
            return {"detection_boxes": box[None, None] * found, "detection_scores": tf.constant([[score]]) * found,
                    "detection_classes": tf.constant([[1.0]]), "num_detections": found[None]}
    return Module()


def batched_blob_finder(tf, shift=0.0, score=0.9):
    """`blob_finder` as a `float_image_tensor` export: float32 images, any number per call."""
    one = blob_finder(tf, shift, score)

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            def each(image):
                r = one.__call__(tf.cast(image, tf.uint8)[None])
                return r["detection_boxes"][0], r["detection_scores"][0], r["detection_classes"][0], r["num_detections"][0]
            boxes, scores, classes, n = tf.map_fn(each, images, fn_output_signature=(
                tf.TensorSpec([1, 4], tf.float32), tf.TensorSpec([1], tf.float32), tf.TensorSpec([1], tf.float32),
                tf.TensorSpec([], tf.float32)))
            return {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes,
                    "num_detections": n}
    module = Module()
    module.one = one
    return module
