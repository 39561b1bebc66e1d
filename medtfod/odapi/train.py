"""Training: the OD API's own TF2 loop (`model_lib_v2.train_loop`), as `model_main_tf2` runs it."""
from __future__ import annotations

import os
from typing import Optional

from ..errors import UserError
from .runtime import import_tensorflow, tidy_logging


def train(config_path: str, model_dir: str, steps: Optional[int] = None, checkpoint_every_n: int = 1000,
          num_workers: int = 1, record_summaries: bool = True, verbose: bool = True) -> None:
    """Train the model of `config_path`, writing checkpoints and TensorBoard logs to `model_dir`.

    Same strategy choice as `model_main_tf2`: MirroredStrategy (all visible GPUs, else the
    CPU), MultiWorkerMirroredStrategy when `num_workers > 1`. Training resumes from the
    latest checkpoint in `model_dir`. Steps run in blocks of 100 (the OD API's
    `num_steps_per_iteration`).

    Args:
      steps: total steps; None uses the config's `train_config.num_steps`.
    """
    if not os.path.isfile(config_path):
        raise UserError(f"pipeline config not found: {config_path}")
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
            checkpoint_every_n=checkpoint_every_n,
            record_summaries=record_summaries)
