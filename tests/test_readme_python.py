"""The README's Python session runs as written (every ```python block, in order, in one fresh
interpreter), and gives what the commands give on the same export and dataset: the same
detections (to 1e-4) as `medtfod detect` and the same metrics.json as `medtfod metrics`."""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from support import REPO
from support.cli import medtfod


def python_blocks() -> list:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)


def test_the_readme_has_a_python_session():
    blocks = python_blocks()
    assert len(blocks) >= 3
    code = "\n".join(blocks)
    for call in ("Dataset.convert", "medtfod.train", "ExportedModel.export", ".predict(", "medtfod.evaluate",
                 "medtfod.report"):
        assert call in code, call


def rows_of(path):
    with open(path, newline="") as f:
        return [(r["image"], r["label"], *(float(r[k]) for k in ("score", "xmin", "ymin", "xmax", "ymax")))
                for r in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.tf
def test_readme_python_session_equals_the_commands(tmp_path):
    script = tmp_path / "session.py"
    script.write_text("\n".join(python_blocks()))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    session = tmp_path / "session"
    for name in ("first.png", "report.html", "metrics.json", "detections/detections.csv", "exported/saved_model"):
        assert (session / name).exists(), name
    medtfod("detect", "--model", str(session / "exported"), "--dataset", str(session / "dataset"), "--split", "val",
            "--min-score", "0", "--out", str(tmp_path / "cli_detect"), "--no-draw", "-q", cwd=str(tmp_path))
    api, cli = rows_of(session / "detections" / "detections.csv"), rows_of(tmp_path / "cli_detect" / "detections.csv")
    assert len(api) == len(cli) > 0 and [r[:2] for r in api] == [r[:2] for r in cli]
    np.testing.assert_allclose([r[2:] for r in api], [r[2:] for r in cli], atol=1e-4)
    medtfod("metrics", "--detections", str(tmp_path / "cli_detect" / "detections.csv"), "--ground-truth",
            str(session / "dataset"), "--split", "val", "--out", str(tmp_path / "cli_metrics.json"),
            "--model", str(session / "exported"), "--min-score", "0.3", "--by", "sex", cwd=str(tmp_path))  # as the README
    api_metrics = json.loads((session / "metrics.json").read_text())
    cli_metrics = json.loads((tmp_path / "cli_metrics.json").read_text())
    assert api_metrics.keys() == cli_metrics.keys()
    def flat(d, p=""):
        if isinstance(d, list) and d and all(isinstance(v, dict) for v in d):   # strata: by position
            d = {str(k): v for k, v in enumerate(d)}
        return ({k2: v2 for k, v in d.items() for k2, v2 in flat(v, f"{p}{k}/").items()} if isinstance(d, dict)
                else {p: d})
    a, c = flat(api_metrics), flat(cli_metrics)
    assert a.keys() == c.keys()
    for key in a:  # the session's boxes are not rounded to the CSV's 0.01 px: equal to 1e-4
        if isinstance(a[key], (int, float)) and isinstance(c[key], (int, float)):
            assert a[key] == pytest.approx(c[key], abs=1e-4), key
        elif isinstance(a[key], list):
            np.testing.assert_allclose(np.array(a[key], float), np.array(c[key], float), atol=1e-4, err_msg=key)
        else:
            assert a[key] == c[key], key
