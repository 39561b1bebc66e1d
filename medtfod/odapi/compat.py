"""Compatibility fixes that let the TF2 Object Detection API run on current TensorFlow.

The OD API (`tf-object-detection-api==0.1`, upstream's last TF2 code) was written for
TF 2.x with Keras 2, Estimator and Pillow < 10. Each fix below is small, named, and
reversible in a test; `apply()` runs them all and must be called before
`object_detection` is imported (`medtfod.odapi.load()` does that).

Fixes (see ../shared/STACK.md for how each failure shows up without it):
  legacy_keras     TF_USE_LEGACY_KERAS=1 before TensorFlow loads (the OD API uses
                   `tf.keras.layers.experimental`, which Keras 3 does not have).
  estimator        a stand-in `tensorflow.compat.v1.estimator` (TF >= 2.16 has none;
                   `inputs.py` and `model_lib.py` import it at load but the TF2 path
                   only reads `ModeKeys`).
  slim_control_flow  tf-slim 1.1.0 calls `control_flow_ops.case/cond/while_loop/Assert`,
                   which TF moved to other modules; restore the aliases.
  pillow_getsize   Pillow >= 10 removed `FreeTypeFont.getsize`, used by the OD API's
                   `visualization_utils` while drawing eval images; provide it from
                   `getbbox` instead of pinning an old Pillow.
  tensorflow_io    `deepmac_meta_arch` imports `tensorflow_io` at load (for DeepMAC's
                   `rgb_to_lab` only). It has no Windows wheel and fails under TF 2.20,
                   so register a stand-in that raises if DeepMAC ever calls it.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Callable, Dict

FIX_NAMES = ("legacy_keras", "estimator", "slim_control_flow", "pillow_getsize", "tensorflow_io")

_STANDIN_MARK = "__medtfod_standin__"


class CompatError(RuntimeError):
    """A fix could not be applied (for example TensorFlow was imported too early)."""


# --- legacy_keras ---------------------------------------------------------------------

def fix_legacy_keras() -> None:
    """Select tf-keras (Keras 2) for `tf.keras`; must run before TensorFlow is imported."""
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        return
    if "tensorflow" in sys.modules:
        raise CompatError(
            "TensorFlow was imported before medtfod could set TF_USE_LEGACY_KERAS=1; "
            "import medtfod.odapi (or set TF_USE_LEGACY_KERAS=1 in the environment) first")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"


def legacy_keras_active() -> bool:
    return os.environ.get("TF_USE_LEGACY_KERAS") == "1"


# --- estimator ------------------------------------------------------------------------

class _ModeKeys:
    """The three Estimator mode names, as `tf.estimator.ModeKeys` defined them."""
    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "infer"


def _estimator_getattr(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"tf.estimator.{name} is not available: TensorFlow >= 2.16 has no Estimator and "
        "medtfod runs only the OD API's TF2 path (model_main_tf2 / exporter_main_v2)")


def fix_estimator() -> None:
    """Register a minimal `tensorflow.compat.v1.estimator` when TensorFlow has none."""
    name = "tensorflow.compat.v1.estimator"
    if name in sys.modules:
        return
    try:
        if importlib.util.find_spec("tensorflow_estimator") is not None:
            return  # a real Estimator is installed (TF <= 2.15); leave it alone
    except ValueError:
        pass
    module = types.ModuleType(name, "medtfod stand-in: Estimator was removed in TF 2.16")
    module.ModeKeys = _ModeKeys
    module.__getattr__ = _estimator_getattr
    setattr(module, _STANDIN_MARK, True)
    sys.modules[name] = module


def estimator_active() -> bool:
    return getattr(sys.modules.get("tensorflow.compat.v1.estimator"), _STANDIN_MARK, False)


# --- slim_control_flow ------------------------------------------------------------------

_CONTROL_FLOW_ALIASES = ("case", "cond", "while_loop", "Assert")


def fix_slim_control_flow() -> None:
    """Give `tensorflow.python.ops.control_flow_ops` back the functions tf-slim calls."""
    import tensorflow as tf  # noqa: imported after fix_legacy_keras by apply()
    from tensorflow.python.ops import control_flow_ops

    targets = {
        "case": tf.compat.v1.case,
        "cond": tf.compat.v1.cond,
        "while_loop": tf.compat.v1.while_loop,
        "Assert": tf.debugging.Assert,
    }
    for name, fn in targets.items():
        if not hasattr(control_flow_ops, name):
            setattr(control_flow_ops, name, fn)


def slim_control_flow_active() -> bool:
    if "tensorflow" not in sys.modules:
        return False
    from tensorflow.python.ops import control_flow_ops
    return all(hasattr(control_flow_ops, n) for n in _CONTROL_FLOW_ALIASES)


# --- pillow_getsize ---------------------------------------------------------------------

def _getsize(self, text, *args, **kwargs):
    """Pillow < 10 `getsize`: (width, height) of `text` including its offset."""
    left, top, right, bottom = self.getbbox(text, *args, **kwargs)
    return right, bottom


def fix_pillow_getsize() -> None:
    """Add `getsize` to Pillow's font classes when Pillow no longer has it."""
    from PIL import ImageFont

    for cls in (ImageFont.FreeTypeFont, ImageFont.ImageFont, getattr(ImageFont, "TransposedFont", None)):
        if cls is not None and not hasattr(cls, "getsize"):
            cls.getsize = _getsize


def pillow_getsize_active() -> bool:
    from PIL import ImageFont
    return hasattr(ImageFont.FreeTypeFont, "getsize")


# --- tensorflow_io ----------------------------------------------------------------------

def _tfio_getattr(name: str):
    if name.startswith("__"):
        raise AttributeError(name)  # module introspection (AutoGraph, inspect) must keep working
    raise AttributeError(
        f"tensorflow_io.{name} was requested, but tensorflow-io is not installed "
        "(it has no Windows wheel and does not load under TF 2.20). Only the OD API's "
        "DeepMAC model needs it; medtfod's models do not.")


def fix_tensorflow_io() -> None:
    """Register a stand-in `tensorflow_io` module when the real one is not installed."""
    if "tensorflow_io" in sys.modules:
        return
    if importlib.util.find_spec("tensorflow_io") is not None:
        return
    module = types.ModuleType("tensorflow_io", "medtfod stand-in for the missing tensorflow-io")
    module.__getattr__ = _tfio_getattr
    setattr(module, _STANDIN_MARK, True)
    sys.modules["tensorflow_io"] = module


def tensorflow_io_active() -> bool:
    return getattr(sys.modules.get("tensorflow_io"), _STANDIN_MARK, False)


# --- all --------------------------------------------------------------------------------

FIXES: Dict[str, Callable[[], None]] = {
    "legacy_keras": fix_legacy_keras,
    "estimator": fix_estimator,
    "slim_control_flow": fix_slim_control_flow,
    "pillow_getsize": fix_pillow_getsize,
    "tensorflow_io": fix_tensorflow_io,
}

CHECKS: Dict[str, Callable[[], bool]] = {
    "legacy_keras": legacy_keras_active,
    "estimator": estimator_active,
    "slim_control_flow": slim_control_flow_active,
    "pillow_getsize": pillow_getsize_active,
    "tensorflow_io": tensorflow_io_active,
}


def apply(skip: tuple = ()) -> None:
    """Apply every fix in order (legacy_keras first: it must precede the TensorFlow import).

    Args:
      skip: names from FIX_NAMES to leave out (tests use this to show each fix is needed;
        also settable as MEDTFOD_COMPAT_SKIP=name,name).
    """
    skip = set(skip) | {s for s in os.environ.get("MEDTFOD_COMPAT_SKIP", "").split(",") if s}
    unknown = skip - set(FIX_NAMES)
    if unknown:
        raise CompatError(f"unknown compatibility fix {sorted(unknown)}; known: {', '.join(FIX_NAMES)}")
    for name in FIX_NAMES:
        if name not in skip:
            FIXES[name]()


def status() -> Dict[str, bool]:
    """Which fixes are in effect now (name -> bool)."""
    return {name: bool(CHECKS[name]()) for name in FIX_NAMES}
