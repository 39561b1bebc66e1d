"""Training: the OD API's own TF2 loop (`model_lib_v2.train_loop`), as `model_main_tf2` runs it.

Two additions around the loop, neither of which changes the OD API:
  * `eval_every`: the loop is run up to each segment end in turn (it resumes from the latest
    checkpoint in `model_dir`), and each segment's last checkpoint is evaluated in-process.
  * a non-finite total loss stops training with a `UserError` (see `NanLossWatch`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from typing import Iterator, List, Optional

from ..core.errors import UserError
from ..core.progress import progress
from . import multiworker
from .runtime import import_tensorflow, tidy_logging

STEPS_PER_ITERATION = 100  # model_lib_v2.train_loop runs steps in blocks of this many


def checkpoint_interval(requested: int, steps: int) -> int:
    """A checkpoint interval <= `requested` at which the OD API's loop also saves the last step.

    `train_loop` saves only when `step - last_saved >= checkpoint_every_n` and never at the
    end, and it runs whole blocks of 100 steps, so 600 steps with the default interval of
    1000 would finish without saving anything. The interval returned is a multiple of 100
    that divides the final step count (steps rounded up to a whole block).
    """
    blocks = max(1, -(-steps // STEPS_PER_ITERATION))
    best = 1
    for k in range(1, blocks + 1):
        if blocks % k == 0 and k * STEPS_PER_ITERATION <= max(requested, STEPS_PER_ITERATION):
            best = k
    return best * STEPS_PER_ITERATION


def segment_ends(start: int, final: int, eval_every: int) -> List[int]:
    """The steps at which a run from `start` to `final` stops to evaluate: the multiples of
    `eval_every` after `start`, and `final` (a resumed run keeps the same evaluation steps)."""
    ends = [e for e in range(eval_every, final, eval_every) if e > start]
    return ends + [final] if final > start else []


class NonFiniteLoss(Exception):
    """Raised inside the OD API's loop by `NanLossWatch`; `train` turns it into a UserError."""

    def __init__(self, step: Optional[int], value: float, last_finite: Optional[int]):
        super().__init__(f"Loss/total_loss = {value} at step {step}")
        self.step, self.value, self.last_finite = step, value, last_finite


class NanLossWatch(logging.Handler):
    """Reads the OD API's loss report and stops the loop when the total loss is NaN or infinite.

    `train_loop` logs, after every block of 100 steps and before it saves a checkpoint,
    "Step N per-step time ..." and then `pprint` of the losses, e.g.
    "{'Loss/classification_loss': np.float32(nan), ... 'Loss/total_loss': np.float32(nan), ...}".
    Raising from `emit` propagates out of `tf.logging.info` and so out of `train_loop`
    (logging only guards the emit of its own handlers), before the block's checkpoint is
    saved. The OD API offers no callback; this reads its documented output instead of
    patching its code. The loss of the block's last step is what gets checked: once the
    weights are NaN every later loss is NaN too.
    """

    STEP = re.compile(r"^Step (\d+) per-step time")
    # numpy >= 2 prints np.float32(nan); numpy 1 prints nan
    TOTAL_LOSS = re.compile(r"'Loss/total_loss':\s*(?:np\.float\d+\()?\s*([-+]?(?:nan|inf|[0-9][0-9.eE+-]*))")

    def __init__(self, on_block=None):
        super().__init__(level=logging.INFO)
        self.step: Optional[int] = None
        self.last_finite: Optional[int] = None
        self.on_block = on_block  # called with (step, total loss) after each finite block

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        match = self.STEP.match(message)
        if match:
            self.step = int(match.group(1))
            return
        match = self.TOTAL_LOSS.search(message)
        if match:
            value = float(match.group(1))
            if not math.isfinite(value):
                raise NonFiniteLoss(self.step, value, self.last_finite)
            self.last_finite = self.step
            if self.on_block and self.step is not None:
                self.on_block(self.step, value)


@contextlib.contextmanager
def watch_for_nan_loss(verbose: bool, on_block=None) -> Iterator[NanLossWatch]:
    """Attach a `NanLossWatch` to TensorFlow's logger for the duration of the block.

    The OD API reports losses at INFO; when not `verbose`, the logger is opened to INFO for
    the watch while the existing handlers keep showing warnings only.
    """
    from . import runtime
    tf = import_tensorflow(verbose)
    logger = tf.get_logger()
    watch = NanLossWatch(on_block)
    saved_level = logger.level
    saved_handler_levels = [(h, h.level) for h in logger.handlers]
    if not verbose and not runtime._active_log:  # noqa: SLF001 - library_log routes the lines itself
        for handler in logger.handlers:
            handler.setLevel(max(handler.level, logging.WARNING))
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)  # last, so the report line is printed before the watch raises
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(saved_level)
        for handler, level in saved_handler_levels:
            handler.setLevel(level)


def _postfix(bar, state: dict) -> None:
    bar.set_postfix_str(", ".join(v for v in (state["loss"], state["best"]) if v))


def default_select_by(config_path: str) -> str:
    """The documented default metric for a config's eval split: froc_mean when some of its
    images have no box (read from the dataset manifest), else ap50; printed."""
    from ..data import manifest
    from ..training.selection import default_metric
    from .protos import read_pipeline_config
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


def _reconcile_best(model_dir: str, selection) -> None:
    """After a kill between the history line and the best copy, copy the history's best."""
    from ..training import selection as sel
    best = sel.read_best(model_dir)
    if selection.best_step is None or (best and best["step"] == selection.best_step):
        return
    record = next(r for r in sel.read_history(model_dir) if r["step"] == selection.best_step)
    prefix = os.path.join(model_dir, record["checkpoint"])
    if os.path.isfile(prefix + ".index"):
        sel.save_best(model_dir, prefix, {"step": record["step"], "metric": selection.metric,
                                          "value": selection.best_value, "metrics": record["metrics"]})


def _latest_step(model_dir: str) -> int:
    from .evaluate import checkpoint_step
    tf = import_tensorflow(verbose=False)
    latest = tf.train.latest_checkpoint(model_dir)
    return checkpoint_step(latest) if latest else 0


def _nan_error(stop: NonFiniteLoss, config_path: str, model_dir: str) -> UserError:
    where = f"at step {stop.step}" if stop.step is not None else "in the first loss report"
    became = "NaN" if math.isnan(stop.value) else f"infinite ({stop.value})"
    since = (f" (still finite at step {stop.last_finite})" if stop.last_finite is not None else "")
    return UserError(
        f"training stopped: the total loss became {became} {where}{since}; the OD API reports it "
        f"every {STEPS_PER_ITERATION} steps. The latest checkpoint in {model_dir} is step "
        f"{_latest_step(model_dir)}; after a fix, start again with a fresh --model-dir. Likely causes:\n"
        f"  - a learning rate too high for this model and batch size: render {config_path} again with a "
        f"lower `medtfod config --learning-rate` (try a tenth), or more --warmup-steps;\n"
        f"  - boxes outside their image or of zero width/height: convert again with "
        f"`medtfod convert ... --strict` to find the bad rows;\n"
        f"  - empty TFRecords (no images, or no boxes): check the counts in the dataset's report.json.")


def _join_cluster(tf, config_path: str, role, wait_seconds: int, quiet: bool, settings: dict):
    """The MultiWorkerMirroredStrategy of `role`'s cluster, once every worker joined and agreed
    on `settings` and the config's batch and train files; and a factory of the context to
    train in (`multiworker.shard_by_example`, or nothing to change)."""
    from .protos import read_pipeline_config
    config = read_pipeline_config(config_path)
    batch, files = config.train_config.batch_size, multiworker.train_files(tf, config)
    # The batch is checked before the wait for the cluster, which can be long.
    devices = max(1, len(tf.config.list_physical_devices("GPU")))
    multiworker.check_batch(batch, role.workers * devices, role.workers)
    if not quiet:
        print(f"{role.describe()}: waiting up to {wait_seconds} s for the other workers to join "
              "(--cluster-timeout; Ctrl-C stops)", flush=True)
    strategy = multiworker.make_strategy(tf, wait_seconds)
    multiworker.check_batch(batch, strategy.num_replicas_in_sync, role.workers)
    multiworker.check_agreement(tf, strategy, dict(settings, **{"train_config.batch_size": batch,
                                                                "train files": len(files)}), role.describe())
    how = multiworker.sharding(len(files), role.workers)
    per = batch // strategy.num_replicas_in_sync
    if not quiet:
        print(f"{role.describe()}: global batch {batch} = {per} per replica x "
              f"{strategy.num_replicas_in_sync} replicas; input sharded by "
              + (f"file ({len(files)} train files)" if how == "file" else
                 f"example (each worker reads all {len(files)} train file(s) and keeps 1 record in "
                 f"{role.workers}, from record {role.rank + 1})"), flush=True)
    return strategy, contextlib.nullcontext if how == "file" else multiworker.shard_by_example


def train(config_path: str, model_dir: str, steps: Optional[int] = None, checkpoint_every_n: int = 1000,
          role=None, cluster_timeout: int = 600, record_summaries: bool = True, verbose: bool = True,
          eval_every: Optional[int] = None, quiet: bool = False, select_by: Optional[str] = None,
          patience: Optional[int] = None, min_delta: float = 0.0, desc: str = "train") -> List[dict]:
    """Train the model of `config_path`, writing checkpoints and TensorBoard logs to `model_dir`.

    Same strategy choice as `model_main_tf2`: MirroredStrategy (all visible GPUs, else the
    CPU), MultiWorkerMirroredStrategy when `role` (a `cluster.Role` from TF_CONFIG) has more
    than one worker (see `multiworker`). Training resumes from the latest checkpoint in
    `model_dir`. Steps run in blocks of 100 (the OD API's `num_steps_per_iteration`).

    Args:
      steps: total steps; None uses the config's `train_config.num_steps`.
      checkpoint_every_n: the wanted checkpoint interval; lowered where needed so the
        final step (and, with `eval_every`, each evaluated step) is always saved (see
        `checkpoint_interval`).
      role: this process's place in a multi-worker cluster, or None for one machine. Only
        the chief writes into `model_dir`; every worker must be given the same `model_dir`.
      cluster_timeout: seconds to wait for every worker of the cluster to join.
      eval_every: when given (a multiple of 100), train in segments of this many steps and
        evaluate the checkpoint at the end of each (and at the final step), in this process,
        printing one line per evaluation and writing `metrics-<step>.json`. A resumed run
        evaluates at the same multiples.

    Returns:
      The evaluation results (as `evaluate.evaluate` returns them), oldest first; empty
      without `eval_every`.

    Raises:
      UserError: bad arguments, or the total loss became NaN or infinite (training stops
        at the OD API's next loss report, before that block's checkpoint is saved).
    """
    if not os.path.isfile(config_path):
        raise UserError(f"pipeline config not found: {config_path}")
    if eval_every is None and (patience is not None or select_by is not None):
        flag = "--patience" if patience is not None else "--select-by"
        raise UserError(f"{flag} needs --eval-every N: the best checkpoint is chosen, and patience counted, "
                        "at the evaluations during training (or rank a finished run: medtfod eval --all --select-by)")
    if select_by is not None:
        from ..training.selection import metric_key
        metric_key(select_by)
    if patience is not None and patience < 1:
        raise UserError(f"--patience {patience}: give a number of evaluations, 1 or more")
    if steps is None:
        from .protos import read_pipeline_config
        steps = read_pipeline_config(config_path).train_config.num_steps
    if steps <= 0:
        raise UserError(f"{config_path}: train_config.num_steps is {steps}; give --steps N")
    final = -(-steps // STEPS_PER_ITERATION) * STEPS_PER_ITERATION
    if eval_every is not None:
        if eval_every <= 0 or eval_every % STEPS_PER_ITERATION:
            nearest = max(STEPS_PER_ITERATION, round(eval_every / STEPS_PER_ITERATION) * STEPS_PER_ITERATION)
            raise UserError(f"--eval-every {eval_every}: the OD API trains in blocks of {STEPS_PER_ITERATION} "
                            f"steps, so evaluation can only happen at multiples of {STEPS_PER_ITERATION}; "
                            f"use --eval-every {nearest}")
        if role is not None and role.workers > 1:
            raise UserError("--eval-every evaluates inside the training process, which multi-worker "
                            "training does not support; train, then run `medtfod eval --all`")
    chosen = (select_by or default_select_by(config_path)) if eval_every is not None else None
    tf = import_tensorflow(verbose)
    from object_detection import model_lib_v2

    tidy_logging(verbose)

    os.makedirs(model_dir, exist_ok=True)
    tf.config.set_soft_device_placement(True)
    multi = role is not None and role.workers > 1
    if multi:
        strategy, sharded = _join_cluster(tf, config_path, role, cluster_timeout, quiet, {
            "--steps": final, "--checkpoint-every-n": checkpoint_every_n})
        desc = f"{desc} ({role.task_type} {role.task_index}{', the chief' if role.is_chief else ''})"
    else:
        strategy = tf.compat.v2.distribute.MirroredStrategy()
        sharded = contextlib.nullcontext

    # The OD API saves the as-run config as model_dir/pipeline.config. In the tutorial layout the
    # config given *is* that file: saving would rewrite the user's input, so it is skipped then.
    as_run = os.path.join(model_dir, "pipeline.config")
    config_is_as_run = os.path.isfile(as_run) and os.path.samefile(config_path, as_run)

    # The OD API runs (and reports) steps in blocks of 100: the bar moves once per block.
    bar = progress(total=final, desc=desc, unit="step", quiet=quiet)
    bar.update(min(_latest_step(model_dir), final))

    state = {"loss": None, "best": None}

    def on_block(step: int, loss: float) -> None:
        bar.update(max(0, step - bar.n))
        state["loss"] = f"loss {loss:.4f}"
        _postfix(bar, state)

    def run_loop(train_steps: int, every: int, save_final_config: bool) -> None:
        save_final_config = save_final_config and not config_is_as_run and (not multi or role.is_chief)
        try:
            with watch_for_nan_loss(verbose, on_block), sharded(), strategy.scope():
                model_lib_v2.train_loop(
                    pipeline_config_path=config_path,
                    model_dir=model_dir,
                    train_steps=train_steps,
                    use_tpu=False,
                    save_final_config=save_final_config,
                    checkpoint_every_n=every,
                    record_summaries=record_summaries)
        except NonFiniteLoss as stop:
            bar.close()
            raise _nan_error(stop, config_path, model_dir) from None
        except tf.errors.OpError as error:
            bar.close()
            if multi:
                multiworker.remove_worker_dirs(model_dir, role)
            if multi and isinstance(error, (tf.errors.UnavailableError, tf.errors.CancelledError,
                                            tf.errors.DeadlineExceededError, tf.errors.InternalError)):
                raise multiworker.lost_worker_error(error, model_dir, _latest_step(model_dir)) from None
            raise
        except BaseException:
            bar.close()  # Ctrl-C, a failing input: the bar ends where training did
            raise

    if eval_every is None:
        every = checkpoint_interval(checkpoint_every_n, steps)
        if every != checkpoint_every_n and verbose:
            bar.write(f"checkpointing every {every} steps (not {checkpoint_every_n}) so that step {final} is saved")
        run_loop(steps, every, save_final_config=True)
        bar.close()
        return []

    from ..training import selection as sel
    from .evaluate import Evaluator, summary_line

    start = _latest_step(model_dir)
    ends = segment_ends(start, final, eval_every)
    if not ends:
        bar.write(f"{model_dir} already holds step {start} (>= {final}); nothing to train")
        bar.close()
        return []
    selection = sel.resume(model_dir, chosen, patience, min_delta)
    if selection.history:
        bar.write(f"continuing the run's {len(selection.history)} evaluations (evaluations.jsonl); best so far: "
                  + (f"step {selection.best_step}, {chosen} {selection.best_value:.4f}"
                     if selection.best_step is not None else "none"))
    _reconcile_best(model_dir, selection)
    if selection.stop:
        bar.write(f"this run already stopped early ({patience} evaluations without improvement); the best is in "
                  f"{os.path.join(model_dir, sel.BEST)}; raise --patience to train on")
        bar.close()
        return []
    # Built before the first segment, so a broken eval input fails before any training.
    evaluator = Evaluator(config_path, model_dir, verbose)
    results = []
    for end in ends:
        # train_loop counts its checkpoint interval from the step it resumed at, so an
        # interval that divides the segment saves the segment's end.
        every = checkpoint_interval(checkpoint_every_n, end - start)
        # The as-run config records train_steps as num_steps; write it only at the end, so a
        # run stopped mid-way still resumes to the full count.
        run_loop(end, every, save_final_config=end == final)
        latest = tf.train.latest_checkpoint(model_dir)
        began = time.time()
        result = evaluator.evaluate(latest)
        if result["step"] != end:
            raise RuntimeError(f"expected a checkpoint at step {end} in {model_dir}, the latest is "
                               f"{latest} (step {result['step']})")  # a bug in checkpoint_interval
        results.append(result)
        sel.append_history(model_dir, {"step": end, "checkpoint": result["checkpoint"], "metric": chosen,
                                       "metrics": result["metrics"], "seconds": round(time.time() - began, 2)})
        improved = selection.update(end, result["metrics"])
        if improved:
            sel.save_best(model_dir, latest, {"step": end, "metric": chosen, "value": selection.best_value,
                                              "metrics": result["metrics"]})
        value = result["metrics"].get(sel.metric_key(chosen), float("nan"))
        bar.write(f"{summary_line(result)}; {chosen} {value:.4f}" + (" (new best, saved to best/)" if improved else ""))
        state["best"] = f"best {chosen} {selection.best_value:.4f} @ {selection.best_step}" \
            if selection.best_step is not None else None
        _postfix(bar, state)
        start = end
        if selection.stop:
            bar.write(f"stopping early: {patience} evaluations in a row without an improvement of more than "
                      f"{min_delta:g} in {chosen}; the latest checkpoint (step {end}) is saved, the best is step "
                      f"{selection.best_step} ({chosen} {selection.best_value:.4f}) in "
                      f"{os.path.join(model_dir, sel.BEST)}")
            break
    bar.close()
    return results
