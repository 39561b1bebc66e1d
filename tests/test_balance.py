"""Positive/negative balance (issue 21): `convert --shard-by finding`, `config --positive-fraction`
and `--hard-negatives`, checked through the OD API's own input pipeline and model builder."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from medtfod.cli import main
from medtfod.core.errors import UserError
from medtfod.data.dataset import Dataset
from medtfod.data.readers.tfrecord import bytes_feature, read_record
from medtfod.training.balance import SSD_MINER
from medtfod.training.config import RenderOptions, render

SSD, FRCNN = "ssd_mobilenet_v2_fpnlite_320", "faster_rcnn_resnet50_v1_640"
COLUMNS = "filename=image,label=label,xmin=xmin,ymin=ymin,xmax=xmax,ymax=ymax"


def make_table(root, n, positive_every, size=24):
    """`n` noise PNGs; every `positive_every`-th one has a box, the others are listed without findings."""
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,label,xmin,ymin,xmax,ymax"]
    for i in range(n):
        Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(images / f"im{i:03d}.png")
        rows.append(f"im{i:03d}.png,lesion,3,4,15,18" if i % positive_every == 0 else f"im{i:03d}.png,,,,,")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return str(root / "boxes.csv"), str(images)


def convert(root, n, positive_every, *extra):
    table, images = make_table(root, n, positive_every)
    out = root / "data"
    assert main(["convert", "csv", "--table", table, "--columns", COLUMNS, "--images", images, "--out", str(out),
                 "-q", *extra]) == 0
    return str(out)


@pytest.fixture(scope="module")
def by_finding(tmp_path_factory):
    """100 images, 10% with a box, split 80/20 and sharded by finding (8 images a shard)."""
    return convert(tmp_path_factory.mktemp("balance"), 100, 10, "--shard-by", "finding", "--shard-size", "8")


def test_shard_by_finding_writes_two_sets_and_the_manifest_points_into_them(by_finding):
    names = sorted(os.listdir(os.path.join(by_finding, "tfrecords")))
    report = json.load(open(os.path.join(by_finding, "report.json")))["splits"]
    train = report["train"]
    assert train["tfrecords"] == "train.record-*"
    positives = train["images"] - train["negatives"]
    shards = -(-positives // 8), -(-train["negatives"] // 8)
    assert train["tfrecords_by_finding"] == {"positive": f"train.record-positive-?????-of-{shards[0]:05d}",
                                             "negative": f"train.record-negative-?????-of-{shards[1]:05d}"}
    assert sum(n.startswith("train.record-positive-") for n in names) == shards[0]
    assert sum(n.startswith("train.record-negative-") for n in names) == shards[1]
    assert {n.split(".record")[0] for n in names} == {"train", "val"}
    data = Dataset(by_finding)
    assert len(data.tfrecords("train")) == sum(shards)  # `<split>.record-*` still finds the whole split
    for entry in data.images():
        assert ("-positive-" in entry.tfrecord) == (entry.boxes > 0), entry
        record = read_record(os.path.join(by_finding, entry.tfrecord), entry.offset)
        assert bytes_feature(record, "image/filename") == [entry.name.encode()]
        assert len(bytes_feature(record, "image/object/class/text")) == entry.boxes


def test_positive_fraction_renders_weighted_train_input_only(by_finding):
    c = render(SSD, by_finding, options=RenderOptions(positive_fraction=0.3))
    reader = c.train_input_reader
    paths = list(reader.tf_record_input_reader.input_path)
    assert [os.path.basename(p).split("-?????")[0] for p in paths] == ["train.record-positive", "train.record-negative"]
    assert list(reader.sample_from_datasets_weights) == pytest.approx([0.3, 0.7])
    ev = c.eval_input_reader[0]
    assert list(ev.tf_record_input_reader.input_path) == [os.path.join(by_finding, "tfrecords", "val.record-*")]
    assert not ev.sample_from_datasets_weights


def test_positive_fraction_over_several_train_splits_keeps_f(tmp_path):
    """`cv` trains on several folds: each fold's positive shards share F by their positive images."""
    data = convert(tmp_path, 40, 4, "--shard-by", "finding", "--folds", "2")
    c = render(SSD, data, options=RenderOptions(positive_fraction=0.6), train_split=["fold1", "fold2"],
               eval_split="fold2")
    paths = list(c.train_input_reader.tf_record_input_reader.input_path)
    weights = list(c.train_input_reader.sample_from_datasets_weights)
    assert len(paths) == len(weights) == 4
    assert sum(w for w, p in zip(weights, paths) if "-positive-" in p) == pytest.approx(0.6)
    assert sum(weights) == pytest.approx(1.0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_positive_fraction_outside_the_open_interval_is_refused(by_finding, fraction):
    with pytest.raises(UserError, match="between 0 and 1, both excluded"):
        render(SSD, by_finding, options=RenderOptions(positive_fraction=fraction))


def test_positive_fraction_needs_shards_by_finding(tiny_dataset):
    with pytest.raises(UserError, match=r"--shard-by finding"):
        render(SSD, tiny_dataset, options=RenderOptions(positive_fraction=0.5))


def test_positive_fraction_refuses_a_split_without_negatives(tmp_path):
    data = convert(tmp_path, 10, 1, "--shard-by", "finding")  # every image has a box
    with pytest.raises(UserError, match=r"split 'train' .* has no image without findings"):
        render(SSD, data, options=RenderOptions(positive_fraction=0.5))


def test_hard_negatives_ssd_renders_the_zoo_miner_and_a_sigmoid_loss(by_finding):
    loss = render(SSD, by_finding).model.ssd.loss
    assert loss.classification_loss.WhichOneof("classification_loss") == "weighted_sigmoid_focal"
    assert not loss.HasField("hard_example_miner")
    loss = render(SSD, by_finding, options=RenderOptions(hard_negatives=True)).model.ssd.loss
    assert loss.classification_loss.WhichOneof("classification_loss") == "weighted_sigmoid"
    miner = loss.hard_example_miner
    assert {k: getattr(miner, k) for k in SSD_MINER} == pytest.approx(SSD_MINER)
    assert miner.loss_type == type(miner).CLASSIFICATION


@pytest.mark.parametrize("model", [FRCNN, "mask_rcnn_resnet50_v1_640"])
def test_hard_negatives_rcnn_is_refused_with_its_own_sampling(by_finding, masked_dataset, model):
    data = masked_dataset if "mask" in model else by_finding
    with pytest.raises(UserError, match=r"SSD family.*256 anchors per image, at most 50% positive.*"
                                        r"64 proposals per image, at most 25% positive.*second_stage_balance_fraction"):
        render(model, data, options=RenderOptions(hard_negatives=True))


def test_hard_negatives_retinanet_as_ssd_centernet_refused(by_finding):
    """RetinaNet is an SSD: the same miner, its focal loss replaced. CenterNet has no anchors: refused
    with the reason; --positive-fraction works for both."""
    config = render("retinanet_resnet50_v1_fpn_640", by_finding,
                    options=RenderOptions(hard_negatives=True, positive_fraction=0.5))
    loss = config.model.ssd.loss
    assert loss.classification_loss.WhichOneof("classification_loss") == "weighted_sigmoid"
    assert loss.hard_example_miner.max_negatives_per_positive == SSD_MINER["max_negatives_per_positive"]
    with pytest.raises(UserError, match=r"SSD family \(SSD, RetinaNet\).*CenterNet, which has no anchors.*"
                                        r"--positive-fraction"):
        render("centernet_resnet50_v1_fpn_512", by_finding, options=RenderOptions(hard_negatives=True))
    for model in ("retinanet_resnet50_v1_fpn_640", "centernet_resnet50_v1_fpn_512"):
        weights = render(model, by_finding, options=RenderOptions(positive_fraction=0.5)) \
            .train_input_reader.sample_from_datasets_weights
        assert sum(weights) == pytest.approx(1.0) and len(weights) >= 2


def test_cli(by_finding, tmp_path, capsys):
    out = str(tmp_path / "pipeline.config")
    assert main(["config", "--model", SSD, "--data", by_finding, "--out", out, "--positive-fraction", "0.5",
                 "--hard-negatives"]) == 0
    printed = capsys.readouterr().out
    assert "train input 50% images with findings" in printed and "hard example miner" in printed
    assert "sample_from_datasets_weights: 0.5" in open(out).read()
    assert main(["config", "--model", FRCNN, "--data", by_finding, "--out", out, "--hard-negatives"]) == 1
    assert "already trains on balanced samples" in capsys.readouterr().err


@pytest.mark.tf
def test_od_api_train_input_reads_the_positive_fraction(by_finding):
    """The rendered train input, read through the OD API's own `inputs.train_input` (decoding,
    resizing, batching): the share of images with a box is F within 0.05, on a dataset with 10%
    positives. Without --positive-fraction the OD API's `dataset_builder` reads the natural share."""
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    from object_detection import inputs
    from object_detection.builders import dataset_builder
    from object_detection.core import standard_fields as fields

    fraction, batch, batches = 0.5, 16, 50
    config = render(SSD, by_finding, options=RenderOptions(tiny=True, image_size=64, augment=[], batch_size=batch,
                                                           positive_fraction=fraction))
    tf.random.set_seed(0)
    dataset = inputs.train_input(config.train_config, config.train_input_reader, config.model)
    boxes = np.concatenate([labels[fields.InputDataFields.num_groundtruth_boxes].numpy()
                            for _, labels in dataset.take(batches)])
    measured = float(np.mean(boxes > 0))
    print(f"positive fraction through inputs.train_input: {measured:.3f} of {len(boxes)} images (asked {fraction})")
    assert len(boxes) == batch * batches and abs(measured - fraction) <= 0.05

    plain = render(SSD, by_finding).train_input_reader  # train.record-*: both sets, unweighted
    decoded = dataset_builder.build(plain, batch_size=None).take(400)
    natural = float(np.mean([int(tf.size(d[fields.InputDataFields.groundtruth_classes])) > 0 for d in decoded]))
    print(f"positive fraction without --positive-fraction: {natural:.3f}")
    assert natural < 0.2  # 8 of the 80 train images


@pytest.mark.tf
def test_od_api_builds_ssd_with_the_hard_example_miner(by_finding):
    """The OD API's model builder accepts the rendered miner (it refuses one with focal loss)
    and computes a loss on an image with a box and one without."""
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    from object_detection.builders import model_builder

    config = render(SSD, by_finding, options=RenderOptions(tiny=True, hard_negatives=True))
    detector = model_builder.build(model_config=config.model, is_training=True)
    assert detector._hard_example_miner is not None  # noqa: SLF001
    images, shapes = detector.preprocess(tf.zeros([2, 128, 128, 3]))
    detector.provide_groundtruth(groundtruth_boxes_list=[tf.constant([[0.2, 0.2, 0.6, 0.7]]), tf.zeros([0, 4])],
                                 groundtruth_classes_list=[tf.one_hot([0], 1), tf.zeros([0, 1])])
    losses = detector.loss(detector.predict(images, shapes), shapes)
    assert all(np.isfinite(v.numpy()) for v in losses.values())


def test_multi_worker_shards_a_weighted_input_by_example_unless_every_part_splits_evenly(by_finding):
    """The OD API shards each weighted input's files by itself: with 1 positive file and 2
    workers, file sharding would leave worker 2 without positives."""
    import glob
    from types import SimpleNamespace

    from medtfod.odapi.multiworker import input_sharding
    tf = SimpleNamespace(io=SimpleNamespace(gfile=SimpleNamespace(glob=glob.glob)))
    config = render(SSD, by_finding, options=RenderOptions(positive_fraction=0.5))
    counts = [len(glob.glob(p)) for p in config.train_input_reader.tf_record_input_reader.input_path]
    assert counts == [1, 9]  # 8 positive and 72 negative train images, 8 a shard
    assert input_sharding(tf, config, 1) == "file"
    assert input_sharding(tf, config, 2) == "example"  # 10 files in all would split by file
    assert input_sharding(tf, render(SSD, by_finding), 2) == "file"
