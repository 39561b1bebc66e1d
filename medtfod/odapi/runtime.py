"""Load TensorFlow (and the OD API) with the compatibility fixes applied, quietly; send their
own output to a log file (`library_log`)."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from typing import Optional

from . import compat

LOG_NAME = "medtfod.log"
# the top-level modules of the full install that the light ONNX install (bootstrap.py install --runtime) lacks
TF_MODULES = ("tensorflow", "object_detection", "tf_keras", "tf_slim", "official", "tf2onnx")
NEEDS_TF = ("this command needs TensorFlow and the OD API, which this environment does not have (the light "
            "install runs detect --runtime onnx, metrics and report); install them with "
            "python scripts/bootstrap.py install")
_active_log: Optional[str] = None  # the log file while `library_log` is active
_live = False                       # ... and whether it also shows the log live (-v)


def import_tensorflow(verbose: bool = True):
    """Apply every compatibility fix and return the `tensorflow` module.

    TensorFlow's C++ start-up chatter is hidden (TF_CPP_MIN_LOG_LEVEL=2 unless the user set
    it); the OD API's own progress lines (step, loss, metrics) stay visible when `verbose`.
    """
    import importlib.util
    if importlib.util.find_spec("tensorflow") is None:
        from ..core.errors import UserError
        raise UserError(NEEDS_TF)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    compat.apply()  # legacy_keras runs before the import below, the rest patch loaded modules
    import tensorflow as tf
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # absl's INFO lines are internal chatter
    tf.get_logger().setLevel(logging.INFO if verbose or _active_log else logging.WARNING)
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
    if _active_log:  # library_log owns the handlers: everything to the file (and the terminal with -v)
        tf_logger.setLevel(logging.INFO)
        return
    if not tf_logger.handlers:  # TF adds its own handler only when the root logger had none
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        tf_logger.addHandler(handler)
    tf_logger.propagate = False
    tf_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)


@contextlib.contextmanager
def library_log(final: Optional[str], verbose: bool = False, whose: str = "TensorFlow's and the OD API's",
                keep_on_user_error: bool = True):
    """Send TensorFlow's, the OD API's and their libraries' own output to a log file for the
    duration of the block; medtfod's own lines and progress bars stay on the terminal.

    The log is written to a temporary file and, at the end, appended to `final` (e.g.
    MODEL_DIR/medtfod.log) when `final`'s folder exists then; a command refused before it
    made its output folder leaves nothing behind. When there is no such folder (or `final`
    is None) the temporary file is removed, unless the block failed: then it is kept.

    * Python loggers (tensorflow, absl, the root logger, warnings): to the file, and also to
      the terminal when `verbose`.
    * C/C++ output on file descriptor 2 (the CUDA probe's "failed call to cuInit" on a
      machine without a GPU, XLA): to the file unless `verbose`; Python's `sys.stderr` keeps
      writing to the terminal through a duplicate of the original descriptor.
    * Text the libraries print to stdout (pycocotools' tables) is sent here by `quiet_stdout`.

    When the block raises, the log file is named on stderr, so a failure can be followed up
    (not for a `UserError` when `keep_on_user_error` is False: its message says it all).
    """
    global _active_log, _live
    import shutil
    import tempfile
    fd, path = tempfile.mkstemp(prefix="medtfod-", suffix=".log")
    log = open(fd, "a", encoding="utf-8", buffering=1)
    to_file = logging.StreamHandler(log)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers = [to_file]
    if verbose:
        live = logging.StreamHandler(sys.stderr)
        live.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        handlers.append(live)
    names = ("", "tensorflow", "absl", "py.warnings")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level)
             for n in names}
    for n in names:
        logger = logging.getLogger(n)
        # handlers that print (to a terminal) are replaced; others (a caller's timer) stay
        kept = [h for h in logger.handlers
                if not isinstance(h, logging.StreamHandler) and type(h).__name__ != "ABSLHandler"]
        logger.handlers = list(handlers) + kept
        logger.propagate = n == ""
    logging.getLogger("tensorflow").setLevel(logging.INFO)
    logging.getLogger("tensorflow").propagate = False
    logging.captureWarnings(True)
    saved_stderr, terminal_fd = sys.stderr, None
    if not verbose:
        sys.stderr.flush()
        terminal_fd = os.dup(2)
        os.dup2(log.fileno(), 2)
        sys.stderr = io.TextIOWrapper(io.FileIO(terminal_fd, "w", closefd=False), encoding="utf-8",
                                      errors="replace", line_buffering=True)
    _active_log, _live = path, verbose
    failed = False
    try:
        yield path
    except BaseException as e:
        from ..core.errors import UserError
        failed = keep_on_user_error or not isinstance(e, UserError)
        raise
    finally:
        _active_log, _live = None, False
        if terminal_fd is not None:
            sys.stderr.flush()
            os.dup2(terminal_fd, 2)
            os.close(terminal_fd)
            sys.stderr = saved_stderr
        logging.captureWarnings(False)
        for n, (old, propagate, level) in saved.items():
            logger = logging.getLogger(n)
            logger.handlers, logger.propagate = old, propagate
            logger.setLevel(level)
        log.close()
        kept = path
        if os.path.getsize(path) == 0:  # nothing was logged (e.g. refused before TensorFlow loaded)
            os.unlink(path)
            failed = False
        elif final and os.path.isdir(os.path.dirname(os.path.abspath(final))):
            with open(final, "ab") as out, open(path, "rb") as f:
                shutil.copyfileobj(f, out)
            os.unlink(path)
            kept = final
        elif not failed:
            os.unlink(path)
        if failed:
            print(f"medtfod: {whose} log is in {kept}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_stdout():
    """While `library_log` is active without `verbose`, send what libraries print to stdout
    (pycocotools' evaluation tables) to its file too."""
    if _active_log is None or _live:
        yield
        return
    with open(_active_log, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f):
        yield

