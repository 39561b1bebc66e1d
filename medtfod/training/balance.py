"""Positive/negative balance in training: `medtfod config --positive-fraction F` and
`--hard-negatives`, both rendered as the OD API's own config fields.

Most medical images have no finding (one ultrasound set: 269k of 273k frames empty), so a
model trained on the natural mix sees few positives. Two levers:

`--positive-fraction F` (`apply_positive_fraction`): the train input reader samples images
with findings with probability F and images without with 1 - F, through the OD API's
`InputReader.sample_from_datasets_weights` (`dataset_builder.read_dataset`: one dataset per
`input_path` entry, mixed by `tf.data.experimental.sample_from_datasets`). It needs a dataset
converted with `--shard-by finding` (`medtfod.data.shard_sets`), whose report.json names the
positive and negative shards of each split. The eval reader is left as it is: metrics are
measured on the natural mix.

`--hard-negatives` (`apply_hard_negatives`):
  SSD: the OD API's `hard_example_miner` (online hard example mining, Liu et al. 2016) with
    the values of the zoo's ssd_mobilenet_v2_coco config (`SSD_MINER`): per image, after NMS at
    IoU 0.99 on the anchors' losses, the 3000 highest-loss anchors at most, at most 3 negative
    anchors per positive one and at least 3 negatives per image, so an image without findings
    still contributes its 3 hardest false alarms. The OD API refuses a miner with the sigmoid
    focal loss (which already down-weights easy negatives, softly), so the template's focal
    loss is replaced by the zoo's plain `weighted_sigmoid` loss.
  Faster / Mask R-CNN: refused, with the reason: both stages already train on a sampled,
    balanced minibatch (first stage: `first_stage_minibatch_size` anchors per image, at most
    `first_stage_positive_balance_fraction` positive; second stage: `second_stage_batch_size`
    proposals, at most `second_stage_balance_fraction` positive), and in an image without
    findings every sampled anchor and proposal is a negative. Those fields are set with --set.
  RetinaNet: an SSD, so as SSD (its focal loss replaced by `weighted_sigmoid` too).
  CenterNet: refused, with the reason: no anchors to mine; its centre heatmap's penalty-reduced
    focal loss weighs every output position already.
`--positive-fraction` works for every family (it only changes the train input reader).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

from ..core.errors import UserError

# The zoo's ssd_mobilenet_v2_coco hard_example_miner (loss_type CLASSIFICATION).
SSD_MINER = {"num_hard_examples": 3000, "iou_threshold": 0.99, "max_negatives_per_positive": 3,
             "min_negatives_per_image": 3}


def _split_report(data_dir: str, split: str) -> dict:
    path = os.path.join(data_dir, "report.json")
    if not os.path.isfile(path):
        raise UserError(f"--positive-fraction: {data_dir} has no report.json; it is not a `medtfod convert` output "
                        "(convert it with --shard-by finding)")
    with open(path, encoding="utf-8") as f:
        splits = json.load(f).get("splits", {})
    if split not in splits:
        raise UserError(f"--positive-fraction: {data_dir} has no split {split!r}; its splits: {', '.join(splits)}")
    return splits[split]


def finding_shards(data_dir: str, split: str) -> Dict[str, object]:
    """{'positive': glob, 'negative': glob, 'positives': n, 'negatives': n} of `split`, from the
    report.json of a dataset converted with --shard-by finding (globs relative to tfrecords/).

    Raises:
      UserError: the dataset was sharded by split only, or the split has no image with
        findings or none without (there would be nothing to sample from).
    """
    report = _split_report(data_dir, split)
    by_finding = report.get("tfrecords_by_finding")
    if not by_finding:
        raise UserError(f"--positive-fraction needs images with and without findings in separate shards: convert "
                        f"the dataset again with `medtfod convert ... --shard-by finding` ({data_dir}'s split "
                        f"{split!r} is in {report.get('tfrecords', 'shards by split')})")
    negatives = int(report.get("negatives", 0))
    positives = int(report.get("images", 0)) - negatives
    for count, what in ((positives, "with findings"), (negatives, "without findings")):
        if not count:
            raise UserError(f"--positive-fraction: split {split!r} of {data_dir} has no image {what} "
                            f"({positives} with, {negatives} without), so there is nothing to balance; "
                            "drop --positive-fraction")
    return {"positive": by_finding["positive"], "negative": by_finding["negative"],
            "positives": positives, "negatives": negatives}


def apply_positive_fraction(config, data_dir: str, train_splits: Sequence[str], fraction: float) -> None:
    """Make the train input reader sample images with findings with probability `fraction`.

    input_path gets one entry per split and part (positive entries first) and
    sample_from_datasets_weights their weights: `fraction` shared among the splits' positive
    shards in proportion to their positive images, 1 - `fraction` likewise among the negative
    ones (one split: [F, 1 - F]). The eval reader is unchanged.

    Raises:
      UserError: `fraction` not strictly between 0 and 1, or a split `finding_shards` refuses.
    """
    if not 0 < fraction < 1:
        raise UserError(f"--positive-fraction {fraction:g}: must be between 0 and 1, both excluded (the share of "
                        "training images with findings, e.g. 0.5); for all images as they are, leave it out")
    shards = {split: finding_shards(data_dir, split) for split in train_splits}
    folder = os.path.abspath(os.path.join(data_dir, "tfrecords")).replace("\\", "/")
    paths: List[str] = []
    weights: List[float] = []
    for part, share in (("positive", fraction), ("negative", 1 - fraction)):
        total = sum(s[part + "s"] for s in shards.values())
        for s in shards.values():
            paths.append(f"{folder}/{s[part]}")
            weights.append(share * s[part + "s"] / total)
    reader = config.train_input_reader
    del reader.tf_record_input_reader.input_path[:]
    reader.tf_record_input_reader.input_path.extend(paths)
    del reader.sample_from_datasets_weights[:]
    reader.sample_from_datasets_weights.extend(weights)


def apply_hard_negatives(config, model: str) -> None:
    """Add the OD API's hard example miner to an SSD model (see the module docstring).

    Raises:
      UserError: a Faster or Mask R-CNN model (their sampling already balances; the message
        gives the config's values and the fields to change instead), or a CenterNet (no anchors).
    """
    kind = config.model.WhichOneof("model")
    if kind == "faster_rcnn":
        f = config.model.faster_rcnn
        raise UserError(
            f"--hard-negatives is for the SSD family: {model} already trains on balanced samples. Its first stage "
            f"samples {f.first_stage_minibatch_size} anchors per image, at most "
            f"{f.first_stage_positive_balance_fraction:.0%} positive; its second stage "
            f"{f.second_stage_batch_size} proposals per image, at most {f.second_stage_balance_fraction:.0%} "
            "positive; in an image without findings all of them are negatives. Drop --hard-negatives, or change "
            "the balance with --set model.faster_rcnn.second_stage_balance_fraction=... (and "
            "first_stage_positive_balance_fraction, first_stage_minibatch_size, second_stage_batch_size)")
    if kind == "center_net":
        raise UserError(
            f"--hard-negatives is for the SSD family (SSD, RetinaNet): {model} is a CenterNet, which has no anchors "
            "to mine; its centre heatmap's penalty-reduced focal loss already weighs every output position, easy "
            "negatives down, and the OD API has no hard example miner for it. Drop --hard-negatives (use "
            "--positive-fraction to change how many training images have findings)")
    if kind != "ssd":
        raise UserError(f"--hard-negatives: no hard example mining is known for a {kind!r} model ({model})")
    loss = config.model.ssd.loss
    if loss.classification_loss.WhichOneof("classification_loss") == "weighted_sigmoid_focal":
        # The OD API's losses_builder raises for a miner with focal loss.
        loss.classification_loss.weighted_sigmoid.SetInParent()
    miner = loss.hard_example_miner
    miner.Clear()
    for name, value in SSD_MINER.items():
        setattr(miner, name, value)
    miner.loss_type = type(miner).CLASSIFICATION
    miner.SetInParent()


def describe(config) -> Optional[str]:
    """One line on the balance a rendered config trains with, or None when it has neither."""
    parts = []
    reader = config.train_input_reader
    weights = list(reader.sample_from_datasets_weights)
    if weights:
        paths = list(reader.tf_record_input_reader.input_path)
        positive = sum(w for w, p in zip(weights, paths) if ".record-positive-" in p)
        parts.append(f"train input {positive:.0%} images with findings (sample_from_datasets_weights "
                     f"{', '.join(f'{w:.3g}' for w in weights)})")
    if config.model.WhichOneof("model") == "ssd" and config.model.ssd.loss.HasField("hard_example_miner"):
        m = config.model.ssd.loss.hard_example_miner
        parts.append(f"hard example miner: at most {m.max_negatives_per_positive} negatives per positive anchor, "
                     f"at least {m.min_negatives_per_image} per image, {m.num_hard_examples} anchors per image at most "
                     f"({config.model.ssd.loss.classification_loss.WhichOneof('classification_loss')} loss)")
    return "; ".join(parts) or None
