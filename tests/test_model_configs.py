"""Every model family's template: parsing and rendering (no TensorFlow), then building the tiny
variant through the OD API's model builder and running it (marked tf), then a short Mask R-CNN
train + eval (marked slow)."""
import os

import numpy as np
import pytest

from medtfod.cli import main
from medtfod.training.config import MODELS, RenderOptions, render, write_config
from medtfod.core.errors import UserError
from medtfod.training.models import (TINY_FPN_DEPTH, TINY_HEAD_DEPTH, TINY_HEAD_LAYERS, TINY_IMAGE_SIZE,
                                     TINY_MASK_SIZE, TINY_MAX_DETECTIONS, TINY_PROPOSALS, tiny_image_size)
from medtfod.odapi import protos
from medtfod.core.resources import resource_path

MASK_MODELS = sorted(name for name, spec in MODELS.items() if spec.masks)
SIZE = 64
FAMILY_LOSSES = {"ssd": {"Loss/localization_loss", "Loss/classification_loss"},
                 "faster_rcnn": {"Loss/RPNLoss/objectness_loss", "Loss/BoxClassifierLoss/classification_loss"},
                 "center_net": {"Loss/object_center", "Loss/box/scale", "Loss/box/offset"}}


@pytest.fixture
def box_dataset(tiny_dataset):
    return tiny_dataset


@pytest.mark.parametrize("model", sorted(MODELS))
def test_template_parses_and_matches_registry(model):
    spec = MODELS[model]
    config = protos.read_pipeline_config(resource_path("pipeline_configs", spec.template))
    assert config.model.WhichOneof("model") == spec.meta_arch
    resizer = getattr(config.model, spec.meta_arch).image_resizer
    sizes = {"fixed_shape_resizer": lambda r: (r.height, r.width),
             "keep_aspect_ratio_resizer": lambda r: (r.min_dimension, r.max_dimension)}
    kind = resizer.WhichOneof("image_resizer_oneof")
    assert sizes[kind](getattr(resizer, kind)) == (spec.default_image_size,) * 2
    optimizer = config.train_config.optimizer
    kind = optimizer.WhichOneof("optimizer")
    assert kind == ("adam_optimizer" if spec.meta_arch == "center_net" else "momentum_optimizer")
    schedule = getattr(optimizer, kind).learning_rate.cosine_decay_learning_rate
    assert schedule.total_steps == config.train_config.num_steps
    # 'detection' restores a zoo model's backbone (and FPN) for every family; CenterNet's
    # restore_from_objects refuses 'fine_tune' in this OD API
    assert config.train_config.fine_tune_checkpoint_type == "detection"
    assert [s.WhichOneof("preprocessing_step") for s in config.train_config.data_augmentation_options][0] == \
        "random_horizontal_flip"
    if spec.meta_arch == "faster_rcnn":
        frcnn = config.model.faster_rcnn
        predictor = frcnn.second_stage_box_predictor.mask_rcnn_box_predictor
        assert predictor.predict_instance_masks == spec.masks
        assert frcnn.number_of_stages == (3 if spec.masks else 2)
        if spec.masks:
            assert not frcnn.resize_masks  # see STACK.md: a pad ValueError otherwise
            assert "coco_mask_metrics" in config.eval_config.metrics_set
            assert not config.eval_config.include_metrics_per_category  # needs a patched pycocotools


@pytest.mark.parametrize("model", ["faster_rcnn_resnet50_v1_640", *MASK_MODELS])
def test_render_faster_rcnn_family(model, masked_dataset):
    c = render(model, masked_dataset, options=RenderOptions(batch_size=2, steps=300, image_size=256))
    frcnn = c.model.faster_rcnn
    assert frcnn.num_classes == 2 and not c.model.HasField("ssd")
    resizer = frcnn.image_resizer
    if resizer.HasField("keep_aspect_ratio_resizer"):
        keep = resizer.keep_aspect_ratio_resizer
        assert (keep.min_dimension, keep.max_dimension) == (256, 256) and keep.pad_to_max_dimension
    else:
        assert (resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width) == (256, 256)
    assert c.train_config.batch_size == 2 and c.train_config.num_steps == 300
    schedule = c.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert schedule.total_steps == 300 and 1 <= schedule.warmup_steps < 300
    assert not c.train_config.HasField("fine_tune_checkpoint")
    assert c.train_input_reader.tf_record_input_reader.input_path[0].endswith("tfrecords/train.record-?????-of-00001")
    assert c.eval_input_reader[0].tf_record_input_reader.input_path[0].endswith("tfrecords/val.record-?????-of-00001")
    assert c.train_input_reader.label_map_path.endswith("/label_map.pbtxt")
    again = protos.parse_text(protos.to_text(c), protos.TrainEvalPipelineConfig(), "x")
    assert again == c


def test_render_retinanet_and_centernet(masked_dataset):
    """num_classes, the image size and the schedule land in each family's own oneof; from scratch
    RetinaNet gets the SSD's batch-norm decay, CenterNet (no decay field) keeps its config."""
    options = RenderOptions(batch_size=2, steps=300, image_size=256)
    retina = render("retinanet_resnet50_v1_fpn_640", masked_dataset, options=options)
    ssd = retina.model.ssd
    assert ssd.num_classes == 2 and ssd.feature_extractor.type == "ssd_resnet50_v1_fpn_keras"
    assert (ssd.image_resizer.fixed_shape_resizer.height, ssd.image_resizer.fixed_shape_resizer.width) == (256, 256)
    assert ssd.loss.classification_loss.weighted_sigmoid_focal.alpha == pytest.approx(0.25)
    assert ssd.loss.classification_loss.weighted_sigmoid_focal.gamma == pytest.approx(2.0)
    assert ssd.feature_extractor.conv_hyperparams.batch_norm.decay == pytest.approx(0.99)
    predictor = ssd.box_predictor.weight_shared_convolutional_box_predictor
    assert predictor.conv_hyperparams.batch_norm.decay == pytest.approx(0.99)
    assert (predictor.depth, predictor.num_layers_before_predictor) == (256, 4)
    center = render("centernet_resnet50_v1_fpn_512", masked_dataset, options=options)
    net = center.model.center_net
    assert net.num_classes == 2 and net.feature_extractor.type == "resnet_v1_50_fpn" and not center.model.HasField("ssd")
    keep = net.image_resizer.keep_aspect_ratio_resizer
    assert (keep.min_dimension, keep.max_dimension) == (256, 256) and keep.pad_to_max_dimension
    for c in (retina, center):
        assert c.train_config.batch_size == 2 and c.train_config.num_steps == 300
        assert not c.train_config.HasField("fine_tune_checkpoint")
        assert list(c.eval_config.metrics_set) == ["coco_detection_metrics"]
        assert not c.train_input_reader.load_instance_masks
    schedule = center.train_config.optimizer.adam_optimizer.learning_rate.cosine_decay_learning_rate
    assert schedule.total_steps == 300 and 1 <= schedule.warmup_steps < 300
    # CenterNet's augmentation presets replace the template's list as they do for the others
    preset = render("centernet_resnet50_v1_fpn_512", masked_dataset, options=RenderOptions(augment_preset="none"))
    assert len(preset.train_config.data_augmentation_options) == 0


def test_fine_tuning_a_centernet_from_the_zoo_or_from_ours(masked_dataset, tmp_path):
    """A zoo CenterNet checkpoint (90 classes) restores as 'detection' (backbone and upsampling);
    one of ours (same classes) whole ('full')."""
    model = "centernet_resnet50_v1_fpn_512"
    for name, classes, expected in (("zoo", "90", "detection"), ("ours", "2", "full")):
        folder = tmp_path / name
        (folder / "checkpoint").mkdir(parents=True)
        write_config(render(model, masked_dataset, options=RenderOptions(
            overrides={"model.center_net.num_classes": classes})), str(folder / "pipeline.config"))
        (folder / "checkpoint" / "ckpt-0.index").write_bytes(b"")
        c = render(model, masked_dataset, options=RenderOptions(checkpoint=str(folder / "checkpoint" / "ckpt-0")))
        assert c.train_config.fine_tune_checkpoint_type == expected, name


@pytest.mark.parametrize("model", MASK_MODELS)
def test_mask_rcnn_reads_and_evaluates_masks(model, masked_dataset, tmp_path):
    c = render(model, masked_dataset)
    png = protos.TrainEvalPipelineConfig().train_input_reader.DESCRIPTOR.fields_by_name["mask_type"] \
        .enum_type.values_by_name["PNG_MASKS"].number
    for reader in (c.train_input_reader, c.eval_input_reader[0]):
        assert reader.load_instance_masks and reader.mask_type == png
    assert list(c.eval_config.metrics_set) == ["coco_detection_metrics", "coco_mask_metrics"]
    assert c.eval_config.eval_instance_masks
    # written and read back through the CLI's writer
    write_config(c, str(tmp_path / "pipeline.config"))
    assert "PNG_MASKS" in (tmp_path / "pipeline.config").read_text()


@pytest.mark.parametrize("model", MASK_MODELS)
def test_mask_rcnn_on_box_dataset_is_refused(model, box_dataset):
    with pytest.raises(UserError, match=r"Mask R-CNN needs instance masks.*ddti, coco.*siim.*thyroid-csv"
                                        r".*--model faster_rcnn_resnet50_v1_640"):
        render(model, box_dataset)


def test_mask_rcnn_without_report_is_refused(masked_dataset, tmp_path):
    import shutil
    copy = tmp_path / "data"
    shutil.copytree(masked_dataset, copy)
    os.remove(copy / "report.json")
    with pytest.raises(UserError, match="no report.json"):
        render("mask_rcnn_resnet50_v1_640", str(copy))


def test_cli_refuses_mask_rcnn_on_boxes(box_dataset, tmp_path, capsys):
    assert main(["config", "--model", "mask_rcnn_resnet50_v1_640", "--data", box_dataset,
                 "--out", str(tmp_path / "p.config")]) == 1
    assert "Mask R-CNN needs instance masks" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["ssd_mobilenet_v2_fpnlite_320", "faster_rcnn_resnet50_v1_640"])
def test_box_models_leave_masks_off(model, masked_dataset):
    c = render(model, masked_dataset)
    assert not c.train_input_reader.load_instance_masks and not c.eval_input_reader[0].load_instance_masks
    assert list(c.eval_config.metrics_set) == ["coco_detection_metrics"]


def test_tiny_variants(masked_dataset):
    ssd = render("ssd_mobilenet_v2_fpnlite_320", masked_dataset, options=RenderOptions(tiny=True))
    assert ssd.model.ssd.image_resizer.fixed_shape_resizer.height == TINY_IMAGE_SIZE
    for model in ("faster_rcnn_resnet50_v1_640", *MASK_MODELS):
        frcnn = render(model, masked_dataset, options=RenderOptions(tiny=True)).model.faster_rcnn
        assert frcnn.first_stage_max_proposals == TINY_PROPOSALS
        assert frcnn.second_stage_batch_size <= frcnn.first_stage_max_proposals
        assert frcnn.second_stage_post_processing.batch_non_max_suppression.max_total_detections <= TINY_PROPOSALS
        if MODELS[model].masks:
            predictor = frcnn.second_stage_box_predictor.mask_rcnn_box_predictor
            assert (predictor.mask_height, predictor.mask_width) == (TINY_MASK_SIZE, TINY_MASK_SIZE)
    retina = render("retinanet_resnet50_v1_fpn_640", masked_dataset, options=RenderOptions(tiny=True)).model.ssd
    assert retina.image_resizer.fixed_shape_resizer.height == tiny_image_size(MODELS["retinanet_resnet50_v1_fpn_640"])
    assert retina.feature_extractor.fpn.additional_layer_depth == TINY_FPN_DEPTH
    predictor = retina.box_predictor.weight_shared_convolutional_box_predictor
    assert (predictor.depth, predictor.num_layers_before_predictor) == (TINY_HEAD_DEPTH, TINY_HEAD_LAYERS)
    assert retina.post_processing.batch_non_max_suppression.max_total_detections == TINY_MAX_DETECTIONS
    assert (retina.feature_extractor.fpn.min_level, retina.feature_extractor.fpn.max_level) == (3, 7)  # as the zoo's
    net = render("centernet_resnet50_v1_fpn_512", masked_dataset, options=RenderOptions(tiny=True)).model.center_net
    assert net.image_resizer.keep_aspect_ratio_resizer.max_dimension == TINY_IMAGE_SIZE
    assert net.object_center_params.max_box_predictions == TINY_MAX_DETECTIONS
    for head in (net.object_center_params.center_head_params, net.object_detection_task.scale_head_params,
                 net.object_detection_task.offset_head_params):
        assert list(head.num_filters) == [TINY_HEAD_DEPTH] and list(head.kernel_sizes) == [3]
    # an explicit image size wins over the tiny one
    c = render("faster_rcnn_resnet50_v1_640", masked_dataset, options=RenderOptions(tiny=True, image_size=160))
    assert c.model.faster_rcnn.image_resizer.keep_aspect_ratio_resizer.max_dimension == 160


@pytest.mark.tf
@pytest.mark.parametrize("model", sorted(MODELS))
def test_tiny_model_builds_and_runs(model, masked_dataset):
    """Build the tiny variant with the OD API's model builder; one training step's loss with
    groundtruth, then inference (preprocess, predict, postprocess) on a zero image."""
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    from object_detection.builders import model_builder

    config = render(model, masked_dataset, options=RenderOptions(tiny=True))
    masks = MODELS[model].masks
    image = tf.zeros([1, SIZE, SIZE, 3])
    tiny = tiny_image_size(MODELS[model])

    detector = model_builder.build(model_config=config.model, is_training=True)
    images, shapes = detector.preprocess(image)
    groundtruth = {"groundtruth_boxes_list": [tf.constant([[0.2, 0.2, 0.6, 0.7]])],
                   "groundtruth_classes_list": [tf.one_hot([0], 2)],
                   "groundtruth_weights_list": [tf.ones([1])]}  # CenterNet's centre loss needs them
    if masks:
        bitmap = np.zeros((1, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), np.float32)
        bitmap[0, 26:77, 26:90] = 1.0
        groundtruth["groundtruth_masks_list"] = [tf.constant(bitmap)]
    detector.provide_groundtruth(**groundtruth)
    losses = detector.loss(detector.predict(images, shapes), shapes)
    assert all(np.isfinite(v.numpy()) for v in losses.values())
    assert FAMILY_LOSSES[MODELS[model].meta_arch] <= set(losses)
    if masks:
        assert "Loss/BoxClassifierLoss/mask_loss" in losses

    detector = model_builder.build(model_config=config.model, is_training=False)
    images, shapes = detector.preprocess(image)
    assert images.shape[1:3] == (tiny, tiny)
    detections = detector.postprocess(detector.predict(images, shapes), shapes)
    expected = {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}
    assert expected <= set(detections)
    assert ("detection_masks" in detections) == masks
    if masks:
        num = detections["detection_boxes"].shape[1]
        assert detections["detection_masks"].shape[:2] == (1, num)


def test_fine_tuning_from_our_own_model_restores_it_whole(box_dataset, tmp_path):
    """A checkpoint beside (or one folder below) a pipeline.config of the same architecture
    and classes is a model of ours (a run's best/, an export's checkpoint/): restored whole
    ('full'). A zoo checkpoint (90 COCO classes) or an unknown one: 'detection' (heads fresh)."""
    from medtfod.training.config import RenderOptions, render, write_config
    model = "ssd_mobilenet_v2_fpnlite_320"
    ours = render(model, str(box_dataset))
    export = tmp_path / "export"
    (export / "checkpoint").mkdir(parents=True)
    write_config(ours, str(export / "pipeline.config"))
    (export / "checkpoint" / "ckpt-0.index").write_bytes(b"")
    again = render(model, str(box_dataset), options=RenderOptions(checkpoint=str(export / "checkpoint" / "ckpt-0")))
    assert again.train_config.fine_tune_checkpoint_type == "full"
    zoo = tmp_path / "zoo"
    (zoo / "checkpoint").mkdir(parents=True)
    coco = render(model, str(box_dataset), options=RenderOptions(overrides={"model.ssd.num_classes": "90"}))
    write_config(coco, str(zoo / "pipeline.config"))
    (zoo / "checkpoint" / "ckpt-0.index").write_bytes(b"")
    assert render(model, str(box_dataset), options=RenderOptions(checkpoint=str(zoo / "checkpoint" / "ckpt-0"))) \
        .train_config.fine_tune_checkpoint_type == "detection"
    (tmp_path / "bare.index").write_bytes(b"")
    assert render(model, str(box_dataset), options=RenderOptions(checkpoint=str(tmp_path / "bare"))).train_config \
        .fine_tune_checkpoint_type == "detection"
    assert render(model, str(box_dataset),
                  options=RenderOptions(checkpoint=str(tmp_path / "bare"), checkpoint_type="full")) \
        .train_config.fine_tune_checkpoint_type == "full"
