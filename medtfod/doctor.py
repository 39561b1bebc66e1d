"""`medtfod doctor`: versions, compatibility fixes, GPUs, and whether the OD API can build a model."""
from __future__ import annotations

import platform
import sys
from importlib import metadata

PACKAGES = ("tensorflow", "tensorflow-cpu", "tf-keras", "tf-object-detection-api", "tf-models-official",
            "tf-slim", "protobuf", "pillow", "numpy", "pycocotools", "tensorboard", "setuptools")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _annotate_checks(out) -> None:
    """labelImg for `medtfod annotate` (optional: reported, never a failure of the installation)."""
    from .review.annotate import display_problem, labelimg_version, missing_qt_libraries
    version = labelimg_version()
    if version is None:
        print(f"{'labelImg (annotate)':<26} not installed (optional: scripts/bootstrap.py install --annotate)", file=out)
        return
    print(f"{'labelImg (annotate)':<26} {version}, PyQt5 {_version('PyQt5')}", file=out)
    print(f"{'annotate display':<26} {display_problem() or 'ok'}", file=out)
    missing, packages = missing_qt_libraries()
    print(f"{'annotate Qt libraries':<26} " + (f"MISSING {', '.join(missing)}: sudo apt-get install "
                                              f"{' '.join(packages)}" if missing else "ok"), file=out)


def doctor(out=sys.stdout) -> int:
    """Print the report; return 0 when TensorBoard imports and the OD API can build and run a model, else 1."""
    print(f"{'python':<26} {platform.python_version()} ({sys.executable})", file=out)
    for name in PACKAGES:
        version = _version(name)
        if name == "tensorflow-cpu" and version == "not installed":
            continue
        print(f"{name:<26} {version}", file=out)
    healthy = True
    try:
        from .training.board import import_tensorboard
        import_tensorboard()
        print(f"{'TensorBoard import':<26} ok", file=out)
    except Exception as e:  # noqa: BLE001 - reported, and the rest of the checks still run
        print(f"{'TensorBoard import':<26} FAILED: {e}", file=out)
        healthy = False
    _annotate_checks(out)
    try:
        from .odapi import compat
        from .odapi.runtime import gpus, import_tensorflow
        import_tensorflow(verbose=False)
        for fix, active in compat.status().items():
            print(f"{'fix ' + fix:<26} {'active' if active else 'NOT ACTIVE'}", file=out)
        visible = gpus()
        print(f"{'GPUs':<26} {', '.join(visible) if visible else 'none (training runs on the CPU)'}", file=out)
        from .odapi.checks import build_and_run_ssd
        print(f"{'OD API model build':<26} ok: {build_and_run_ssd()}", file=out)
    except Exception as e:  # doctor reports every failure instead of crashing
        print(f"{'OD API model build':<26} FAILED: {type(e).__name__}: {e}", file=out)
        print("the TF Object Detection API cannot build a model in this environment; "
              "reinstall with the README's set-up command", file=out)
        return 1
    return 0 if healthy else 1
