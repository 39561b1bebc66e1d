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
