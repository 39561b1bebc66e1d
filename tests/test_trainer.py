"""The trainer's loop and its hooks, with a stand-in for the OD API's loop (no TensorFlow):
the order hooks are called in, stopping, errors, and the evaluation / best / patience policies."""
import json
import os

import pytest

from medtfod.core.errors import UserError
from medtfod.odapi.train import NonFiniteLoss
from medtfod.training.hooks import BestCheckpoint, Hook, NanLossStop, Patience, PeriodicEvaluation, ProgressBar
from medtfod.training.selection import METRICS, read_best, read_history, save_best
from medtfod.training.trainer import Segment, TrainOptions, Trainer, default_hooks, plan_segments


class FakeLoop:
    """`odapi.train.TrainLoop`'s interface: reports a loss per block of 100 steps and 'saves' a
    checkpoint (ckpt-<step>.index and .data files) at each multiple of the interval and at the end;
    `fail_at` raises that exception when the loop reaches that step."""

    def __init__(self, model_dir, step=0, loss=1.0, fail_at=None):
        self.model_dir, self.step, self.loss, self.fail_at = str(model_dir), step, loss, fail_at or {}
        self.runs = []
        os.makedirs(self.model_dir, exist_ok=True)
        if step:
            self._save(step)

    def _save(self, step):
        for suffix in (".index", ".data-00000-of-00001"):
            with open(os.path.join(self.model_dir, f"ckpt-{step}{suffix}"), "w") as f:
                f.write(str(step))
        self.step = step

    def latest_step(self):
        return self.step

    def latest_checkpoint(self):
        return os.path.join(self.model_dir, f"ckpt-{self.step}") if self.step else None

    def run(self, train_steps, checkpoint_every_n, save_final_config, on_block=None):
        self.runs.append((train_steps, checkpoint_every_n, save_final_config))
        began = self.step
        for step in range(self.step + 100, train_steps + 99, 100):
            if step in self.fail_at:
                raise self.fail_at[step]
            if on_block:
                on_block(step, self.loss)
            if (step - began) % checkpoint_every_n == 0:
                self._save(step)


class Recorder(Hook):
    def __init__(self, name, calls, stop_at=None):
        self.name, self.calls, self.stop_at = name, calls, stop_at

    def before_train(self):
        self.calls.append((self.name, "before_train"))
        if self.stop_at == "before_train":
            self.trainer.stop(f"{self.name} stops")

    def before_segment(self, segment):
        self.calls.append((self.name, "before_segment", segment.end))

    def after_block(self, step, loss):
        self.calls.append((self.name, "after_block", step))

    def after_segment(self, segment):
        self.calls.append((self.name, "after_segment", segment.end))
        if self.stop_at == segment.end:
            self.trainer.stop(f"{self.name} stops at {segment.end}")

    def on_segment_error(self, error):
        self.calls.append((self.name, "on_segment_error", type(error).__name__))

    def after_train(self):
        self.calls.append((self.name, "after_train"))


def trainer(tmp_path, loop, hooks, **options):
    return Trainer(str(tmp_path / "pipeline.config"), loop.model_dir, loop,
                   TrainOptions(**dict({"steps": 300, "verbose": False}, **options)), hooks)


def test_plan_segments():
    assert plan_segments(0, 650, 1000, None) == [Segment(650, 700, True)]
    assert plan_segments(0, 500, 1000, 200) == [Segment(200, 200, False), Segment(400, 200, False),
                                                Segment(500, 100, True)]
    # a resumed run keeps the evaluation steps; its first interval counts from where it resumed
    assert plan_segments(300, 1000, 1000, 400) == [Segment(400, 100, False), Segment(800, 400, False),
                                                   Segment(1000, 200, True)]
    assert plan_segments(400, 400, 1000, 200) == []


def test_hooks_are_called_in_order_around_each_segment(tmp_path):
    calls = []
    loop = FakeLoop(tmp_path / "model", step=100)
    results = trainer(tmp_path, loop, [Recorder("a", calls), Recorder("b", calls)], eval_every=100).train()
    assert results == []
    assert loop.runs == [(200, 100, False), (300, 100, True)]
    segment = lambda end: [("a", "before_segment", end), ("b", "before_segment", end),  # noqa: E731
                           ("a", "after_block", end), ("b", "after_block", end),
                           ("a", "after_segment", end), ("b", "after_segment", end)]
    assert calls == ([("a", "before_train"), ("b", "before_train")] + segment(200) + segment(300)
                     + [("a", "after_train"), ("b", "after_train")])


def test_without_eval_every_one_segment_to_steps(tmp_path, capsys):
    calls = []
    loop = FakeLoop(tmp_path / "model")
    trainer(tmp_path, loop, [Recorder("a", calls)], steps=250, verbose=True).train()
    assert loop.runs == [(250, 300, True)]
    assert [c[2] for c in calls if c[1] == "after_block"] == [100, 200, 300]
    assert "checkpointing every 300 steps (not 1000) so that step 300 is saved" in capsys.readouterr().out


def test_a_hook_stopping_before_training_skips_the_later_hooks_and_every_segment(tmp_path, capsys):
    calls = []
    loop = FakeLoop(tmp_path / "model")
    hooks = [Recorder("a", calls, stop_at="before_train"), Recorder("b", calls)]
    assert trainer(tmp_path, loop, hooks, eval_every=100).train() == []
    assert loop.runs == []
    assert calls == [("a", "before_train"), ("a", "after_train"), ("b", "after_train")]
    assert capsys.readouterr().out == "a stops\n"


def test_a_hook_stopping_after_a_segment_ends_the_run_there(tmp_path):
    calls = []
    loop = FakeLoop(tmp_path / "model")
    trainer(tmp_path, loop, [Recorder("a", calls, stop_at=200), Recorder("b", calls)], eval_every=100).train()
    assert [r[0] for r in loop.runs] == [100, 200]
    assert calls[-4:] == [("a", "after_segment", 200), ("b", "after_segment", 200),  # b still sees it
                          ("a", "after_train"), ("b", "after_train")]


def test_a_nan_loss_becomes_a_user_error_after_every_hook_saw_it(tmp_path):
    calls = []
    loop = FakeLoop(tmp_path / "model", fail_at={200: NonFiniteLoss(200, float("nan"), 100)})
    hooks = [ProgressBar("train", quiet=True), NanLossStop(), Recorder("a", calls)]
    with pytest.raises(UserError, match=r"loss became NaN at step 200 \(still finite at step 100\)") as info:
        trainer(tmp_path, loop, hooks, checkpoint_every_n=100).train()
    assert f"The latest checkpoint in {loop.model_dir} is step 100;" in str(info.value)
    assert info.value.__suppress_context__
    assert calls[-1] == ("a", "on_segment_error", "NonFiniteLoss")
    assert ("a", "after_train") not in calls


def test_other_errors_go_on_unchanged(tmp_path):
    loop = FakeLoop(tmp_path / "model", fail_at={100: KeyboardInterrupt()})
    calls = []
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path, loop, [NanLossStop(), Recorder("a", calls)]).train()
    assert calls[-1] == ("a", "on_segment_error", "KeyboardInterrupt")


class FakeEvaluator:
    """Scripted ap50 per step, as `Evaluator.evaluate` returns results."""

    def __init__(self, values):
        self.values, self.evaluated = values, []

    def evaluate(self, prefix):
        step = int(os.path.basename(prefix).split("-")[1])
        self.evaluated.append(step)
        return {"checkpoint": os.path.basename(prefix), "step": step, "eval_input": [],
                "metrics": {METRICS["ap50"]: self.values[step]}}


def policy_hooks(evaluator, patience):
    best = BestCheckpoint("ap50", patience=patience)
    return [ProgressBar("train", quiet=True), NanLossStop(), PeriodicEvaluation(lambda: evaluator), best,
            Patience(best)]


def test_evaluation_best_checkpoint_and_patience(tmp_path, capsys):
    evaluator = FakeEvaluator({100: 0.5, 200: 0.7, 300: 0.6, 400: 0.65, 500: 0.9, 600: 0.9})
    loop = FakeLoop(tmp_path / "model")
    results = trainer(tmp_path, loop, policy_hooks(evaluator, 2), steps=600, eval_every=100).train()
    assert [r["step"] for r in results] == evaluator.evaluated == [100, 200, 300, 400]
    assert [r[0] for r in loop.runs] == [100, 200, 300, 400]  # stopped after two without improvement
    history = read_history(loop.model_dir)
    assert [(r["step"], r["checkpoint"], r["metric"]) for r in history] == [
        (s, f"ckpt-{s}", "ap50") for s in (100, 200, 300, 400)]
    best = read_best(loop.model_dir)
    assert (best["step"], best["value"], best["checkpoint"]) == (200, 0.7, "ckpt-200")
    assert sorted(os.listdir(os.path.join(loop.model_dir, "best"))) == [
        "best.json", "checkpoint", "ckpt-200.data-00000-of-00001", "ckpt-200.index"]
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" (ckpt")[0] for line in out[:4]] == [f"step {s}: mAP@0.5 nan, mAP nan" for s in
                                                             (100, 200, 300, 400)]
    assert out[0].endswith("; ap50 0.5000 (new best, saved to best/)") and out[2].endswith("; ap50 0.6000")
    assert out[4] == ("stopping early: 2 evaluations in a row without an improvement of more than 0 in ap50; "
                      "the latest checkpoint (step 400) is saved, the best is step 200 (ap50 0.7000) in "
                      f"{os.path.join(loop.model_dir, 'best')}")
    assert len(out) == 5

    # Started again: the history says the run stopped; nothing is trained or evaluated.
    again = FakeEvaluator({})
    assert trainer(tmp_path, loop, policy_hooks(again, 2), steps=600, eval_every=100).train() == []
    assert capsys.readouterr().out.splitlines() == [
        "continuing the run's 4 evaluations (evaluations.jsonl); best so far: step 200, ap50 0.7000",
        f"this run already stopped early (2 evaluations without improvement); the best is in "
        f"{os.path.join(loop.model_dir, 'best')}; raise --patience to train on"]
    assert again.evaluated == [] and [r[0] for r in loop.runs] == [100, 200, 300, 400]


def test_a_resumed_run_continues_its_history_and_restores_a_lost_best_copy(tmp_path, capsys):
    evaluator = FakeEvaluator({100: 0.5, 200: 0.7, 300: 0.6})
    loop = FakeLoop(tmp_path / "model")
    trainer(tmp_path, loop, policy_hooks(evaluator, None), steps=200, eval_every=100).train()
    # as if killed between the history line of step 200 and its copy into best/
    save_best(loop.model_dir, os.path.join(loop.model_dir, "ckpt-100"), {"step": 100, "metric": "ap50"})
    with open(os.path.join(loop.model_dir, "best", "best.json")) as f:
        assert json.load(f)["step"] == 100
    capsys.readouterr()
    results = trainer(tmp_path, loop, policy_hooks(evaluator, None), steps=300, eval_every=100).train()
    assert [r["step"] for r in results] == [300]
    assert read_best(loop.model_dir)["step"] == 200
    assert capsys.readouterr().out.startswith(
        "continuing the run's 2 evaluations (evaluations.jsonl); best so far: step 200, ap50 0.7000\n")


def test_a_finished_run_has_nothing_to_train(tmp_path, capsys):
    loop = FakeLoop(tmp_path / "model", step=300)
    assert trainer(tmp_path, loop, policy_hooks(FakeEvaluator({}), None), eval_every=100).train() == []
    assert capsys.readouterr().out == f"{loop.model_dir} already holds step 300 (>= 300); nothing to train\n"
    assert loop.runs == [] and read_history(loop.model_dir) == []


def test_default_hooks(tmp_path):
    names = lambda hooks: [type(h).__name__ for h in hooks]  # noqa: E731
    assert names(default_hooks("c", "m", TrainOptions(steps=100), None)) == ["ProgressBar", "NanLossStop"]
    assert names(default_hooks("c", "m", TrainOptions(steps=100, eval_every=100), "ap50")) == [
        "ProgressBar", "NanLossStop", "PeriodicEvaluation", "BestCheckpoint", "Patience"]


def test_steps_rounded_up_to_a_block_are_said(tmp_path, capsys):
    trainer = Trainer("pipeline.config", str(tmp_path), FakeLoop(tmp_path), TrainOptions(steps=20))
    trainer.train()
    out = capsys.readouterr()
    assert "20 steps: the OD API trains in whole blocks of 100 steps, so this run ends at step 100" in out.out + out.err
    assert trainer.loop.step == 100
