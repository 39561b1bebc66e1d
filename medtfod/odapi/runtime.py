"""Load TensorFlow (and the OD API) with the compatibility fixes applied, quietly."""
from __future__ import annotations

import logging
import os

from . import compat


def import_tensorflow(verbose: bool = True):
    """Apply every compatibility fix and return the `tensorflow` module.

    TensorFlow's C++ start-up chatter is hidden (TF_CPP_MIN_LOG_LEVEL=2 unless the user set
    it); the OD API's own progress lines (step, loss, metrics) stay visible when `verbose`.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    compat.apply()  # legacy_keras runs before the import below, the rest patch loaded modules
    import tensorflow as tf
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # absl's INFO lines are internal chatter
    tf.get_logger().setLevel(logging.INFO if verbose else logging.WARNING)
    return tf


def gpus():
    """Names of the GPUs TensorFlow can see."""
    tf = import_tensorflow(verbose=False)
    return [d.name for d in tf.config.list_physical_devices("GPU")]


def tidy_logging(verbose: bool = True) -> None:
    """Undo the logging set-up that importing the OD API brings along.

    `lvis` (imported by the OD API's evaluators) calls `logging.basicConfig` at import, so
    every TensorFlow line would print twice and absl's debug chatter would show. Keep one
    copy of TensorFlow's lines (the OD API's step, loss and metric reports) and only
    warnings from everything else.
    """
    import warnings

    import tensorflow as tf
    from tensorflow.python.util import deprecation

    # The 2022 OD API calls many APIs TensorFlow has since deprecated; the notices say
    # nothing a user can act on, and they bury the step/loss lines.
    deprecation._PRINT_DEPRECATION_WARNINGS = False  # noqa: SLF001
    warnings.filterwarnings("ignore", message=r".*set_learning_phase.*", category=UserWarning)
    tf_logger = tf.get_logger()
    if not tf_logger.handlers:  # TF adds its own handler only when the root logger had none
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        tf_logger.addHandler(handler)
    tf_logger.propagate = False
    tf_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
