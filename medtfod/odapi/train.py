"""Training: the OD API's own TF2 loop (`model_lib_v2.train_loop`), as `model_main_tf2` runs it.

`TrainLoop.run` runs the loop up to a given step (it resumes from the latest checkpoint in
`model_dir`): one training segment. What happens between segments (evaluation, the best
checkpoint, patience, the progress bar) is `medtfod.training.trainer`'s. Two additions
around the loop, neither of which changes the OD API:
  * a non-finite total loss stops the loop with `NonFiniteLoss` (see `NanLossWatch`);
  * multi-worker training joins its cluster first (`multiworker`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from typing import Callable, Iterator, Optional

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


class NonFiniteLoss(Exception):
    """Raised inside the OD API's loop by `NanLossWatch`; `medtfod.training.hooks.NanLossStop`
    turns it into a UserError."""

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


def latest_step(model_dir: str) -> int:
    """The step of the latest checkpoint in `model_dir` (0 when there is none)."""
    from .evaluate import checkpoint_step
    tf = import_tensorflow(verbose=False)
    latest = tf.train.latest_checkpoint(model_dir)
    return checkpoint_step(latest) if latest else 0


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
    how = multiworker.input_sharding(tf, config, role.workers)
    per = batch // strategy.num_replicas_in_sync
    if not quiet:
        print(f"{role.describe()}: global batch {batch} = {per} per replica x "
              f"{strategy.num_replicas_in_sync} replicas; input sharded by "
              + (f"file ({len(files)} train files)" if how == "file" else
                 f"example (each worker reads all {len(files)} train file(s) and keeps 1 record in "
                 f"{role.workers}, from record {role.rank + 1})"), flush=True)
    return strategy, contextlib.nullcontext if how == "file" else multiworker.shard_by_example


class TrainLoop:
    """The OD API's `train_loop` for one config and `model_dir`, run one segment at a time.

    Built once per run: it loads TensorFlow and the OD API, makes `model_dir`, and picks the
    strategy as `model_main_tf2` does: MirroredStrategy (all visible GPUs, else the CPU), or
    MultiWorkerMirroredStrategy when `role` (a `cluster.Role` from TF_CONFIG) has more than one
    worker; then it waits for every worker to join (`cluster_timeout` seconds) and checks that
    they agree on `settings` (flag -> value, e.g. {'--steps': 600}) and on the config's batch and
    train files (see `multiworker`). Only the chief writes into `model_dir`; every worker must
    be given the same `model_dir`.

    `run(train_steps, ...)` resumes from the latest checkpoint in `model_dir` and trains up to
    `train_steps` (in blocks of 100, the OD API's `num_steps_per_iteration`), watching the loss
    reports (`NanLossWatch`): a non-finite total loss raises `NonFiniteLoss`, and a lost worker
    of a cluster a `UserError` (`multiworker.lost_worker_error`).
    """

    def __init__(self, config_path: str, model_dir: str, *, role=None, cluster_timeout: int = 600,
                 record_summaries: bool = True, verbose: bool = True, quiet: bool = False,
                 settings: Optional[dict] = None):
        self.config_path, self.model_dir, self.role = config_path, model_dir, role
        self.record_summaries, self.verbose = record_summaries, verbose
        self.tf = tf = import_tensorflow(verbose)
        from object_detection import model_lib_v2  # noqa: F401 - its imports set up logging: tidied below

        tidy_logging(verbose)

        os.makedirs(model_dir, exist_ok=True)
        tf.config.set_soft_device_placement(True)
        self.multi = role is not None and role.workers > 1
        if self.multi:
            self.strategy, self.sharded = _join_cluster(tf, config_path, role, cluster_timeout, quiet,
                                                        settings or {})
        else:
            self.strategy = tf.compat.v2.distribute.MirroredStrategy()
            self.sharded = contextlib.nullcontext
        # The OD API saves the as-run config as model_dir/pipeline.config. In the tutorial layout the
        # config given *is* that file: saving would rewrite the user's input, so it is skipped then.
        as_run = os.path.join(model_dir, "pipeline.config")
        self.config_is_as_run = os.path.isfile(as_run) and os.path.samefile(config_path, as_run)

    def latest_step(self) -> int:
        """The step of the latest checkpoint in `model_dir` (0 when there is none)."""
        return latest_step(self.model_dir)

    def latest_checkpoint(self) -> Optional[str]:
        """The prefix of the latest checkpoint in `model_dir` (e.g. MODEL_DIR/ckpt-3), or None."""
        return self.tf.train.latest_checkpoint(self.model_dir)

    def run(self, train_steps: int, checkpoint_every_n: int, save_final_config: bool,
            on_block: Optional[Callable[[int, float], None]] = None) -> None:
        """Train from the latest checkpoint up to `train_steps`, saving every `checkpoint_every_n`
        steps (counted from the step it resumed at; see `checkpoint_interval`).

        Args:
          save_final_config: write the as-run config (train_steps as num_steps) to
            model_dir/pipeline.config at the end; never over the config given, never by a
            worker that is not the chief.
          on_block: called with (step, total loss) after each block of 100 steps whose loss
            is finite.

        Raises:
          NonFiniteLoss: the total loss became NaN or infinite (before that block's checkpoint).
          UserError: a worker of the cluster was lost.
        """
        from object_detection import model_lib_v2
        tf, role = self.tf, self.role
        save_final_config = save_final_config and not self.config_is_as_run and (not self.multi or role.is_chief)
        try:
            with watch_for_nan_loss(self.verbose, on_block), self.sharded(), self.strategy.scope():
                model_lib_v2.train_loop(
                    pipeline_config_path=self.config_path,
                    model_dir=self.model_dir,
                    train_steps=train_steps,
                    use_tpu=False,
                    save_final_config=save_final_config,
                    checkpoint_every_n=checkpoint_every_n,
                    record_summaries=self.record_summaries)
        except tf.errors.OpError as error:
            if self.multi:
                multiworker.remove_worker_dirs(self.model_dir, role)
            if self.multi and isinstance(error, (tf.errors.UnavailableError, tf.errors.CancelledError,
                                                 tf.errors.DeadlineExceededError, tf.errors.InternalError)):
                raise multiworker.lost_worker_error(error, self.model_dir, latest_step(self.model_dir)) from None
            raise
