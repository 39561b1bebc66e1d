"""Each compatibility fix is needed: without it the OD API operation it exists for fails."""
import os
import subprocess
import sys

import pytest

import compat_probe

pytestmark = pytest.mark.tf
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat_probe.py")


def run_probe(check, skip):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["MEDTFOD_COMPAT_SKIP"] = skip
    return subprocess.run([sys.executable, PROBE, check], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("fix, check, failure", [
    ("legacy_keras", "model_build", "has no attribute 'experimental'"),
    ("estimator", "inputs_import", "cannot import name 'estimator'"),
    ("slim_control_flow", "decode", "control_flow_ops' has no attribute 'case'"),
    ("pillow_getsize", "draw_label", "has no attribute 'getsize'"),
    ("tensorflow_io", "model_build", "No module named 'tensorflow_io'"),
])
def test_fix_is_needed(fix, check, failure):
    result = run_probe(check, skip=fix)
    assert result.returncode != 0, f"{check} worked without the {fix} fix; the fix may be obsolete"
    assert failure in result.stderr


def test_all_checks_pass_with_every_fix():
    from medtfod.odapi import compat
    from medtfod.odapi.runtime import import_tensorflow
    import_tensorflow(verbose=False)
    assert all(compat.status().values()), compat.status()
    for check in compat_probe.CHECKS.values():
        check()


def test_tensorflow_io_standin_explains():
    from medtfod.odapi.runtime import import_tensorflow
    import_tensorflow(verbose=False)
    import tensorflow_io
    with pytest.raises(AttributeError, match="only the OD API's DeepMAC|Only the OD API's DeepMAC"):
        tensorflow_io.experimental
