"""The model families `medtfod config` renders: template, where its fields live, whether it
needs instance masks, and the proto edits that only depend on the family (image size, mask
inputs, the tiny variant for CPU tests).

Everything here edits a parsed `TrainEvalPipelineConfig`; nothing imports TensorFlow.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Optional

from ..core.errors import UserError, did_you_mean


@dataclass(frozen=True)
class ModelSpec:
    """A model family medtfod can render.

    Attributes:
      template: file name under `pipeline_configs/`.
      meta_arch: the `model` oneof field holding num_classes etc.: 'ssd' (SSD, RetinaNet),
        'faster_rcnn' (Faster and Mask R-CNN) or 'center_net' (CenterNet).
      default_image_size: the template's input size in pixels (square).
      masks: True for Mask R-CNN, which trains on instance masks and predicts them.
      tiny_image_size: the tiny variant's input size, when not TINY_IMAGE_SIZE.
    """

    template: str
    meta_arch: str
    default_image_size: int
    masks: bool = False
    tiny_image_size: Optional[int] = None


# RetinaNet's tiny variant is 160 px, not 128: the OD API's ResNet FPN feature extractor for SSD
# refuses inputs under 129 px (shape_utils.check_min_image_dim).
TINY_RETINANET_IMAGE_SIZE = 160


MODELS: Dict[str, ModelSpec] = {
    "ssd_mobilenet_v2_fpnlite_320": ModelSpec("ssd_mobilenet_v2_fpnlite_320.config", "ssd", 320),
    "faster_rcnn_resnet50_v1_640": ModelSpec("faster_rcnn_resnet50_v1_640.config", "faster_rcnn", 640),
    "mask_rcnn_resnet50_v1_640": ModelSpec("mask_rcnn_resnet50_v1_640.config", "faster_rcnn", 640, masks=True),
    "mask_rcnn_inception_resnet_v2_1024": ModelSpec("mask_rcnn_inception_resnet_v2_1024.config", "faster_rcnn",
                                                    1024, masks=True),
    "retinanet_resnet50_v1_fpn_640": ModelSpec("retinanet_resnet50_v1_fpn_640.config", "ssd", 640,
                                               tiny_image_size=TINY_RETINANET_IMAGE_SIZE),
    "centernet_resnet50_v1_fpn_512": ModelSpec("centernet_resnet50_v1_fpn_512.config", "center_net", 512),
}

# The box-only model suggested when a Mask R-CNN is asked for on a dataset without masks.
BOX_ALTERNATIVE = "faster_rcnn_resnet50_v1_640"
MASK_SOURCES = "ddti, coco (with segmentations), siim, or thyroid-csv with outline points"


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; available: {', '.join(MODELS)}{did_you_mean(name, MODELS)}")
    return MODELS[name]


def set_image_size(arch, size: int) -> None:
    """Set the square input size of `arch` (a `model.ssd`, `model.faster_rcnn` or `model.center_net`
    message).

    fixed_shape_resizer: height = width = size. keep_aspect_ratio_resizer: min = max
    dimension = size, so the longer side becomes `size` (and, with pad_to_max_dimension,
    the image is padded to size x size).
    """
    resizer = arch.image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        resizer.fixed_shape_resizer.height = size
        resizer.fixed_shape_resizer.width = size
    elif kind == "keep_aspect_ratio_resizer":
        resizer.keep_aspect_ratio_resizer.min_dimension = size
        resizer.keep_aspect_ratio_resizer.max_dimension = size
    else:
        raise UserError(f"cannot set the image size of an {kind or 'unset'} image_resizer; "
                        "set its fields with --set model.<arch>.image_resizer....")


def mask_counts(data_dir: str) -> Optional[Dict[str, int]]:
    """Instance masks per split, from the `report.json` that `medtfod convert` writes; None
    when the folder has no report."""
    path = os.path.join(data_dir, "report.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        splits = json.load(f).get("splits", {})
    return {name: int(s.get("masks", 0)) for name, s in splits.items()}


def enable_masks(config, model: str, data_dir: str, splits) -> None:
    """Check that `splits` of the dataset have instance masks, then make both input readers
    decode them (PNG masks, as `medtfod convert` writes) and evaluate them (coco_mask_metrics).

    Raises:
      UserError: the dataset has no report.json or a split without masks.
    """
    counts = mask_counts(data_dir)
    advice = (f"Mask R-CNN needs instance masks, which `medtfod convert` writes from {MASK_SOURCES}; "
              f"for a box-only dataset use --model {BOX_ALTERNATIVE}")
    if counts is None:
        raise UserError(f"{model}: {data_dir} has no report.json, so whether it has instance masks "
                        f"is unknown; re-run `medtfod convert`. {advice}")
    for split in splits:
        if not counts.get(split):
            raise UserError(f"{model}: split {split!r} of {data_dir} has no instance masks "
                            f"(report.json counts {counts.get(split, 0)}). {advice}")
    png_masks = config.train_input_reader.DESCRIPTOR.fields_by_name["mask_type"].enum_type.values_by_name["PNG_MASKS"]
    for reader in (config.train_input_reader, config.eval_input_reader[0]):
        reader.load_instance_masks = True
        reader.mask_type = png_masks.number
    if "coco_mask_metrics" not in config.eval_config.metrics_set:
        config.eval_config.metrics_set.append("coco_mask_metrics")
    config.eval_config.eval_instance_masks = True


# From scratch, SSD's batch-norm moving averages use decay 0.99 instead of the zoo's 0.997. The zoo's
# value is meant for fine-tuning runs of 50k+ steps that start from trained averages: from scratch,
# after 600 steps its averages still carry ~17% of their initial values and the demo detected
# nothing (mAP 0.0); on real DDTI at 1,500 steps, top-1 mean IoU 0.212 with 0.997 against 0.605
# with 0.99 (benchmarks/real_ddti.py, README "Real data"). RetinaNet is an SSD and gets the same.
# R-CNN templates freeze nothing here and keep their own batch norm. CenterNet's config has no
# batch-norm field: its ResNet50 (tf.keras.applications) and FPN use Keras' default momentum,
# 0.99 already.
FROM_SCRATCH_BN_DECAY = 0.99


def from_scratch_batch_norm(config, spec: ModelSpec) -> None:
    """Set every SSD batch-norm decay (feature extractor, box predictor; RetinaNet too) to
    FROM_SCRATCH_BN_DECAY. Other families are left as they are."""
    if spec.meta_arch != "ssd":
        return
    ssd = config.model.ssd
    hyperparams = [ssd.feature_extractor.conv_hyperparams]
    predictor = ssd.box_predictor
    kind = predictor.WhichOneof("box_predictor_oneof")
    if kind:
        hyperparams.append(getattr(predictor, kind).conv_hyperparams)
    for h in hyperparams:
        if h.HasField("batch_norm"):
            h.batch_norm.decay = FROM_SCRATCH_BN_DECAY


# Tiny variants: the same architectures, small enough to build, train and evaluate in
# seconds on a CPU (tests, smoke runs). Not for real training.
TINY_IMAGE_SIZE = 128          # 128x128 inputs (SSD 320, Faster R-CNN 640, IRv2 1024, CenterNet 512;
                               # RetinaNet 640 -> TINY_RETINANET_IMAGE_SIZE, see above)
TINY_BASE_ANCHOR = 64          # Faster R-CNN anchors 16-128 px instead of 64-512 px (zoo base 256)
TINY_PROPOSALS = 32            # first_stage_max_proposals (zoo 300); also the most detections
TINY_SECOND_STAGE_BATCH = 16   # proposals per image the box classifier trains on (default 64)
TINY_MASK_SIZE = 15            # mask_height/width (zoo 33)
# RetinaNet and CenterNet keep their whole ResNet50 backbone (the OD API has no thinner one for
# them) and shrink what sits on top of it:
TINY_FPN_DEPTH = 64            # RetinaNet's FPN width (additional_layer_depth; zoo 256)
TINY_HEAD_DEPTH = 64           # RetinaNet's box predictor width (zoo 256); CenterNet's head filters (256)
TINY_HEAD_LAYERS = 2           # RetinaNet's convolutions before each prediction (zoo 4)
TINY_MAX_DETECTIONS = 32       # RetinaNet's NMS output, CenterNet's max_box_predictions (zoo 100)


RETINANET_EXTRACTOR = "ssd_resnet50_v1_fpn_keras"


def tiny_image_size(spec: ModelSpec) -> int:
    """The tiny variant's square input size (TINY_IMAGE_SIZE unless the spec says otherwise)."""
    return spec.tiny_image_size or TINY_IMAGE_SIZE


def apply_tiny(config, spec: ModelSpec) -> None:
    """Shrink the model of `config` to its tiny variant (see the TINY_* constants)."""
    arch = getattr(config.model, spec.meta_arch)
    set_image_size(arch, tiny_image_size(spec))
    if spec.meta_arch == "center_net":
        _tiny_center_net(arch)
        return
    if spec.meta_arch == "ssd":
        if arch.feature_extractor.type == RETINANET_EXTRACTOR:
            _tiny_retinanet(arch)
        return
    # Anchor base size scaled with the image so anchors still fit objects of a 128-px image.
    grid = arch.first_stage_anchor_generator.grid_anchor_generator
    grid.height = grid.width = TINY_BASE_ANCHOR
    arch.first_stage_max_proposals = TINY_PROPOSALS
    # Must not exceed first_stage_max_proposals (the OD API checks).
    arch.second_stage_batch_size = TINY_SECOND_STAGE_BATCH
    # No more detections than proposals: keeps post-processing (and mask) tensors small.
    nms = arch.second_stage_post_processing.batch_non_max_suppression
    nms.max_detections_per_class = min(nms.max_detections_per_class, TINY_PROPOSALS)
    nms.max_total_detections = min(nms.max_total_detections, TINY_PROPOSALS)
    if spec.masks:
        predictor = arch.second_stage_box_predictor.mask_rcnn_box_predictor
        predictor.mask_height = predictor.mask_width = TINY_MASK_SIZE


def _tiny_retinanet(ssd) -> None:
    """RetinaNet's FPN and shared box predictor narrowed and made shallower; levels, anchors and
    focal loss as in the full model."""
    ssd.feature_extractor.fpn.additional_layer_depth = TINY_FPN_DEPTH
    predictor = ssd.box_predictor.weight_shared_convolutional_box_predictor
    predictor.depth = TINY_HEAD_DEPTH
    predictor.num_layers_before_predictor = TINY_HEAD_LAYERS
    nms = ssd.post_processing.batch_non_max_suppression
    nms.max_detections_per_class = min(nms.max_detections_per_class, TINY_MAX_DETECTIONS)
    nms.max_total_detections = min(nms.max_total_detections, TINY_MAX_DETECTIONS)


def _tiny_center_net(center_net) -> None:
    """CenterNet's three heads (centre heatmap, box size, offset) with TINY_HEAD_DEPTH filters, and
    at most TINY_MAX_DETECTIONS peaks kept per image."""
    center = center_net.object_center_params
    center.max_box_predictions = min(center.max_box_predictions, TINY_MAX_DETECTIONS)
    task = center_net.object_detection_task
    for head in (center.center_head_params, task.scale_head_params, task.offset_head_params):
        del head.num_filters[:]
        head.num_filters.append(TINY_HEAD_DEPTH)
        del head.kernel_sizes[:]
        head.kernel_sizes.append(3)
