"""Best-checkpoint selection and patience, driven by scripted metric sequences."""
import json
import math
import os

import pytest

from medtfod.core.errors import UserError
from medtfod.training.selection import METRICS, Selection, append_history, default_metric, metric_key, read_best, resume, save_best

KEY = METRICS["froc_mean"]


def feed(selection, values, start=100):
    return [selection.update(start * (i + 1), {KEY: v}) for i, v in enumerate(values)]


def test_first_finite_value_is_best_ties_and_nan_never_improve():
    s = Selection("froc_mean")
    assert feed(s, [math.nan, 0.5, 0.5, 0.7, math.nan, 0.6]) == [False, True, False, True, False, False]
    assert (s.best_step, s.best_value, s.since_best) == (400, 0.7, 2)
    assert not s.stop  # no patience: never stops


def test_min_delta_compares_with_the_best_not_the_last():
    s = Selection("froc_mean", min_delta=0.05)
    assert feed(s, [0.5, 0.54, 0.56]) == [True, False, True]  # +0.04 is not enough; +0.06 over 0.5 is
    assert (s.best_step, s.best_value) == (300, 0.56)


def test_patience_counts_evaluations_without_improvement():
    s = Selection("ap50", patience=2, min_delta=0.01)
    key = METRICS["ap50"]
    assert s.update(100, {key: 0.3}) and not s.stop
    assert not s.update(200, {key: 0.305}) and not s.stop   # under min_delta
    assert not s.update(300, {key: float("nan")}) and s.stop  # two without improvement
    assert s.update(400, {key: 0.4}) and not s.stop and s.best_step == 400


def test_unknown_metric_lists_the_valid_names():
    with pytest.raises(UserError, match="did you mean 'froc_mean'.*valid: coco_map, ap50, ap10, froc_mean, auc"):
        metric_key("froc")
    assert default_metric(5, 10) == "froc_mean" and default_metric(10, 10) == "ap50"


def test_history_resumes_and_best_copy_is_complete(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for step, value in ((100, 0.2), (200, 0.6), (300, 0.4)):
        append_history(str(model), {"step": step, "metrics": {KEY: value}, "seconds": 1.0})
    s = resume(str(model), "froc_mean", patience=3, min_delta=0.0)
    assert (s.best_step, s.best_value, s.since_best) == (200, 0.6, 1)
    for n in (2, 3):
        (model / f"ckpt-{n}.index").write_bytes(b"i%d" % n)
        (model / f"ckpt-{n}.data-00000-of-00001").write_bytes(b"d%d" % n)
    save_best(str(model), str(model / "ckpt-2"), {"step": 200, "metric": "froc_mean", "value": 0.6})
    save_best(str(model), str(model / "ckpt-3"), {"step": 300, "metric": "froc_mean", "value": 0.7})
    best = model / "best"
    assert sorted(os.listdir(best)) == ["best.json", "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert read_best(str(model))["checkpoint"] == "ckpt-3" and read_best(str(model))["step"] == 300
    assert 'model_checkpoint_path: "ckpt-3"' in (best / "checkpoint").read_text()
    assert json.loads((best / "best.json").read_text())["value"] == 0.7
    with pytest.raises(UserError, match="not found"):
        save_best(str(model), str(model / "ckpt-9"), {})
