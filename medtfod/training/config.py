"""Pipeline configs: parse a template as the OD API's `TrainEvalPipelineConfig`, set fields
for a converted dataset, write it back as text.

Editing the proto (never the text) means a misspelt field fails here, at render time,
with the valid names, rather than an hour into training.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from glob import glob
from typing import Dict, Optional, Sequence, Union

from ..core import atomic
from ..core.errors import UserError, did_you_mean
from ..core.labelmap import read_label_map
from .augment import apply_preset
from .models import (MODELS, ModelSpec, apply_tiny, enable_masks, from_scratch_batch_norm, model_spec,
                     set_image_size)
from ..core.resources import resource_path
from .config_checks import check_anchor_reach, check_tiles
from .recipes import apply_recipe
from .schedule import base_rate, rescale

# The model registry lives in `models`; re-exported here, where the CLI looks for it.
__all__ = ["MODELS", "ModelSpec", "model_spec", "RenderOptions", "render", "write_config", "set_override",
           "parse_overrides", "record_pattern"]


def _posix(path: str) -> str:
    """Absolute path with forward slashes, which the OD API reads on every OS."""
    return os.path.abspath(path).replace("\\", "/")


def record_pattern(data_dir: str, split: str, tiles: bool = False) -> str:
    """The TFRecord glob of `split` in a converted dataset directory; with `tiles`, of its training
    tiles when `convert --tile` made them (`medtfod.data.tiles`)."""
    report_path = os.path.join(data_dir, "report.json")
    pattern = None
    if os.path.isfile(report_path):
        with open(report_path, encoding="utf-8") as f:
            splits = json.load(f).get("splits", {})
        if splits and split not in splits:
            raise UserError(f"{data_dir} has no split {split!r} (its splits: {', '.join(splits)}); the config trains "
                            "on train and evaluates on val: convert with both (e.g. --split train=0.8,val=0.2)")
        entry = splits.get(split, {})
        pattern = entry.get("tiles", {}).get("tfrecords") if tiles else None
        pattern = pattern or entry.get("tfrecords")
    if pattern is None:
        found = sorted(glob(os.path.join(data_dir, "tfrecords", f"{split}.record-*")))
        if not found:
            raise UserError(f"{data_dir} has no TFRecords for split {split!r}; "
                            "expected the output folder of `medtfod convert`")
        pattern = re.sub(r"-\d{5}-of-", "-?????-of-", os.path.basename(found[0]))
    return _posix(os.path.join(data_dir, "tfrecords", pattern))


def _is_repeated(fd) -> bool:
    """protobuf >= 6 has `is_repeated`; older versions only `label`."""
    if hasattr(fd, "is_repeated"):
        return fd.is_repeated
    return fd.label == fd.LABEL_REPEATED


_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")


def _field(message, name: str, key: str):
    fields = message.DESCRIPTOR.fields_by_name
    if name not in fields:
        raise UserError(f"--set {key}: {message.DESCRIPTOR.name} has no field {name!r}{did_you_mean(name, fields)}")
    return fields[name]


def set_override(config, key: str, value: str) -> None:
    """Set one dotted field, e.g. `train_config.batch_size=4` or
    `model.ssd.image_resizer.fixed_shape_resizer.height=256`. Repeated message fields take
    an index (`data_augmentation_options[0]`); repeated scalars a comma-separated list;
    message fields a text proto (`train_config.optimizer={...}`)."""
    from google.protobuf import descriptor, text_format

    message = config
    parts = key.split(".")
    for part in parts[:-1]:
        m = _INDEXED.match(part)
        name, index = (m.group(1), int(m.group(2))) if m else (part, None)
        fd = _field(message, name, key)
        if fd.message_type is None:
            raise UserError(f"--set {key}: {name!r} is a value, not a message")
        message = getattr(message, name)
        if index is not None:
            if index >= len(message):
                raise UserError(f"--set {key}: {name} has {len(message)} entries, no [{index}]")
            message = message[index]
    fd = _field(message, parts[-1], key)

    def convert(text: str):
        text = text.strip()
        try:
            if fd.type == descriptor.FieldDescriptor.TYPE_BOOL:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return text.lower() in ("true", "1")
            if fd.type in (descriptor.FieldDescriptor.TYPE_FLOAT, descriptor.FieldDescriptor.TYPE_DOUBLE):
                return float(text)
            if fd.type == descriptor.FieldDescriptor.TYPE_ENUM:
                if text not in fd.enum_type.values_by_name:
                    raise ValueError
                return fd.enum_type.values_by_name[text].number
            if fd.type == descriptor.FieldDescriptor.TYPE_STRING:
                return text.strip("\"'")
            return int(text)
        except ValueError:
            expected = ("one of " + ", ".join(fd.enum_type.values_by_name) if fd.enum_type
                        else "true or false" if fd.type == descriptor.FieldDescriptor.TYPE_BOOL
                        else "a number")
            raise UserError(f"--set {key}={value}: {text!r} is not valid; expected {expected}") from None

    if fd.message_type is not None:
        target = getattr(message, fd.name)
        if _is_repeated(fd):
            raise UserError(f"--set {key}: repeated message field; set its entries as {fd.name}[0].FIELD")
        target.Clear()
        try:
            text = value.strip()
            text_format.Merge(text[1:-1] if text.startswith("{") and text.endswith("}") else text, target)
        except text_format.ParseError as e:
            raise UserError(f"--set {key}: {e}") from None
        target.SetInParent()
    elif _is_repeated(fd):
        repeated = getattr(message, fd.name)
        del repeated[:]
        repeated.extend(convert(v) for v in value.split(","))
    else:
        setattr(message, fd.name, convert(value))


def parse_overrides(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected FIELD.PATH=VALUE, e.g. train_config.batch_size=4")
        out[key.strip()] = value
    return out


def restore_type(checkpoint: str, config) -> str:
    """'full' when `checkpoint` is a model of `config`'s architecture and class count (a medtfod
    training run, its best/ copy or an export: a pipeline.config beside the checkpoint or one
    folder up says so), so fine-tuning continues from the whole model, box heads included; else
    'detection' (a zoo checkpoint: backbone and feature pyramid restored, heads start fresh)."""
    from ..odapi import protos
    folder = os.path.dirname(os.path.abspath(checkpoint))
    for candidate in (folder, os.path.dirname(folder)):
        path = os.path.join(candidate, "pipeline.config")
        if os.path.isfile(path):
            try:
                theirs = protos.read_pipeline_config(path).model
            except Exception:  # noqa: BLE001 - an unreadable neighbour config only means 'not ours'
                return "detection"
            kind = config.model.WhichOneof("model")
            if theirs.WhichOneof("model") != kind:
                return "detection"
            ours, other = getattr(config.model, kind), getattr(theirs, kind)
            same = (other.num_classes == ours.num_classes
                    and other.feature_extractor.type == ours.feature_extractor.type)
            return "full" if same else "detection"
    return "detection"


@dataclass(frozen=True)
class RenderOptions:
    """What `render` changes in a model's template; every field left at its default keeps the
    template's value.

    Fields:
      batch_size, steps, image_size, learning_rate: replace the template's values (image_size
        sets a fixed shape's height and width, or a keep-aspect-ratio resizer's min and max
        dimension); the schedule, whatever its kind, follows `steps` and `learning_rate` (see
        `schedule.rescale`). A new batch_size without a learning_rate scales the template's rate
        linearly with the batch (the zoo's rate belongs to the zoo's batch size).
      warmup_steps: the schedule's warm-up in steps (cosine `warmup_steps`, exponential
        `burnin_steps`; see `schedule.rescale`).
      checkpoint: fine-tune checkpoint prefix (e.g. '.../checkpoint/ckpt-0'); None trains
        from scratch (the template's fine_tune_checkpoint is removed, and SSD's batch-norm decay
        becomes 0.99: `models.from_scratch_batch_norm`).
      checkpoint_type: the OD API's fine_tune_checkpoint_type; None chooses (`restore_type`):
        'full' for a model of this architecture and these classes, else 'detection'.
      augment: names of `PreprocessingStep` fields (e.g. ['random_horizontal_flip'])
        replacing the template's data augmentation; None keeps the template's.
      augment_preset: a named list of steps with their parameters (`augment.PRESETS`: none,
        cxr, us, default = the template's); not together with `augment`.
      overrides: dotted field -> value, applied last (see `set_override`); those under
        `train_config.optimizer` first, so the other options rescale the schedule they set.
      tiny: the model's tiny variant for CPU tests (see `models.apply_tiny`); the other
        options still apply on top of it.
      positive_fraction: the share of training images with findings, sampled from a dataset
        converted with --shard-by finding (`balance.apply_positive_fraction`); None: as they come.
      hard_negatives: SSD's hard example miner (`balance.apply_hard_negatives`; RetinaNet too;
        refused for R-CNN and CenterNet).
      recipe: a measured set of the values above (`recipes.RECIPES`, e.g. 'cpu-scratch'), filling
        only the fields left None.
      fit_anchors: fit the anchor generator to the training split's boxes (`anchors.fit`), after
        the image size is set and before the non-optimizer overrides (a `--set` on the anchors wins).
    """
    batch_size: Optional[int] = None
    steps: Optional[int] = None
    image_size: Optional[int] = None
    learning_rate: Optional[float] = None
    warmup_steps: Optional[int] = None
    checkpoint: Optional[str] = None
    checkpoint_type: Optional[str] = None
    augment: Optional[Sequence[str]] = None
    augment_preset: Optional[str] = None
    overrides: Optional[Dict[str, str]] = None
    tiny: bool = False
    positive_fraction: Optional[float] = None
    hard_negatives: bool = False
    recipe: Optional[str] = None
    fit_anchors: bool = False


def render(model: str, data_dir: str, *, options: Optional[RenderOptions] = None,
           train_split: Union[str, Sequence[str]] = "train", eval_split: str = "val",
           anchor_report: Optional[list] = None):
    """A `TrainEvalPipelineConfig` for `model` on the converted dataset in `data_dir`.

    num_classes is set in the model's own oneof (`model.ssd`, `model.faster_rcnn` or
    `model.center_net`). A Mask R-CNN model reads and evaluates instance masks, and needs a
    dataset that has them (`report.json`'s per-split mask counts); box models leave masks off
    even when the dataset has them.

    Args:
      options: what changes in the template (see `RenderOptions`); None keeps it as it is.
      train_split, eval_split: the dataset's splits the train input reads (one or several)
        and the eval input reads.
      anchor_report: with options.fit_anchors, a list that receives the fit's (before, after,
        number of boxes) (`anchors.fit`), for the caller to print.

    Raises:
      UserError: unknown model, bad override, missing checkpoint, or a Mask R-CNN model on a
        dataset without instance masks.
    """
    from ..odapi import protos

    opts = apply_recipe(options or RenderOptions(), model)
    train_splits = [train_split] if isinstance(train_split, str) else list(train_split)
    spec = model_spec(model)
    config = protos.read_pipeline_config(resource_path("pipeline_configs", spec.template))
    label_map_path = os.path.join(data_dir, "label_map.pbtxt")
    label_map = read_label_map(label_map_path)
    arch = getattr(config.model, spec.meta_arch)
    arch.num_classes = label_map.num_classes
    if opts.tiny:
        apply_tiny(config, spec)
    if opts.image_size:
        set_image_size(arch, opts.image_size)
    if spec.masks:
        enable_masks(config, model, data_dir, (*train_splits, eval_split))

    for key, value in (opts.overrides or {}).items():  # an optimizer override defines the schedule rescaled below
        if key.startswith("train_config.optimizer"):
            set_override(config, key, value)
    train = config.train_config
    learning_rate = opts.learning_rate
    if opts.batch_size and opts.batch_size != train.batch_size and not learning_rate:
        # The linear scaling rule (Goyal et al. 2017): the zoo's rate belongs to the zoo's batch
        # (SSD: 0.08 at 128). Kept as is at batch 4, fine-tuning diverges to NaN.
        learning_rate = base_rate(train) * opts.batch_size / train.batch_size
    if opts.batch_size:
        train.batch_size = opts.batch_size
    rescale(train, steps=opts.steps, learning_rate=learning_rate, warmup_steps=opts.warmup_steps)
    checkpoint = opts.checkpoint
    if checkpoint:
        if not os.path.exists(checkpoint + ".index"):
            raise UserError(f"fine-tune checkpoint {checkpoint!r} not found (expected {checkpoint}.index)")
        train.fine_tune_checkpoint = _posix(checkpoint)
        train.fine_tune_checkpoint_type = opts.checkpoint_type or restore_type(checkpoint, config)
    else:
        train.ClearField("fine_tune_checkpoint")
        train.ClearField("fine_tune_checkpoint_type")
        from_scratch_batch_norm(config, spec)
    if opts.augment is not None:
        del train.data_augmentation_options[:]
        valid = protos.PreprocessingStep.DESCRIPTOR.fields_by_name
        for name in opts.augment:
            if name not in valid:
                raise UserError(f"unknown augmentation {name!r}" + did_you_mean(name, valid))
            getattr(train.data_augmentation_options.add(), name).SetInParent()
    if opts.augment_preset is not None:
        if opts.augment is not None:
            raise UserError("--augment and --augment-preset both replace the augmentation; give one "
                            "(and adjust a preset's step with --set train_config.data_augmentation_options[I]...)")
        apply_preset(train, opts.augment_preset)

    for reader, splits in ((config.train_input_reader, train_splits), (config.eval_input_reader[0], [eval_split])):
        reader.label_map_path = _posix(label_map_path)
        del reader.tf_record_input_reader.input_path[:]
        reader.tf_record_input_reader.input_path.extend(
            record_pattern(data_dir, split, tiles=reader is config.train_input_reader) for split in splits)
    check_tiles(config, spec, data_dir, train_splits, opts)
    from . import balance
    if opts.positive_fraction is not None:
        balance.apply_positive_fraction(config, data_dir, train_splits, opts.positive_fraction)
    if opts.hard_negatives:
        balance.apply_hard_negatives(config, model)
    if opts.fit_anchors:
        from ..data.dataset import Dataset
        from .anchors import fit
        fitted = fit(config, Dataset(data_dir), train_splits)
        if anchor_report is not None:
            anchor_report.append(fitted)

    for key, value in (opts.overrides or {}).items():
        if not key.startswith("train_config.optimizer"):
            set_override(config, key, value)
    if not opts.fit_anchors:
        check_anchor_reach(config, data_dir, train_splits)
    return config




def data_inputs(config_path: str) -> Dict[str, str]:
    """{what: folder} of the data a pipeline config reads (its label map's and TFRecords'
    folders), for `fence.check_outputs`; {} when the file is missing (reported later)."""
    from ..odapi import protos
    if not os.path.isfile(config_path):
        return {}
    config = protos.read_pipeline_config(config_path)
    found = {}
    readers = [("train_input_reader", config.train_input_reader)] + [
        (f"eval_input_reader[{i}]", r) for i, r in enumerate(config.eval_input_reader)]
    for name, reader in readers:
        if reader.label_map_path:
            found[f"{config_path}: {name}.label_map_path"] = os.path.dirname(reader.label_map_path)
        for k, path in enumerate(reader.tf_record_input_reader.input_path):
            found[f"{config_path}: {name} input_path[{k}]"] = os.path.dirname(path)
    return found


def check_config_out(out: str, option: str = "--out") -> None:
    """Refuse to write a config over an existing folder, or over an existing file that is not a
    pipeline config (a config, whoever wrote it, may be replaced); the file is left as it is."""
    from ..core.fence import need_file, need_ours
    from ..odapi import protos

    def is_config(path: str) -> bool:
        try:
            protos.read_pipeline_config(path)
            return True
        except Exception:  # a parse error (UserError) or unreadable bytes: not a config
            return False
    need_file(option, out)
    need_ours(option, out, "a pipeline config", is_config)


def write_config(config, out: str, option: str = "--out") -> None:
    """Write `config` to `out` whole (temp file, then rename), after `check_config_out`."""
    from ..odapi import protos
    check_config_out(out, option)
    atomic.write_file(out, protos.to_text(config))


def render_config(model: str, dataset, out: str, options: Optional[RenderOptions] = None) -> str:
    """`medtfod config` as a function: render `model`'s template for `dataset` (a `Dataset` or its
    folder) with `options` and write it to `out`; returns `out`, the path to give `train`."""
    from ..core.fence import check_outputs
    data_dir = getattr(dataset, "path", dataset)
    check_outputs({"out": out}, {"dataset": data_dir, "checkpoint": options.checkpoint if options else None})
    write_config(render(model, data_dir, options=options), out)
    return out
