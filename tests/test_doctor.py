import io

import pytest

pytestmark = pytest.mark.tf


def test_doctor_reports_and_builds_a_model():
    from medtfod.doctor import doctor
    out = io.StringIO()
    assert doctor(out) == 0
    text = out.getvalue()
    for needle in ("python", "tensorflow", "tf-keras", "tf-object-detection-api", "protobuf", "pillow",
                   "fix legacy_keras", "fix tensorflow_io", "GPUs", "OD API model build"):
        assert needle in text
    assert "NOT ACTIVE" not in text and "ok: built SSDMetaArch" in text


def test_doctor_fails_with_reason(monkeypatch):
    from medtfod import doctor as doctor_mod
    from medtfod.odapi import checks

    def broken(image_size=64):
        raise ValueError("no kernel for DepthwiseConv2dNative")
    monkeypatch.setattr(checks, "build_and_run_ssd", broken)
    out = io.StringIO()
    assert doctor_mod.doctor(out) == 1
    assert "FAILED: ValueError: no kernel for DepthwiseConv2dNative" in out.getvalue()


def test_doctor_names_the_tensorboard_fix(monkeypatch):
    """TensorBoard 2.20 without pkg_resources (setuptools >= 81): doctor fails and names the fix."""
    import builtins

    from medtfod import doctor as doctor_mod
    real_import = builtins.__import__

    def no_pkg_resources(name, *args, **kwargs):
        if name == "pkg_resources":
            raise ModuleNotFoundError("No module named 'pkg_resources'")
        return real_import(name, *args, **kwargs)
    import sys

    import tensorboard
    for name in [m for m in sys.modules if m == "tensorboard.default" or m == "pkg_resources"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(tensorboard, "default", raising=False)  # set on the package by an earlier import
    monkeypatch.setattr(builtins, "__import__", no_pkg_resources)
    out = io.StringIO()
    assert doctor_mod.doctor(out) == 1
    assert "TensorBoard import" in out.getvalue() and 'pip install "setuptools<81"' in out.getvalue()
