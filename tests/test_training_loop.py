"""The training loop around the OD API's: resume after a kill, evaluation every N steps,
evaluating every checkpoint, and stopping on a NaN loss. One tiny dataset is shared; the
TF tests train a tiny SSD on 128-px images (about 5 minutes in all on 2 CPU cores)."""
import json
import logging
import os
import signal

import numpy as np
import pytest

from support.training import saved_step, train_killed_and_resumed
from medtfod.core.errors import UserError
from medtfod.odapi.train import NanLossWatch, NonFiniteLoss
from medtfod.training.trainer import TrainOptions, segment_ends, train


# --- fast: no TensorFlow ------------------------------------------------------------------

@pytest.mark.parametrize("start, final, every, expected", [
    (0, 200, 100, [100, 200]),
    (0, 500, 200, [200, 400, 500]),
    (300, 1000, 200, [400, 600, 800, 1000]),  # a resumed run keeps the same evaluation steps
    (400, 400, 200, []),
    (0, 100, 500, [100]),
])
def test_segment_ends(start, final, every, expected):
    assert segment_ends(start, final, every) == expected


def report(logger, step, loss):
    logger.info("Step %d per-step time 0.100s", step)
    logger.info("{'Loss/classification_loss': np.float32(0.5),\n 'Loss/total_loss': %s,\n "
                "'learning_rate': np.float32(0.04)}", loss)


@pytest.mark.parametrize("loss", ["np.float32(nan)", "nan", "np.float32(inf)", "-inf"])
def test_nan_loss_watch_stops_at_a_non_finite_report(loss):
    logger = logging.getLogger("medtfod-test-nan-watch")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    watch = NanLossWatch()
    logger.addHandler(watch)
    try:
        report(logger, 100, "np.float32(1.25)")
        report(logger, 200, "2.5e-01")  # numpy 1 prints bare floats
        with pytest.raises(NonFiniteLoss) as info:
            report(logger, 300, loss)
    finally:
        logger.removeHandler(watch)
    assert info.value.step == 300 and info.value.last_finite == 200


def test_eval_every_must_be_a_multiple_of_100(tmp_path):
    config = tmp_path / "pipeline.config"
    config.write_text("")
    with pytest.raises(UserError, match="use --eval-every 200"):
        train(str(config), str(tmp_path / "model"), options=TrainOptions(steps=400, eval_every=150))


def test_selection_flags_are_checked_before_training(tmp_path, capsys):
    from medtfod.cli import main
    config = tmp_path / "pipeline.config"
    config.write_text("")
    model = str(tmp_path / "model")
    assert main(["train", "--config", str(config), "--model-dir", model, "--patience", "3"]) == 1
    assert "--patience needs --eval-every" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--model-dir", model, "--eval-every", "100",
                 "--select-by", "froc"]) == 1
    assert "did you mean 'froc_mean'" in capsys.readouterr().err
    assert main(["eval", "--config", str(config), "--model-dir", model, "--select-by", "ap50"]) == 1
    assert "use it with --all" in capsys.readouterr().err
    assert not os.path.exists(model)


# --- TensorFlow: a tiny SSD ---------------------------------------------------------------

def make_config(dataset, out, learning_rate):
    from medtfod.cli import main
    from medtfod.demo import DEMO_OVERRIDES
    overrides = [a for k, v in DEMO_OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", dataset, "--out", out,
                 "--steps", "300", "--batch-size", "2", "--image-size", "128",
                 "--learning-rate", learning_rate, "--warmup-steps", "20", *overrides]) == 0
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from medtfod.data import demo_data
    from medtfod.cli import main

    root = tmp_path_factory.mktemp("loop")
    source = demo_data.generate(str(root / "source"), num_images=24, size=128, seed=5)
    dataset = str(root / "dataset")
    assert main(["convert", "nih", "--bbox-csv", source["bbox_csv"], "--images", source["images"],
                 "--data-entry", source["data_entry"], "--label-map", source["label_map"],
                 "--out", dataset, "-q"]) == 0
    return {"root": root, "dataset": dataset,
            "config": make_config(dataset, str(root / "pipeline.config"), "0.04")}


def evaluated_once(model_dir):
    path = os.path.join(model_dir, "evaluations.jsonl")
    return os.path.isfile(path) and open(path).read().count("\n") >= 1


@pytest.fixture(scope="module")
def evaluated(data, tmp_path_factory):
    """200 steps evaluated every 100 and selected by AP@0.1, in a subprocess killed right after
    its first evaluation, then resumed (one training run, shared by the tests below)."""
    root = tmp_path_factory.mktemp("eval_every")
    model_dir = str(root / "model")
    run = train_killed_and_resumed(data["config"], model_dir, steps=200, every=100, log_path=root / "first.log",
                                   timeout=500, extra=["--eval-every", "100", "--select-by", "ap10"],
                                   ready=evaluated_once)
    return {"model_dir": model_dir, "run": run}


@pytest.mark.tf
@pytest.mark.slow
def test_resume_after_kill_keeps_the_best_checkpoint(data, evaluated, tmp_path, capsys):
    """Killed right after the first evaluation, then resumed: the history continues (each step
    evaluated once), best/ holds the step with the highest AP@0.1 in evaluations.jsonl, and
    export exports that step by default: the exported checkpoint's weights are best/'s."""
    from medtfod.cli import main
    from medtfod.odapi.runtime import import_tensorflow
    from medtfod.training.selection import METRICS, read_best, read_history
    model_dir, run = evaluated["model_dir"], evaluated["run"]
    assert run["killed"] == -signal.SIGKILL
    assert run["returncode"] == 0, run["output"][-3000:]
    assert 100 <= run["saved"] < 200 and run["final"] == 200
    assert "step 100: mAP@0.5" in run["first_output"] and "continuing the run's 1 evaluations" in run["output"]
    # The OD API reports every block of 100 steps it runs: the restart ran only those after `saved`.
    assert run["reported"] == list(range(run["saved"] + 100, 201, 100)), run["output"][-3000:]
    history = read_history(model_dir)
    assert [r["step"] for r in history] == [100, 200]
    values = [r["metrics"][METRICS["ap10"]] for r in history]
    best = read_best(model_dir)
    assert best["step"] == history[values.index(max(values))]["step"] and best["metric"] == "ap10"
    assert best["value"] == pytest.approx(max(values))
    capsys.readouterr()
    out = str(tmp_path / "export")
    assert main(["export", "--config", data["config"], "--model-dir", model_dir, "--out", out, "-q"]) == 0
    assert f"exporting the best checkpoint: step {best['step']}, ap10" in capsys.readouterr().out
    tf = import_tensorflow(verbose=False)
    exported = tf.train.load_checkpoint(os.path.join(out, "checkpoint", "ckpt-0"))
    chosen = tf.train.load_checkpoint(os.path.join(model_dir, best["checkpoint"]))
    other = next(r for r in history if r["step"] != best["step"])
    rejected = tf.train.load_checkpoint(os.path.join(model_dir, other["checkpoint"]))
    names = [n for n in exported.get_variable_to_shape_map()
             if n.startswith("model/") and "OPTIMIZER_SLOT" not in n and exported.get_tensor(n).size > 1]
    assert len(names) > 50
    assert all(np.array_equal(exported.get_tensor(n), chosen.get_tensor(n)) for n in names)
    assert not all(np.array_equal(exported.get_tensor(n), rejected.get_tensor(n)) for n in names)


@pytest.mark.tf
@pytest.mark.slow
def test_eval_every_writes_metrics_per_segment(evaluated):
    model_dir = evaluated["model_dir"]
    for step in (100, 200):
        result = json.load(open(os.path.join(model_dir, f"metrics-{step}.json")))
        assert result["step"] == step
        assert 0.0 <= result["metrics"]["DetectionBoxes_Precision/mAP@.50IOU"] <= 1.0
    assert json.load(open(os.path.join(model_dir, "metrics.json")))["step"] == 200
    assert saved_step(model_dir) == 200


def eval_event_steps(model_dir, tag="DetectionBoxes_Precision/mAP"):
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    steps = []
    for folder, _, files in os.walk(os.path.join(model_dir, "eval")):  # eval/<eval input name>/
        for name in files:
            if name.startswith("events.out.tfevents."):
                for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
                    steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


@pytest.mark.tf
@pytest.mark.slow
def test_evaluate_all_checkpoints(data, evaluated):
    from medtfod.evaluation.medical import medical_metrics
    from medtfod.odapi.evaluate import evaluate_all_checkpoints
    model_dir = evaluated["model_dir"]
    during_training = {s: json.load(open(os.path.join(model_dir, f"metrics-{s}.json"))) for s in (100, 200)}
    # the OD API also saved the untrained step 0 (skipped by default): three checkpoints, two evaluated
    results = evaluate_all_checkpoints(data["config"], model_dir, verbose=False, score=medical_metrics)
    assert [r["step"] for r in results] == [100, 200]
    for result in results:
        before = during_training[result["step"]]["metrics"]
        assert set(result["metrics"]) == set(before)  # the Medical/* ones too
        for key in ("DetectionBoxes_Precision/mAP", "DetectionBoxes_Precision/mAP@.50IOU"):
            assert result["metrics"][key] == pytest.approx(before[key], abs=1e-4)
    assert json.load(open(os.path.join(model_dir, "metrics.json")))["step"] == 200
    assert sorted(eval_event_steps(model_dir)) == [100, 100, 200, 200]  # during training, then again


@pytest.mark.tf
@pytest.mark.slow
def test_nan_loss_stops_training(data, tmp_path):
    config = make_config(data["dataset"], str(tmp_path / "pipeline.config"), "1e6")
    model_dir = str(tmp_path / "model")
    with pytest.raises(UserError, match=r"loss became NaN at step 100") as info:
        train(config, model_dir, options=TrainOptions(steps=300, checkpoint_every_n=100, verbose=False))
    message = str(info.value)
    assert "--learning-rate" in message and "--strict" in message and "report.json" in message
    assert saved_step(model_dir) == 0  # stopped before saving the step-100 checkpoint
