"""The training loop around the OD API's: resume after a kill, evaluation every N steps,
evaluating every checkpoint, and stopping on a NaN loss. One tiny dataset is shared; the
TF tests train a tiny SSD on 128-px images (about 5 minutes in all on 2 CPU cores)."""
import json
import logging
import os
import signal
import time

import pytest

from conftest import saved_step, train_killed_and_resumed
from medtfod.errors import UserError
from medtfod.odapi.train import NanLossWatch, NonFiniteLoss, segment_ends, train


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
        train(str(config), str(tmp_path / "model"), steps=400, eval_every=150)


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
    from medtfod import demo_data
    from medtfod.cli import main

    root = tmp_path_factory.mktemp("loop")
    source = demo_data.generate(str(root / "source"), num_images=24, size=128, seed=5)
    dataset = str(root / "dataset")
    assert main(["convert", "nih", "--bbox-csv", source["bbox_csv"], "--images", source["images"],
                 "--data-entry", source["data_entry"], "--label-map", source["label_map"],
                 "--out", dataset, "-q"]) == 0
    return {"root": root, "dataset": dataset,
            "config": make_config(dataset, str(root / "pipeline.config"), "0.04")}


@pytest.mark.tf
@pytest.mark.slow
def test_resume_after_kill(data, tmp_path):
    run = train_killed_and_resumed(data["config"], str(tmp_path / "model"), steps=300, every=100,
                                   log_path=tmp_path / "first.log", timeout=400)
    assert run["killed"] == -signal.SIGKILL
    assert 100 <= run["saved"] < 300, "the killed run should have stopped part-way"
    assert run["returncode"] == 0, run["output"][-3000:]
    assert run["final"] == 300
    # The OD API reports every block of 100 steps it runs: the restart ran only those after `saved`.
    assert run["reported"] == list(range(run["saved"] + 100, 301, 100)), run["output"][-3000:]


@pytest.fixture(scope="module")
def evaluated(data):
    model_dir = str(data["root"] / "eval_every")
    started = time.time()
    results = train(data["config"], model_dir, steps=200, eval_every=100, verbose=False)
    return {"model_dir": model_dir, "results": results, "seconds": time.time() - started}


@pytest.mark.tf
@pytest.mark.slow
def test_eval_every_writes_metrics_per_segment(evaluated):
    model_dir = evaluated["model_dir"]
    assert [r["step"] for r in evaluated["results"]] == [100, 200]
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
    from medtfod.odapi.evaluate import evaluate_all_checkpoints
    model_dir = evaluated["model_dir"]
    during_training = {s: json.load(open(os.path.join(model_dir, f"metrics-{s}.json"))) for s in (100, 200)}
    # the OD API also saved the untrained step 0 (skipped by default): three checkpoints, two evaluated
    results = evaluate_all_checkpoints(data["config"], model_dir, verbose=False)
    assert [r["step"] for r in results] == [100, 200]
    for result in results:
        before = during_training[result["step"]]["metrics"]
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
        train(config, model_dir, steps=300, checkpoint_every_n=100, verbose=False)
    message = str(info.value)
    assert "--learning-rate" in message and "--strict" in message and "report.json" in message
    assert saved_step(model_dir) == 0  # stopped before saving the step-100 checkpoint
