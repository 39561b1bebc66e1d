"""Training a model: a plain loop of training segments with the run's policies as hooks
(detectron2's `DefaultTrainer` in `engine/defaults.py`, with `engine/hooks.py`).

A segment is one run of the OD API's own loop up to a step (`odapi.train.TrainLoop.run`,
which resumes from the latest checkpoint in MODEL_DIR). Without `eval_every` the run is one
segment; with it, one segment per evaluation. Between segments the hooks of `hooks.py` act:
evaluation, the best checkpoint, patience, the NaN-loss stop and the progress bar.

    train(config_path, model_dir, options=TrainOptions(steps=600, eval_every=200))
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence

from ..core.errors import UserError
from ..core.progress import progress
from ..evaluation.medical import medical_metrics
from ..odapi.checks import check_input_files
from ..odapi.evaluate import Evaluator
from ..odapi.train import STEPS_PER_ITERATION, TrainLoop, checkpoint_interval
from .cluster import Role
from .hooks import BestCheckpoint, Hook, NanLossStop, Patience, PeriodicEvaluation, ProgressBar


@dataclass
class TrainOptions:
    """How to train (the options of `medtfod train`).

    Attributes:
      steps: total steps; None uses the config's `train_config.num_steps`.
      checkpoint_every_n: the wanted checkpoint interval; lowered where needed so the final
        step (and, with `eval_every`, each evaluated step) is always saved (see
        `odapi.train.checkpoint_interval`).
      eval_every: when given (a multiple of 100), train in segments of this many steps and
        evaluate the checkpoint at the end of each (and at the final step), in this process,
        printing one line per evaluation and writing `metrics-<step>.json`. A resumed run
        evaluates at the same multiples.
      select_by: the metric the best checkpoint is chosen by (`selection.METRICS`); None
        chooses from the eval split (`default_select_by`). Needs `eval_every`.
      patience: stop after this many evaluations in a row without an improvement of more
        than `min_delta`; None never stops early. Needs `eval_every`.
      min_delta: the improvement that counts, for the best checkpoint and for patience.
      iou_froc: the IoU a FROC hit needs in the evaluations' Medical/froc_mean.
      role: this process's place in a multi-worker cluster (a `cluster.Role` from TF_CONFIG),
        or None for one machine. Only the chief writes into the model folder; every worker
        must be given the same one.
      cluster_timeout: seconds to wait for every worker of the cluster to join.
      record_summaries: write the OD API's training summaries (TensorBoard).
      verbose: show the OD API's step and loss lines.
      quiet: no progress bar.
      desc: the progress bar's label.
    """

    steps: Optional[int] = None
    checkpoint_every_n: int = 1000
    eval_every: Optional[int] = None
    select_by: Optional[str] = None
    patience: Optional[int] = None
    min_delta: float = 0.0
    iou_froc: float = 0.1
    role: Optional[Role] = None
    cluster_timeout: int = 600
    record_summaries: bool = True
    verbose: bool = True
    quiet: bool = False
    desc: str = "train"


@dataclass(frozen=True)
class Segment:
    """One run of the OD API's loop: up to step `end` (its `train_steps`), saving every
    `checkpoint_every_n` steps, writing the as-run config at the end when `save_final_config`."""

    end: int
    checkpoint_every_n: int
    save_final_config: bool


def final_step(steps: int) -> int:
    """The step a run of `steps` ends at: the OD API runs whole blocks of 100."""
    return -(-steps // STEPS_PER_ITERATION) * STEPS_PER_ITERATION


def segment_ends(start: int, final: int, eval_every: int) -> List[int]:
    """The steps at which a run from `start` to `final` stops to evaluate: the multiples of
    `eval_every` after `start`, and `final` (a resumed run keeps the same evaluation steps)."""
    ends = [e for e in range(eval_every, final, eval_every) if e > start]
    return ends + [final] if final > start else []


def plan_segments(start: int, steps: int, checkpoint_every_n: int, eval_every: Optional[int]) -> List[Segment]:
    """The segments of a run of `steps` that resumes at step `start`.

    Without `eval_every`, one segment to `steps`. With it, one per `segment_ends`; the OD API's
    loop counts its checkpoint interval from the step it resumed at, so an interval that divides
    the segment saves the segment's end. The as-run config records train_steps as num_steps: it
    is written only at the end, so a run stopped mid-way still resumes to the full count.
    """
    if eval_every is None:
        return [Segment(steps, checkpoint_interval(checkpoint_every_n, steps), True)]
    final, segments = final_step(steps), []
    for end in segment_ends(start, final, eval_every):
        segments.append(Segment(end, checkpoint_interval(checkpoint_every_n, end - start), end == final))
        start = end
    return segments


class Trainer:
    """Runs the segments of one training run and calls its hooks (detectron2's `TrainerBase`).

    `loop` runs a segment: `run(train_steps, checkpoint_every_n, save_final_config, on_block)`,
    `latest_step()` and `latest_checkpoint()` (an `odapi.train.TrainLoop`, or a stand-in in
    tests). `options.steps` must be set. The state hooks read: `start` (the step the run resumes
    from), `final`, `segments`, `results` (the evaluations so far) and `evaluation` (the latest).
    """

    def __init__(self, config_path: str, model_dir: str, loop, options: TrainOptions, hooks: Sequence[Hook] = ()):
        self.config_path, self.model_dir, self.loop, self.options = config_path, model_dir, loop, options
        self.hooks = list(hooks)
        for hook in self.hooks:
            hook.trainer = self
        self.final = final_step(options.steps)
        self.start = 0
        self.segments: List[Segment] = []
        self.results: List[dict] = []
        self.evaluation = None
        self.stopping = False
        self.output = progress(total=0, desc="", quiet=True)  # a ProgressBar hook puts its bar here
        self.status = {"loss": None, "best": None}

    def write(self, text: str) -> None:
        """Print a line of the run (through the progress bar when there is one)."""
        self.output.write(text)

    def show(self, **status: Optional[str]) -> None:
        """Set parts of the progress bar's status (`loss`, `best`) and show them."""
        self.status.update(status)
        self.output.set_postfix_str(", ".join(v for v in self.status.values() if v))

    def stop(self, message: Optional[str] = None) -> None:
        """End the run after the current hook point, writing `message` first."""
        if message:
            self.write(message)
        self.stopping = True

    def train(self) -> List[dict]:
        """Run the segments from the latest checkpoint on; returns `results`."""
        options = self.options
        self.start = self.loop.latest_step()
        self.segments = plan_segments(self.start, options.steps, options.checkpoint_every_n, options.eval_every)
        for hook in self.hooks:
            hook.before_train()
            if self.stopping:
                break
        if not self.stopping:
            if self.final != options.steps and not options.quiet:
                self.write(f"note: {options.steps} steps: the OD API trains in whole blocks of {STEPS_PER_ITERATION} "
                           f"steps, so this run ends at step {self.final}")
            every = self.segments[0].checkpoint_every_n if self.segments else None
            if options.eval_every is None and every != options.checkpoint_every_n and options.verbose:
                self.write(f"checkpointing every {every} steps (not {options.checkpoint_every_n}) so that "
                           f"step {self.final} is saved")
            for segment in self.segments:
                for hook in self.hooks:
                    hook.before_segment(segment)
                self._run(segment)
                for hook in self.hooks:
                    hook.after_segment(segment)
                if self.stopping:
                    break
        for hook in self.hooks:
            hook.after_train()
        return self.results

    def _run(self, segment: Segment) -> None:
        try:
            self.loop.run(segment.end, segment.checkpoint_every_n, segment.save_final_config,
                          on_block=self._after_block)
        except BaseException as error:
            replacement = None
            for hook in self.hooks:
                instead = hook.on_segment_error(error)
                if replacement is None:
                    replacement = instead
            if replacement is not None:
                raise replacement from None
            raise

    def _after_block(self, step: int, loss: float) -> None:
        for hook in self.hooks:
            hook.after_block(step, loss)


def default_select_by(config_path: str) -> str:
    """The documented default metric for a config's eval split: froc_mean when some of its
    images have no box (read from the dataset manifest), else ap50; printed."""
    from ..data import manifest
    from ..odapi.protos import read_pipeline_config
    from .selection import default_metric
    reader = read_pipeline_config(config_path).eval_input_reader[0]
    dataset = os.path.dirname(reader.label_map_path)
    split = os.path.basename(reader.tf_record_input_reader.input_path[0]).split(".record")[0]
    try:
        entries = manifest.load(dataset).split(split)
    except UserError:
        print(f"selecting by ap50 (no dataset manifest beside {reader.label_map_path} to count the eval "
              "images without boxes)", flush=True)
        return "ap50"
    with_boxes = sum(1 for e in entries if e.boxes)
    metric = default_metric(with_boxes, len(entries))
    print(f"selecting the best checkpoint by {metric} (default: {len(entries) - with_boxes} of {len(entries)} "
          f"{split} images have no box; --select-by chooses)", flush=True)
    return metric


def check_options(config_path: str, options: TrainOptions) -> int:
    """The run's total steps, once the options are known to go together (else a UserError)."""
    eval_every, patience, select_by, steps = options.eval_every, options.patience, options.select_by, options.steps
    if not os.path.isfile(config_path):
        raise UserError(f"pipeline config not found: {config_path}")
    if eval_every is None and (patience is not None or select_by is not None):
        flag = "--patience" if patience is not None else "--select-by"
        raise UserError(f"{flag} needs --eval-every N: the best checkpoint is chosen, and patience counted, "
                        "at the evaluations during training (or rank a finished run: medtfod eval --all --select-by)")
    if select_by is not None:
        from .selection import metric_key
        metric_key(select_by)
    if patience is not None and patience < 1:
        raise UserError(f"--patience {patience}: give a number of evaluations, 1 or more")
    if steps is None:
        from ..odapi.protos import read_pipeline_config
        steps = read_pipeline_config(config_path).train_config.num_steps
    if steps <= 0:
        raise UserError(f"{config_path}: train_config.num_steps is {steps}; give --steps N")
    if eval_every is not None:
        if eval_every <= 0 or eval_every % STEPS_PER_ITERATION:
            nearest = max(STEPS_PER_ITERATION, round(eval_every / STEPS_PER_ITERATION) * STEPS_PER_ITERATION)
            raise UserError(f"--eval-every {eval_every}: the OD API trains in blocks of {STEPS_PER_ITERATION} "
                            f"steps, so evaluation can only happen at multiples of {STEPS_PER_ITERATION}; "
                            f"use --eval-every {nearest}")
        if options.role is not None and options.role.workers > 1:
            raise UserError("--eval-every evaluates inside the training process, which multi-worker "
                            "training does not support; train, then run `medtfod eval --all`")
    return steps


def default_hooks(config_path: str, model_dir: str, options: TrainOptions, metric: Optional[str]) -> List[Hook]:
    """The hooks of `medtfod train`: the progress bar and the NaN-loss stop; with `eval_every`,
    evaluation, the best checkpoint by `metric` and patience."""
    role, desc = options.role, options.desc
    if role is not None and role.workers > 1:
        desc = f"{desc} ({role.task_type} {role.task_index}{', the chief' if role.is_chief else ''})"
    hooks: List[Hook] = [ProgressBar(desc, options.quiet), NanLossStop()]
    if options.eval_every is not None:
        score = functools.partial(medical_metrics, iou_froc=options.iou_froc)
        best = BestCheckpoint(metric, options.patience, options.min_delta)
        hooks += [PeriodicEvaluation(lambda: Evaluator(config_path, model_dir, options.verbose, score)),
                  best, Patience(best)]
    return hooks


def train(config_path: str, model_dir: str, *, options: Optional[TrainOptions] = None) -> List[dict]:
    """Train the model of `config_path`, writing checkpoints and TensorBoard logs to `model_dir`.

    Same strategy choice as `model_main_tf2` (see `odapi.train.TrainLoop`). Training resumes
    from the latest checkpoint in `model_dir`. Steps run in blocks of 100 (the OD API's
    `num_steps_per_iteration`). See `TrainOptions` for the options.

    Returns:
      The evaluation results (as `odapi.evaluate.Evaluator.evaluate` returns them), oldest
      first; empty without `options.eval_every`.

    Raises:
      UserError: bad options, or the total loss became NaN or infinite (training stops at the
        OD API's next loss report, before that block's checkpoint is saved).
    """
    from ..core.fence import check_outputs
    from .config import data_inputs
    options = options or TrainOptions()
    check_outputs({"model_dir": model_dir}, data_inputs(config_path))
    options = replace(options, steps=check_options(config_path, options))
    check_input_files(config_path, train=True, evaluation=options.eval_every is not None)
    metric = (options.select_by or default_select_by(config_path)) if options.eval_every is not None else None
    loop = TrainLoop(config_path, model_dir, role=options.role, cluster_timeout=options.cluster_timeout,
                     record_summaries=options.record_summaries, verbose=options.verbose, quiet=options.quiet,
                     settings={"--steps": final_step(options.steps),
                               "--checkpoint-every-n": options.checkpoint_every_n})
    return Trainer(config_path, model_dir, loop, options, default_hooks(config_path, model_dir, options, metric)).train()
