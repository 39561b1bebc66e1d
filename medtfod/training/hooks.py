"""The policies of a training run, as hooks on `trainer.Trainer` (detectron2's `engine/hooks.py`).

A hook is called at fixed points of the run: `before_train`, then for each segment (the OD
API's loop run up to a step, `odapi.train.TrainLoop.run`) `before_segment`, `after_block`
(each loss report, every 100 steps), `after_segment` (or `on_segment_error`), and at the end
`after_train`. Hooks are called in the order they were given; they share the trainer's state
(`start`, `final`, `segments`, `results`, `evaluation`) and write through `trainer.write`,
so their lines do not run into the progress bar.

  ProgressBar         the bar over the run's steps, with the latest loss and the best so far
  NanLossStop         a NaN or infinite total loss becomes a UserError that says what to try
  PeriodicEvaluation  evaluates each segment's last checkpoint (`--eval-every`)
  BestCheckpoint      evaluations.jsonl and MODEL_DIR/best/ (`training/selection.py`)
  Patience            stops the run after `--patience` evaluations without improvement
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..core.errors import UserError
from ..core.progress import progress
from ..odapi.evaluate import summary_line
from ..odapi.train import STEPS_PER_ITERATION, NonFiniteLoss
from . import selection as sel


class Hook:
    """A policy of a training run (detectron2's `HookBase`). Every method does nothing by
    default; `trainer` is set by the `Trainer` the hook is given to."""

    trainer = None

    def before_train(self) -> None:
        """Before the first segment. A hook may end the run here (`trainer.stop`): the later
        hooks' `before_train` is not called then, and no segment runs."""

    def before_segment(self, segment) -> None:
        """Before the OD API's loop runs `segment` (a `trainer.Segment`)."""

    def after_block(self, step: int, loss: float) -> None:
        """After each block of 100 steps whose total loss (reported by the OD API) is finite."""

    def after_segment(self, segment) -> None:
        """After `segment` ended with its last checkpoint saved. Every hook is called; one that
        called `trainer.stop` ends the run after this segment."""

    def on_segment_error(self, error: BaseException) -> Optional[BaseException]:
        """The segment raised `error` (Ctrl-C included). Every hook is called; the first
        exception one returns is raised instead of `error` (None: `error` goes on)."""
        return None

    def after_train(self) -> None:
        """After the last segment, or after a hook stopped the run (not after an error)."""


@dataclass
class Evaluated:
    """The evaluation of a segment's last checkpoint, as `PeriodicEvaluation` leaves it in
    `trainer.evaluation` for the hooks after it."""

    result: dict        # as `odapi.evaluate.Evaluator.evaluate` returns it
    checkpoint: str     # the checkpoint's prefix, e.g. MODEL_DIR/ckpt-3
    seconds: float      # how long the evaluation took


class ProgressBar(Hook):
    """A bar over the run's steps (tqdm on stderr, silent when `quiet`), opened at the step the
    run resumes from. The OD API runs (and reports) steps in blocks of 100: the bar moves once
    per block and shows the latest loss; the trainer's lines are written through it."""

    def __init__(self, desc: str, quiet: bool = False):
        self.desc, self.quiet, self.bar = desc, quiet, None

    def before_train(self) -> None:
        trainer = self.trainer
        self.bar = progress(total=trainer.final, desc=self.desc, unit="step", quiet=self.quiet)
        self.bar.update(min(trainer.start, trainer.final))
        trainer.output = self.bar

    def after_block(self, step: int, loss: float) -> None:
        self.bar.update(max(0, step - self.bar.n))
        self.trainer.show(loss=f"loss {loss:.4f}")

    def on_segment_error(self, error: BaseException) -> Optional[BaseException]:
        self.bar.close()  # Ctrl-C, a failing input: the bar ends where training did
        return None

    def after_train(self) -> None:
        self.bar.close()


def nan_error(stop: NonFiniteLoss, config_path: str, model_dir: str, latest_step: int) -> UserError:
    """What to tell the user when the total loss became NaN or infinite (`stop`)."""
    where = f"at step {stop.step}" if stop.step is not None else "in the first loss report"
    became = "NaN" if math.isnan(stop.value) else f"infinite ({stop.value})"
    since = (f" (still finite at step {stop.last_finite})" if stop.last_finite is not None else "")
    return UserError(
        f"training stopped: the total loss became {became} {where}{since}; the OD API reports it "
        f"every {STEPS_PER_ITERATION} steps. The latest checkpoint in {model_dir} is step "
        f"{latest_step}; after a fix, start again with a fresh --model-dir. Likely causes:\n"
        f"  - a learning rate too high for this model and batch size: render {config_path} again with a "
        f"lower `medtfod config --learning-rate` (try a tenth), or more --warmup-steps;\n"
        f"  - boxes outside their image or of zero width/height: convert again with "
        f"`medtfod convert ... --strict` to find the bad rows;\n"
        f"  - empty TFRecords (no images, or no boxes): check the counts in the dataset's report.json.")


class NanLossStop(Hook):
    """A non-finite total loss (`odapi.train.NonFiniteLoss`, raised at the OD API's next loss
    report, before that block's checkpoint is saved) stops training with a `UserError` that
    names the step and the likely causes."""

    def on_segment_error(self, error: BaseException) -> Optional[BaseException]:
        if isinstance(error, NonFiniteLoss):
            trainer = self.trainer
            return nan_error(error, trainer.config_path, trainer.model_dir, trainer.loop.latest_step())
        return None


class PeriodicEvaluation(Hook):
    """Evaluate the last checkpoint of every segment (`--eval-every`), in this process, with the
    evaluator `make_evaluator()` builds (an `odapi.evaluate.Evaluator`: it writes
    metrics-<step>.json and TensorBoard eval events). The results collect in `trainer.results`;
    the latest is `trainer.evaluation`."""

    def __init__(self, make_evaluator: Callable[[], object]):
        self.make_evaluator, self.evaluator = make_evaluator, None

    def before_train(self) -> None:
        trainer = self.trainer
        if not trainer.segments:
            trainer.stop(f"{trainer.model_dir} already holds step {trainer.start} (>= {trainer.final}); "
                         "nothing to train")

    def before_segment(self, segment) -> None:
        # Built before the first segment, so a broken eval input fails before any training.
        if self.evaluator is None:
            self.evaluator = self.make_evaluator()

    def after_segment(self, segment) -> None:
        trainer = self.trainer
        latest = trainer.loop.latest_checkpoint()
        began = time.time()
        result = self.evaluator.evaluate(latest)
        if result["step"] != segment.end:
            raise RuntimeError(f"expected a checkpoint at step {segment.end} in {trainer.model_dir}, the latest is "
                               f"{latest} (step {result['step']})")  # a bug in checkpoint_interval
        trainer.results.append(result)
        trainer.evaluation = Evaluated(result, latest, time.time() - began)


class BestCheckpoint(Hook):
    """Rank the run's evaluations by `metric` (a `selection.Selection`, which also counts the
    evaluations since the best for `Patience`): each is appended to MODEL_DIR/evaluations.jsonl
    and the best is copied to MODEL_DIR/best/; one line per evaluation. A resumed run continues
    its history (best and patience count included)."""

    def __init__(self, metric: str, patience: Optional[int] = None, min_delta: float = 0.0):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.selection: Optional[sel.Selection] = None

    def before_train(self) -> None:
        trainer, metric = self.trainer, self.metric
        self.selection = selection = sel.resume(trainer.model_dir, metric, self.patience, self.min_delta)
        if selection.history:
            trainer.write(f"continuing the run's {len(selection.history)} evaluations (evaluations.jsonl); best so far: "
                          + (f"step {selection.best_step}, {metric} {selection.best_value:.4f}"
                             if selection.best_step is not None else "none"))
        self._reconcile()

    def _reconcile(self) -> None:
        """After a kill between the history line and the best copy, copy the history's best."""
        model_dir, selection = self.trainer.model_dir, self.selection
        best = sel.read_best(model_dir)
        if selection.best_step is None or (best and best["step"] == selection.best_step):
            return
        record = next(r for r in sel.read_history(model_dir) if r["step"] == selection.best_step)
        prefix = os.path.join(model_dir, record["checkpoint"])
        if os.path.isfile(prefix + ".index"):
            sel.save_best(model_dir, prefix, {"step": record["step"], "metric": selection.metric,
                                              "value": selection.best_value, "metrics": record["metrics"]})

    def after_segment(self, segment) -> None:
        trainer, metric, selection = self.trainer, self.metric, self.selection
        end, result = segment.end, trainer.evaluation.result
        sel.append_history(trainer.model_dir, {"step": end, "checkpoint": result["checkpoint"], "metric": metric,
                                               "metrics": result["metrics"],
                                               "seconds": round(trainer.evaluation.seconds, 2)})
        improved = selection.update(end, result["metrics"])
        if improved:
            sel.save_best(trainer.model_dir, trainer.evaluation.checkpoint,
                          {"step": end, "metric": metric, "value": selection.best_value, "metrics": result["metrics"]})
        value = result["metrics"].get(sel.metric_key(metric), float("nan"))
        trainer.write(f"{summary_line(result)}; {metric} {value:.4f}" + (" (new best, saved to best/)" if improved else ""))
        trainer.show(best=f"best {metric} {selection.best_value:.4f} @ {selection.best_step}"
                     if selection.best_step is not None else None)


class Patience(Hook):
    """Stop the run once the `BestCheckpoint`'s selection has seen `patience` evaluations in a
    row without an improvement of more than `min_delta`; a resumed run that had stopped so does
    not train again."""

    def __init__(self, best: BestCheckpoint):
        self.best = best

    def before_train(self) -> None:
        selection, model_dir = self.best.selection, self.trainer.model_dir
        if selection.stop:
            self.trainer.stop(f"this run already stopped early ({selection.patience} evaluations without improvement); "
                              f"the best is in {os.path.join(model_dir, sel.BEST)}; raise --patience to train on")

    def after_segment(self, segment) -> None:
        selection, model_dir = self.best.selection, self.trainer.model_dir
        if selection.stop:
            self.trainer.stop(f"stopping early: {selection.patience} evaluations in a row without an improvement of "
                              f"more than {selection.min_delta:g} in {selection.metric}; the latest checkpoint (step "
                              f"{segment.end}) is saved, the best is step {selection.best_step} ({selection.metric} "
                              f"{selection.best_value:.4f}) in {os.path.join(model_dir, sel.BEST)}")
