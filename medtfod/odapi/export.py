"""Export: a trained checkpoint -> SavedModel with the OD API's `exporter_lib_v2`
(what `exporter_main_v2` runs), plus the label map beside it for `medtfod detect`."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional

from ..core import atomic
from ..core.errors import UserError
from .runtime import import_tensorflow, tidy_logging

INPUT_TYPES = ("image_tensor", "float_image_tensor", "encoded_image_string_tensor")


def checkpoint_source(model_dir: str, choice: Optional[str], tmp: str):
    """(a folder whose latest checkpoint is the one to export, what it is, its step) for --checkpoint
    `choice`: 'best' (MODEL_DIR/best/, the default when it exists), 'latest', or a prefix."""
    from ..training.selection import BEST, read_best
    from .evaluate import checkpoint_step
    tf = import_tensorflow(verbose=False)
    best = read_best(model_dir)
    choice = choice or ("best" if best else "latest")
    if choice == "best":
        if not best:
            raise UserError(f"{model_dir} has no best/ checkpoint; train with --eval-every (or rank a finished run "
                            "with medtfod eval --all --select-by METRIC), or export --checkpoint latest")
        return os.path.join(model_dir, BEST), (f"the best checkpoint: step {best['step']}, {best['metric']} "
                                               f"{best['value']:.4f} (best/best.json)"), best["step"]
    if choice == "latest":
        latest = tf.train.latest_checkpoint(model_dir)
        if not latest:
            raise UserError(f"no checkpoint in {model_dir}; train first (medtfod train)")
        step = checkpoint_step(latest)
        return model_dir, f"the latest checkpoint: {os.path.basename(latest)}, step {step}", step
    if not os.path.isfile(choice + ".index"):
        raise UserError(f"--checkpoint {choice}: expected best, latest or a checkpoint prefix such as "
                        f"{os.path.join(model_dir, 'ckpt-3')} (no {choice}.index)")
    with open(os.path.join(tmp, "checkpoint"), "w", encoding="utf-8") as f:  # a state file naming the prefix
        f.write(f'model_checkpoint_path: "{os.path.abspath(choice)}"\n')
    step = checkpoint_step(choice)
    return tmp, f"checkpoint {choice}, step {step}", step


def export(config_path: str, model_dir: str, out_dir: str, input_type: str = "image_tensor",
           verbose: bool = True, tflite: bool = False, checkpoint: Optional[str] = None) -> str:
    """Export a checkpoint of `model_dir` to `out_dir` (assembled aside, then moved): `checkpoint`
    'best' (best/, the default when the run has one), 'latest' (the default otherwise) or a prefix.

    Writes `out_dir/saved_model/`, `out_dir/checkpoint/`, `out_dir/pipeline.config` (the
    exporter's), `out_dir/label_map.pbtxt` and `out_dir/export.json` (step, checkpoint, input type,
    and the grey window of the training dataset's manifest when it is found); with `tflite` (SSD
    only) also `out_dir/tflite/`, checked against the SavedModel on the first eval image (see `tflite.self_check`).
    Returns the SavedModel path.
    """
    if input_type not in INPUT_TYPES:
        raise UserError(f"unknown --input-type {input_type!r}; choose one of {', '.join(INPUT_TYPES)}")
    if not os.path.isfile(config_path):
        raise UserError(f"pipeline config not found: {config_path}")
    from .protos import read_pipeline_config

    pipeline_config = read_pipeline_config(config_path)
    if tflite:
        from .tflite import check_exportable
        check_exportable(pipeline_config, config_path)
        if input_type != "image_tensor":
            raise UserError("--tflite checks the TFLite boxes against an image_tensor SavedModel; "
                            "leave out --input-type")
    import_tensorflow(verbose)
    from object_detection import exporter_lib_v2

    tidy_logging(verbose)
    label_map = pipeline_config.train_input_reader.label_map_path
    with tempfile.TemporaryDirectory(prefix="medtfod-ckpt-") as state_dir:
        source, what, step = checkpoint_source(model_dir, checkpoint, state_dir)
        print(f"exporting {what}", flush=True)
        with atomic.staged_directory(out_dir) as tmp:
            exporter_lib_v2.export_inference_graph(input_type, pipeline_config, source, tmp)
            if label_map and os.path.isfile(label_map):
                shutil.copyfile(label_map, os.path.join(tmp, "label_map.pbtxt"))
            record = {"step": step, "checkpoint": what, "input_type": input_type}
            record.update(_training_window(pipeline_config))
            record.update(_training_tiles(pipeline_config))
            with open(os.path.join(tmp, "export.json"), "w", encoding="utf-8") as f:  # what was exported
                json.dump(record, f, indent=2)
            if tflite:
                _export_tflite(pipeline_config, source, tmp)
    return os.path.join(out_dir, "saved_model")


def _training_window(pipeline_config) -> dict:
    """{'window', 'clahe', 'window_dataset'}: the grey window the training data was converted with,
    from the manifest of the dataset its train TFRecords are in (`manifest.recorded_window`), so
    that `detect` applies it again to DICOM and 16-bit inputs; {} when that cannot be known."""
    from ..data.manifest import recorded_window
    found = recorded_window(pipeline_config.train_input_reader.tf_record_input_reader.input_path)
    if found is None:
        return {}
    return {"window": found["window"], "clahe": found["clahe"], "window_dataset": found["dataset"]}


def _training_tiles(pipeline_config) -> dict:
    """{'training_tiles': size} when the train input is `convert --tile`'s tiles (`data.tiles`), so
    detect can suggest --tile size; {} otherwise."""
    from ..data.tiles import load_tiles
    for path in pipeline_config.train_input_reader.tf_record_input_reader.input_path:
        if "-tiles.record" in os.path.basename(path):
            found = load_tiles(os.path.dirname(os.path.dirname(os.path.abspath(path))))
            if found:
                return {"training_tiles": int(found["size"])}
    return {}


def _export_tflite(pipeline_config, model_dir: str, tmp: str) -> None:
    from . import tflite

    folder = os.path.join(tmp, "tflite")
    tflite.write_tflite(pipeline_config, model_dir, folder)
    image = tflite.first_eval_image(pipeline_config)
    if image is None:
        print("tflite: no eval image to check the TFLite boxes against the SavedModel's; check skipped")
        return
    check = tflite.self_check(folder, os.path.join(tmp, "saved_model"), image)
    same = check["compared"] and check["max_box_difference"] <= tflite.BOX_TOLERANCE
    print(f"tflite: top {check['compared']} detections on the first eval image vs the SavedModel's: largest box "
          f"difference {check['max_box_difference']:.2g}, score {check['max_score_difference']:.2g} -> "
          + ("same boxes" if same else "DIFFERENT boxes: use the SavedModel, and report this"))
