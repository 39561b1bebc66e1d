"""Evaluation: one checkpoint through the OD API's `eager_eval_loop` (COCO metrics), then exit.

`model_main_tf2 --checkpoint_dir` waits for new checkpoints (300 s, then its timeout);
this restores the requested (default: latest) checkpoint exactly as
`model_lib_v2.eval_continuously` does, evaluates once, and writes the metrics to
`<model_dir>/metrics.json` and TensorBoard (`<model_dir>/eval`).
"""
from __future__ import annotations

import json
import os
from typing import Optional

from .. import atomic
from ..errors import UserError
from .runtime import import_tensorflow, tidy_logging


def evaluate(config_path: str, model_dir: str, checkpoint: Optional[str] = None,
             verbose: bool = True) -> dict:
    """Evaluate `checkpoint` (default: the latest in `model_dir`) on the config's eval input.

    Returns:
      {'checkpoint': path, 'step': int, 'metrics': {name: float}} (also in metrics.json).
    """
    if not os.path.isfile(config_path):
        raise UserError(f"pipeline config not found: {config_path}")
    tf = import_tensorflow(verbose)
    from object_detection import inputs, model_lib_v2
    from object_detection.builders import optimizer_builder
    from object_detection.utils import config_util

    tidy_logging(verbose)

    checkpoint = checkpoint or tf.train.latest_checkpoint(model_dir)
    if not checkpoint:
        raise UserError(f"no checkpoint in {model_dir}; train first (medtfod train)")
    configs = config_util.get_configs_from_pipeline_file(config_path)
    configs = config_util.merge_external_params_with_configs(
        configs, None, kwargs_dict={"sample_1_of_n_eval_examples": 1, "eval_num_epochs": 1})
    eval_config = configs["eval_config"]
    eval_input_config = configs["eval_input_configs"][0]
    strategy = tf.compat.v2.distribute.get_strategy()
    with strategy.scope():
        model = model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"](
            model_config=configs["model"], is_training=True)
    eval_input = strategy.experimental_distribute_dataset(inputs.eval_input(
        eval_config=eval_config, eval_input_config=eval_input_config,
        model_config=configs["model"], model=model))
    global_step = tf.compat.v2.Variable(0, trainable=False, dtype=tf.compat.v2.dtypes.int64)
    optimizer, _ = optimizer_builder.build(configs["train_config"].optimizer, global_step=global_step)
    ckpt = tf.compat.v2.train.Checkpoint(step=global_step, model=model, optimizer=optimizer)
    if eval_config.use_moving_averages:
        model_lib_v2._ensure_model_is_built(model, eval_input, eval_config.batch_size == 1)  # noqa
        optimizer.shadow_copy(model)
    ckpt.restore(checkpoint).expect_partial()
    if eval_config.use_moving_averages:
        optimizer.swap_weights()
    writer = tf.compat.v2.summary.create_file_writer(os.path.join(model_dir, "eval", eval_input_config.name))
    with writer.as_default():
        metrics = model_lib_v2.eager_eval_loop(model, configs, eval_input, use_tpu=False,
                                               postprocess_on_cpu=False, global_step=global_step)
    result = {
        "checkpoint": os.path.basename(checkpoint),
        "step": int(global_step.numpy()),
        "eval_input": list(eval_input_config.tf_record_input_reader.input_path),
        "metrics": {k: float(v) for k, v in sorted(metrics.items())},
    }
    atomic.write_file(os.path.join(model_dir, "metrics.json"), json.dumps(result, indent=2) + "\n")
    return result
