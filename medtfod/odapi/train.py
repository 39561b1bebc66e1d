"""Training: the OD API's own TF2 loop (`model_lib_v2.train_loop`), as `model_main_tf2` runs it."""
from __future__ import annotations

import os
from typing import Optional

from ..errors import UserError
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


def train(config_path: str, model_dir: str, steps: Optional[int] = None, checkpoint_every_n: int = 1000,
          num_workers: int = 1, record_summaries: bool = True, verbose: bool = True) -> None:
    """Train the model of `config_path`, writing checkpoints and TensorBoard logs to `model_dir`.

    Same strategy choice as `model_main_tf2`: MirroredStrategy (all visible GPUs, else the
    CPU), MultiWorkerMirroredStrategy when `num_workers > 1`. Training resumes from the
    latest checkpoint in `model_dir`. Steps run in blocks of 100 (the OD API's
    `num_steps_per_iteration`).

    Args:
      steps: total steps; None uses the config's `train_config.num_steps`.
      checkpoint_every_n: the wanted checkpoint interval; lowered where needed so the
        final step is always saved (see `checkpoint_interval`).
    """
    if not os.path.isfile(config_path):
        raise UserError(f"pipeline config not found: {config_path}")
    if steps is None:
        from .protos import read_pipeline_config
        steps = read_pipeline_config(config_path).train_config.num_steps
    if steps <= 0:
        raise UserError(f"{config_path}: train_config.num_steps is {steps}; give --steps N")
    every = checkpoint_interval(checkpoint_every_n, steps)
    if every != checkpoint_every_n and verbose:
        print(f"checkpointing every {every} steps (not {checkpoint_every_n}) so that step "
              f"{-(-steps // STEPS_PER_ITERATION) * STEPS_PER_ITERATION} is saved", flush=True)
    tf = import_tensorflow(verbose)
    from object_detection import model_lib_v2

    tidy_logging(verbose)

    os.makedirs(model_dir, exist_ok=True)
    tf.config.set_soft_device_placement(True)
    if num_workers > 1:
        strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.compat.v2.distribute.MirroredStrategy()
    with strategy.scope():
        model_lib_v2.train_loop(
            pipeline_config_path=config_path,
            model_dir=model_dir,
            train_steps=steps,
            use_tpu=False,
            save_final_config=True,
            checkpoint_every_n=every,
            record_summaries=record_summaries)
