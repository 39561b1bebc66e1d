"""Evaluation: checkpoints through the OD API's `eager_eval_loop` (COCO metrics, and those a
`score` callable computes from the same pass's ground truth and detections: see `collect`;
`medtfod.evaluation.medical.medical_metrics` gives the Medical/* ones), then exit.

`model_main_tf2 --checkpoint_dir` waits for new checkpoints (300 s, then its timeout);
this builds the model once, restores the requested checkpoints into it exactly as
`model_lib_v2.eval_continuously` does, evaluates each once, and writes the metrics to
`<model_dir>/metrics-<step>.json` (and `metrics.json`, the latest evaluated) and to
TensorBoard (`<model_dir>/eval/<eval input name>`, at the checkpoint's step).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import List, Optional

from ..core import atomic
from ..core.errors import UserError
from .checks import check_input_files
from .collect import Score, collect_detections
from .runtime import import_tensorflow, quiet_stdout, tidy_logging

MAP_50 = "DetectionBoxes_Precision/mAP@.50IOU"
MAP = "DetectionBoxes_Precision/mAP"
STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"  # where the OD API's checkpoints keep the global step


def checkpoint_step(prefix: str) -> int:
    """The training step stored in the OD API checkpoint `prefix` (e.g. `model/ckpt-3`).

    The number in the name counts saves, not steps (`ckpt-1` is the untrained step 0).
    """
    tf = import_tensorflow(verbose=False)
    try:
        return int(tf.train.load_checkpoint(prefix).get_tensor(STEP_KEY))
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
        raise UserError(f"cannot read the step of checkpoint {prefix}: {e}") from e


def summary_line(result: dict) -> str:
    """One line per evaluation: step, mAP@0.5, mAP@[.5:.95] and the eval loss."""
    m = result["metrics"]
    loss = m.get("Loss/total_loss")
    return (f"step {result['step']}: mAP@0.5 {m.get(MAP_50, float('nan')):.4f}, "
            f"mAP {m.get(MAP, float('nan')):.4f}"
            + (f", eval loss {loss:.4f}" if loss is not None else "")
            + f" ({result['checkpoint']})")


class Evaluator:
    """The eval model, eval input and checkpoint object of one config, built once.

    `evaluate(prefix)` restores a checkpoint into the same model and evaluates it, so a
    series of checkpoints costs one model build (as in `model_lib_v2.eval_continuously`).
    `score`, when given, is called once per evaluation with the ground truth and detections of
    the OD API's pass, and the metrics it returns join the COCO ones (see `collect`).
    """

    def __init__(self, config_path: str, model_dir: str, verbose: bool = True, score: Optional[Score] = None):
        self.score = score
        if not os.path.isfile(config_path):
            raise UserError(f"pipeline config not found: {config_path}")
        check_input_files(config_path, train=False, evaluation=True)
        tf = import_tensorflow(verbose)
        from object_detection import inputs, model_lib_v2
        from object_detection.builders import optimizer_builder
        from object_detection.utils import config_util

        tidy_logging(verbose)
        self.model_dir = model_dir
        configs = config_util.get_configs_from_pipeline_file(config_path)
        self.configs = config_util.merge_external_params_with_configs(
            configs, None, kwargs_dict={"sample_1_of_n_eval_examples": 1, "eval_num_epochs": 1})
        self.eval_config = self.configs["eval_config"]
        self.eval_input_config = self.configs["eval_input_configs"][0]
        strategy = tf.compat.v2.distribute.get_strategy()
        with strategy.scope():
            self.model = model_lib_v2.MODEL_BUILD_UTIL_MAP["detection_model_fn_base"](
                model_config=self.configs["model"], is_training=True)
        self.eval_input = strategy.experimental_distribute_dataset(inputs.eval_input(
            eval_config=self.eval_config, eval_input_config=self.eval_input_config,
            model_config=self.configs["model"], model=self.model))
        self.global_step = tf.compat.v2.Variable(0, trainable=False, dtype=tf.compat.v2.dtypes.int64)
        self.optimizer, _ = optimizer_builder.build(self.configs["train_config"].optimizer,
                                                    global_step=self.global_step)
        self.ckpt = tf.compat.v2.train.Checkpoint(step=self.global_step, model=self.model,
                                                  optimizer=self.optimizer)
        if self.eval_config.use_moving_averages:
            model_lib_v2._ensure_model_is_built(self.model, self.eval_input,  # noqa: SLF001
                                                self.eval_config.batch_size == 1)
            self.optimizer.shadow_copy(self.model)
        self.writer = tf.compat.v2.summary.create_file_writer(
            os.path.join(model_dir, "eval", self.eval_input_config.name))

    def evaluate(self, checkpoint: str) -> dict:
        """Restore `checkpoint` (a prefix) and evaluate it; writes metrics-<step>.json and metrics.json.

        Returns:
          {'checkpoint': name, 'step': int, 'eval_input': [paths], 'metrics': {name: float}}.
        """
        from object_detection import model_lib_v2

        # Restoring overwrites every variable (model weights, EMA slots, step), so the
        # previous checkpoint leaves nothing behind.
        self.ckpt.restore(checkpoint).expect_partial()
        if self.eval_config.use_moving_averages:
            self.optimizer.swap_weights()
        # score: the OD API's own pass also computes its metrics (e.g. AP@0.1/0.5, FROC and AUC, Medical/*)
        collect = collect_detections(self.score) if self.score is not None else contextlib.nullcontext()
        with self.writer.as_default(), quiet_stdout(), collect:  # pycocotools prints
            metrics = model_lib_v2.eager_eval_loop(self.model, self.configs, self.eval_input, use_tpu=False,
                                                   postprocess_on_cpu=False, global_step=self.global_step)
        self.writer.flush()
        result = {
            "checkpoint": os.path.basename(checkpoint),
            "step": int(self.global_step.numpy()),
            "eval_input": list(self.eval_input_config.tf_record_input_reader.input_path),
            "metrics": {k: float(v) for k, v in sorted(metrics.items())},
        }
        text = json.dumps(result, indent=2) + "\n"  # NaN where a metric is undefined (e.g. AUC without negatives)
        atomic.write_file(os.path.join(self.model_dir, f"metrics-{result['step']}.json"), text)
        atomic.write_file(os.path.join(self.model_dir, "metrics.json"), text)
        return result


def evaluate(config_path: str, model_dir: str, checkpoint: Optional[str] = None,
             verbose: bool = True, score: Optional[Score] = None) -> dict:
    """Evaluate `checkpoint` (default: the latest in `model_dir`) on the config's eval input,
    with the metrics of `score` besides the COCO ones (see `Evaluator`).

    Returns:
      {'checkpoint': name, 'step': int, 'eval_input': [paths], 'metrics': {name: float}}
      (also in metrics.json and metrics-<step>.json).
    """
    if not os.path.isfile(config_path):
        raise UserError(f"pipeline config not found: {config_path}")
    check_input_files(config_path, train=False, evaluation=True)
    tf = import_tensorflow(verbose)
    checkpoint = checkpoint or tf.train.latest_checkpoint(model_dir)
    if not checkpoint:
        raise UserError(f"no checkpoint in {model_dir}; train first (medtfod train)")
    return Evaluator(config_path, model_dir, verbose, score).evaluate(checkpoint)


def evaluate_all_checkpoints(config_path: str, model_dir: str, verbose: bool = True,
                             min_step: int = 1, score: Optional[Score] = None) -> List[dict]:
    """Evaluate every checkpoint the `checkpoint` file of `model_dir` lists, oldest first, then exit.

    The model is built once and each checkpoint restored into it. Writes metrics-<step>.json
    for each, metrics.json for the latest, and TensorBoard eval events at each step.

    Args:
      min_step: checkpoints of earlier steps are skipped. The OD API saves an untrained
        step-0 checkpoint when training starts; evaluating it costs as much as any other
        and measures nothing, so the default skips it (min_step=0 keeps it).
      score: computes metrics besides the COCO ones (see `Evaluator`).

    Returns:
      One result per evaluated checkpoint (as `evaluate` returns), in increasing step order.

    Raises:
      UserError: no config, no checkpoint, or none at min_step or later.
    """
    if not os.path.isfile(config_path):
        raise UserError(f"pipeline config not found: {config_path}")
    check_input_files(config_path, train=False, evaluation=True)
    tf = import_tensorflow(verbose)
    state = tf.train.get_checkpoint_state(model_dir)
    if state is None or not state.all_model_checkpoint_paths:
        raise UserError(f"no checkpoint in {model_dir}; train first (medtfod train)")
    todo, missing, skipped = [], [], []
    for prefix in state.all_model_checkpoint_paths:
        if not tf.io.gfile.exists(prefix + ".index"):
            missing.append(os.path.basename(prefix))  # e.g. deleted by a training run still going
            continue
        step = checkpoint_step(prefix)
        (todo if step >= min_step else skipped).append((step, prefix))
    if missing:
        print(f"note: {len(missing)} checkpoint(s) listed in {model_dir}/checkpoint no longer exist "
              f"and were skipped: {', '.join(missing)}", file=sys.stderr, flush=True)
    if not todo:
        raise UserError(f"no checkpoint of step >= {min_step} in {model_dir} "
                        f"(found steps {sorted(s for s, _ in skipped)}); train first (medtfod train)")
    if skipped and verbose:
        print(f"skipping {len(skipped)} checkpoint(s) before step {min_step} "
              f"(step {', '.join(str(s) for s, _ in skipped)})", flush=True)
    evaluator = Evaluator(config_path, model_dir, verbose, score)
    results = []
    for step, prefix in sorted(todo):
        result = evaluator.evaluate(prefix)
        results.append(result)
        if verbose:
            print(summary_line(result), flush=True)
    # metrics.json holds the last evaluated, which is the latest step (sorted above)
    return results

