"""Config rendering edits the OD API's proto (no TensorFlow needed)."""
import pytest

from medtfod.cli import main
from medtfod.training.config import RenderOptions, render
from medtfod.core.errors import UserError
from medtfod.odapi import protos


@pytest.fixture
def dataset(tiny_dataset):
    return tiny_dataset


def test_render_sets_dataset_fields(dataset):
    c = render("ssd_mobilenet_v2_fpnlite_320", dataset, options=RenderOptions(
        batch_size=4, steps=500, image_size=128, learning_rate=0.02,
        augment=["random_horizontal_flip", "random_adjust_contrast"]))
    assert c.model.ssd.num_classes == 2
    assert c.model.ssd.image_resizer.fixed_shape_resizer.height == 128
    assert c.train_config.batch_size == 4 and c.train_config.num_steps == 500
    sched = c.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert sched.total_steps == 500 and sched.warmup_steps == 10  # 1000/50000 of the steps
    assert sched.learning_rate_base == pytest.approx(0.02)
    assert sched.warmup_learning_rate == pytest.approx(0.02 * 0.026666 / 0.08)
    assert not c.train_config.HasField("fine_tune_checkpoint")
    paths = [c.train_input_reader.tf_record_input_reader.input_path[0],
             c.eval_input_reader[0].tf_record_input_reader.input_path[0], c.train_input_reader.label_map_path]
    assert all("\\" not in p for p in paths)
    assert paths[0].endswith("tfrecords/train.record-?????-of-00001")
    assert paths[1].endswith("tfrecords/val.record-?????-of-00001")
    steps = [s.WhichOneof("preprocessing_step") for s in c.train_config.data_augmentation_options]
    assert steps == ["random_horizontal_flip", "random_adjust_contrast"]
    # what is written parses back as the same proto
    again = protos.parse_text(protos.to_text(c), protos.TrainEvalPipelineConfig(), "x")
    assert again == c


@pytest.mark.parametrize("model,zoo_batch,zoo_rate", [("ssd_mobilenet_v2_fpnlite_320", 128, 0.08),
                                                      ("faster_rcnn_resnet50_v1_640", 64, 0.04)])
def test_batch_size_scales_the_zoo_learning_rate(dataset, model, zoo_batch, zoo_rate):
    sched = lambda c: c.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    zoo = sched(render(model, dataset))
    assert (zoo.learning_rate_base, render(model, dataset).train_config.batch_size) == \
        (pytest.approx(zoo_rate), zoo_batch)
    small = sched(render(model, dataset, options=RenderOptions(batch_size=4)))
    assert small.learning_rate_base == pytest.approx(zoo_rate * 4 / zoo_batch)
    assert small.warmup_learning_rate / small.learning_rate_base == \
        pytest.approx(zoo.warmup_learning_rate / zoo.learning_rate_base)
    # a rate given by the user is kept as given
    assert sched(render(model, dataset, options=RenderOptions(batch_size=4, learning_rate=0.01))).learning_rate_base \
        == pytest.approx(0.01)


def test_overrides(dataset):
    c = render("ssd_mobilenet_v2_fpnlite_320", dataset, options=RenderOptions(overrides={
        "train_config.batch_size": "3", "model.ssd.feature_extractor.conv_hyperparams.batch_norm.decay": "0.9",
        "train_config.data_augmentation_options[0].random_horizontal_flip.probability": "0.25",
        "model.ssd.anchor_generator.multiscale_anchor_generator.aspect_ratios": "1.0,2.0",
        "model.ssd.post_processing.score_converter": "SOFTMAX"}))
    assert c.train_config.batch_size == 3
    assert c.model.ssd.feature_extractor.conv_hyperparams.batch_norm.decay == pytest.approx(0.9)
    assert c.train_config.data_augmentation_options[0].random_horizontal_flip.probability == 0.25
    assert list(c.model.ssd.anchor_generator.multiscale_anchor_generator.aspect_ratios) == [1.0, 2.0]


@pytest.mark.parametrize("key, value, message", [
    ("train_config.batch_sise", "4", "did you mean 'batch_size'"),
    ("train_config.batch_size", "four", "expected a number"),
    ("model.ssd.post_processing.score_converter", "SOFT", "one of IDENTITY"),
    ("train_config.batch_size.x", "1", "is a value, not a message"),
])
def test_bad_override(dataset, key, value, message):
    with pytest.raises(UserError, match=message):
        render("ssd_mobilenet_v2_fpnlite_320", dataset, options=RenderOptions(overrides={key: value}))


def test_unknown_model_and_missing_checkpoint(dataset, tmp_path):
    with pytest.raises(UserError, match="did you mean 'ssd_mobilenet_v2_fpnlite_320'"):
        render("ssd_mobilenet_v2_fpnlite", dataset)
    with pytest.raises(UserError, match="fine-tune checkpoint"):
        render("ssd_mobilenet_v2_fpnlite_320", dataset, options=RenderOptions(checkpoint=str(tmp_path / "ckpt-0")))


def test_cli_config(dataset, tmp_path, capsys):
    out = tmp_path / "pipeline.config"
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", dataset, "--out", str(out),
                 "--steps", "100", "--set", "train_config.batch_size=2"]) == 0
    c = protos.read_pipeline_config(str(out))
    assert c.train_config.batch_size == 2 and c.train_config.num_steps == 100
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", dataset, "--out", str(out),
                 "--set", "nonsense"]) == 1
    assert "expected FIELD.PATH=VALUE" in capsys.readouterr().err


ADAM_EXPONENTIAL = ("adam_optimizer { learning_rate { exponential_decay_learning_rate { initial_learning_rate: 0.001 "
                    "decay_steps: 1000 decay_factor: 0.9 burnin_learning_rate: 0.0001 burnin_steps: 100 "
                    "min_learning_rate: 0.00001 } } epsilon: 1e-7 }")
MANUAL = ("momentum_optimizer { learning_rate { manual_step_learning_rate { initial_learning_rate: 0.01 "
          "schedule { step: 40000 learning_rate: 0.001 } schedule { step: 45000 learning_rate: 0.0001 } } } "
          "momentum_optimizer_value: 0.9 }")


def test_any_optimizer_and_schedule_is_rescaled_in_its_own_kind(dataset):
    """Adam + exponential decay and momentum + manual steps keep their kind; steps and rates
    follow --steps and --learning-rate (the SSD template's num_steps is 50000)."""
    config = render("ssd_mobilenet_v2_fpnlite_320", dataset, options=RenderOptions(
        steps=5000, learning_rate=0.002, overrides={"train_config.optimizer": ADAM_EXPONENTIAL}))
    optimizer = config.train_config.optimizer
    assert optimizer.WhichOneof("optimizer") == "adam_optimizer"
    s = optimizer.adam_optimizer.learning_rate.exponential_decay_learning_rate
    assert (s.decay_steps, s.burnin_steps, config.train_config.num_steps) == (100, 10, 5000)
    assert (s.initial_learning_rate, s.burnin_learning_rate, s.min_learning_rate) == pytest.approx((0.002, 2e-4, 2e-5))
    config = render("ssd_mobilenet_v2_fpnlite_320", dataset, options=RenderOptions(
        steps=500, learning_rate=0.02, overrides={"train_config.optimizer": MANUAL}))
    s = config.train_config.optimizer.momentum_optimizer.learning_rate.manual_step_learning_rate
    assert [p.step for p in s.schedule] == [400, 450]
    assert [p.learning_rate for p in s.schedule] == pytest.approx([0.002, 0.0002])
    assert s.initial_learning_rate == pytest.approx(0.02)


def test_a_schedule_that_cannot_take_the_request_is_an_error(dataset):
    constant = "momentum_optimizer { learning_rate { constant_learning_rate { learning_rate: 0.01 } } }"
    with pytest.raises(UserError, match="constant_learning_rate has no warm-up"):
        render("ssd_mobilenet_v2_fpnlite_320", dataset,
               options=RenderOptions(warmup_steps=10, overrides={"train_config.optimizer": constant}))
    config = render("ssd_mobilenet_v2_fpnlite_320", dataset, options=RenderOptions(
        steps=10, learning_rate=0.5, overrides={"train_config.optimizer": constant}))
    rate = config.train_config.optimizer.momentum_optimizer.learning_rate
    assert rate.WhichOneof("learning_rate") == "constant_learning_rate" and rate.constant_learning_rate.learning_rate == 0.5
    with pytest.raises(UserError, match="manual_step_learning_rate has no warm-up length"):
        render("ssd_mobilenet_v2_fpnlite_320", dataset,
               options=RenderOptions(warmup_steps=10, overrides={"train_config.optimizer": MANUAL}))
    with pytest.raises(UserError, match="sets no optimizer"):
        render("ssd_mobilenet_v2_fpnlite_320", dataset,
               options=RenderOptions(steps=10, overrides={"train_config.optimizer": "use_moving_average: false"}))


def _bn_decays(c):
    ssd = c.model.ssd
    return (ssd.feature_extractor.conv_hyperparams.batch_norm.decay,
            ssd.box_predictor.weight_shared_convolutional_box_predictor.conv_hyperparams.batch_norm.decay)


def test_from_scratch_ssd_gets_batch_norm_decay_099_and_fine_tuning_keeps_the_zoos(dataset, tmp_path):
    assert _bn_decays(render("ssd_mobilenet_v2_fpnlite_320", dataset)) == pytest.approx((0.99, 0.99))
    (tmp_path / "ckpt-0.index").write_bytes(b"")
    tuned = render("ssd_mobilenet_v2_fpnlite_320", dataset,
                   options=RenderOptions(checkpoint=str(tmp_path / "ckpt-0"), checkpoint_type="detection"))
    assert _bn_decays(tuned) == pytest.approx((0.997, 0.997))
    key = "model.ssd.feature_extractor.conv_hyperparams.batch_norm.decay"
    assert _bn_decays(render("ssd_mobilenet_v2_fpnlite_320", dataset,
                             options=RenderOptions(overrides={key: "0.9"})))[0] == pytest.approx(0.9)


def test_recipe_fills_only_what_is_unset(dataset, tmp_path, capsys):
    c = render("ssd_mobilenet_v2_fpnlite_320", dataset, options=RenderOptions(recipe="cpu-scratch"))
    sched = c.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert (c.train_config.batch_size, c.train_config.num_steps) == (8, 1500)
    assert c.model.ssd.image_resizer.fixed_shape_resizer.height == 256
    assert (sched.learning_rate_base, sched.warmup_steps) == (pytest.approx(0.04), 375)
    c = render("ssd_mobilenet_v2_fpnlite_320", dataset, options=RenderOptions(recipe="cpu-scratch", steps=3000,
                                                                               batch_size=4))
    sched = c.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert (c.train_config.batch_size, c.train_config.num_steps, sched.warmup_steps) == (4, 3000, 750)
    assert sched.learning_rate_base == pytest.approx(0.04)
    out = str(tmp_path / "p.config")
    assert main(["config", "--model", "faster_rcnn_resnet50_v1_640", "--data", dataset, "--out", out,
                 "--recipe", "cpu-scratch"]) == 1
    assert "measured for ssd_mobilenet_v2_fpnlite_320, not faster_rcnn_resnet50_v1_640" in capsys.readouterr().err
    (tmp_path / "ckpt-0.index").write_bytes(b"")
    with pytest.raises(UserError, match="trains from scratch; leave out --checkpoint"):
        render("ssd_mobilenet_v2_fpnlite_320", dataset,
               options=RenderOptions(recipe="cpu-scratch", checkpoint=str(tmp_path / "ckpt-0")))
    assert not (tmp_path / "p.config").exists()
