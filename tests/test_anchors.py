"""`medtfod anchors` / `config --fit-anchors`: anchors from the OD API's own generators, fitted to
a dataset's boxes in the model's input frame."""
import os
from dataclasses import dataclass

import numpy as np
import pytest

from medtfod.cli import main
from medtfod.core.boxes import Box
from medtfod.core.errors import UserError
from medtfod.odapi import protos
from medtfod.training import anchors
from medtfod.training.config import RenderOptions, render


@dataclass
class _Entry:
    name: str
    width: int
    height: int


class _Boxes:
    """A stand-in `Dataset`: images of `size` px with square lesions of the given sides."""

    def __init__(self, size, sides, path="synthetic", seed=0):
        rng = np.random.default_rng(seed)
        self.path, self.splits = path, ["train"]
        self._entries = [_Entry(f"img{i}.png", size, size) for i in range(len(sides))]
        self._truth = {}
        for entry, side in zip(self._entries, sides):
            x, y = rng.uniform(0, size - side, 2)
            self._truth[entry.name] = [("Nodule", Box(x, y, x + side, y + side))] if side else []

    def images(self, split=None):
        return self._entries

    def ground_truth(self, split=None):
        return self._truth


def _template(model="ssd_mobilenet_v2_fpnlite_320", data=None, **options):
    return render(model, data, options=RenderOptions(**options))


def test_anchor_boxes_are_the_od_api_generators_grids(tiny_dataset):
    from medtfod.odapi.anchors import anchor_boxes
    ssd = anchor_boxes(_template(data=tiny_dataset), 320, 320)
    # levels 3-7 at 320 px: 40^2 + 20^2 + 10^2 + 5^2 + 3^2 locations, 6 anchors each
    assert ssd.shape == (6 * (1600 + 400 + 100 + 25 + 9), 4)
    sides = np.sqrt((ssd[:, 2] - ssd[:, 0]) * (ssd[:, 3] - ssd[:, 1]))
    assert sides.min() == pytest.approx(32.0, rel=1e-4)  # anchor_scale 4 x stride 8
    # level 3's first cell is centred at half its stride (320 % 8 == 0: the OD API's anchor offset)
    assert (ssd[0, 0] + ssd[0, 2]) / 2 == pytest.approx(4.0, abs=1e-3)
    rcnn = anchor_boxes(_template("faster_rcnn_resnet50_v1_640", tiny_dataset), 640, 640)
    assert rcnn.shape == (40 * 40 * 12, 4)  # stride 16, 4 scales x 3 ratios


def test_best_ious_match_a_brute_force_count():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 50, (30, 2))
    boxes = np.hstack([xy, xy + rng.uniform(1, 20, (30, 2))])
    xy = rng.uniform(0, 50, (70, 2))
    cands = np.hstack([xy, xy + rng.uniform(1, 20, (70, 2))])

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    expected = [max(iou(b, a) for a in cands) for b in boxes]
    np.testing.assert_allclose(anchors.best_ious(boxes, cands, chunk=7), expected, rtol=1e-12)


def test_fit_raises_coverage_of_small_lesions_on_big_images(tiny_dataset):
    # 1024 px images with 20-40 px lesions: 6-12 px in SSD's 320 px input, where the smallest
    # template anchor is 32 px.
    data = _Boxes(1024, np.linspace(20, 40, 60))
    config = _template(data=tiny_dataset)
    before, after, count = anchors.fit(config, data)
    assert count == 60
    assert before.at_05 < 0.2 and after.at_05 >= 0.9
    assert before.small_at_threshold == 0 and after.small_at_threshold >= 0.8
    assert after.mean_best_iou > before.mean_best_iou + 0.2
    g = config.model.ssd.anchor_generator.multiscale_anchor_generator
    assert config.model.ssd.feature_extractor.fpn.min_level == g.min_level == after.params["min_level"]
    again = protos.TrainEvalPipelineConfig()
    from google.protobuf import text_format
    text_format.Merge(protos.to_text(config), again)  # the patched config parses
    assert anchors.coverage(again, anchors.input_boxes(data, "train", again)).at_05 == after.at_05
    table = anchors.describe(before, after, count)
    assert f"{before.at_05:.3f}" in table and f"{after.at_05:.3f}" in table
    assert ("note: only" in table) == (count < anchors.FEW_BOXES)
    assert "note: only 12 boxes" in anchors.describe(before, after, 12)


def test_fit_keeps_a_template_that_already_covers_the_boxes(tiny_dataset):
    config = _template(data=tiny_dataset)
    original = protos.to_text(config)
    before, after, _ = anchors.fit(config, _Boxes(320, np.linspace(60, 120, 20)))
    assert before.at_05 == after.at_05 == 1.0
    assert protos.to_text(config) == original


def test_faster_rcnn_is_fitted_at_its_first_stage_threshold(tiny_dataset):
    config = _template("faster_rcnn_resnet50_v1_640", tiny_dataset)
    before, after, _ = anchors.fit(config, _Boxes(640, np.linspace(24, 48, 40)))
    assert after.threshold == 0.7
    assert after.at_threshold > before.at_threshold + 0.3
    assert list(config.model.faster_rcnn.first_stage_anchor_generator.grid_anchor_generator.scales) == \
        pytest.approx(after.params["scales"], rel=1e-3)


def test_refusals_name_what_is_wrong(tiny_dataset):
    config = _template(data=tiny_dataset)
    with pytest.raises(UserError, match="no ground-truth boxes"):
        anchors.fit(config, _Boxes(256, [0, 0, 0]))
    config.model.ssd.anchor_generator.ssd_anchor_generator.num_layers = 6
    with pytest.raises(UserError, match="ssd_anchor_generator.*can be fitted for ssd with a multiscale"):
        anchors.fit(config, _Boxes(256, [20]))


def test_cli_anchors_writes_the_patched_config_and_refuses_bad_input(tiny_dataset, tmp_path, capsys):
    base = str(tmp_path / "base.config")
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", tiny_dataset, "--out", base,
                 "--image-size", "128"]) == 0
    out = str(tmp_path / "fitted.config")
    assert main(["anchors", "--data", tiny_dataset, "--config", base, "--out", out, "-q"]) == 0
    printed = capsys.readouterr().out
    before, after = [float(line.split()[2]) for line in printed.splitlines() if line.startswith(("before", "after"))]
    assert after > before
    assert protos.read_pipeline_config(out).model.ssd.anchor_generator.multiscale_anchor_generator.min_level == 2
    assert main(["anchors", "--data", tiny_dataset, "--config", base, "--out", out, "--split", "tset"]) == 1
    assert "has no split 'tset'; it has train, val" in capsys.readouterr().err
    assert main(["anchors", "--data", tiny_dataset, "--config", str(tmp_path / "nope"), "--out", out]) == 1
    assert "config not found" in capsys.readouterr().err
    assert main(["anchors", "--data", tiny_dataset, "--config", base, "--out", out, "--split", "val", "--split", "val",
                 "-q"]) == 0
    assert "boxes of split val whose" in capsys.readouterr().out
    folder = tmp_path / "a folder"
    folder.mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for target, words in ((folder, "is a folder; give a file name"), (notes, "is not a pipeline config medtfod wrote")):
        assert main(["anchors", "--data", tiny_dataset, "--config", base, "--out", str(target)]) == 1
        assert words in capsys.readouterr().err
    assert notes.read_text() == "my notes\n"
    inside = os.path.join(tiny_dataset, "fitted.config")
    assert main(["anchors", "--data", tiny_dataset, "--config", base, "--out", inside]) == 1
    assert not os.path.exists(inside)


@pytest.mark.slow
def test_config_fit_anchors_trains(tiny_dataset, tmp_path, capsys):
    """The patched generator (a level finer, for 6-14 px boxes) builds, predicts and trains in the OD API."""
    config = str(tmp_path / "pipeline.config")
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", tiny_dataset, "--out", config,
                 "--tiny", "--image-size", "128", "--steps", "2", "--batch-size", "2", "--fit-anchors"]) == 0
    assert "anchors fitted to the training boxes" in capsys.readouterr().out
    assert protos.read_pipeline_config(config).model.ssd.feature_extractor.fpn.min_level == 2
    model_dir = str(tmp_path / "model")
    assert main(["train", "--config", config, "--model-dir", model_dir, "-q"]) == 0
    assert os.path.exists(os.path.join(model_dir, "ckpt-1.index"))


def test_config_fit_anchors_says_when_a_set_overrides_the_fit(tiny_dataset, tmp_path, capsys):
    out = str(tmp_path / "pipeline.config")
    key = "model.ssd.anchor_generator.multiscale_anchor_generator.anchor_scale"
    assert main(["config", "--model", "ssd_mobilenet_v2_fpnlite_320", "--data", tiny_dataset, "--out", out,
                 "--image-size", "128", "--fit-anchors", "--set", f"{key}=5.0"]) == 0
    printed = capsys.readouterr().out
    assert "anchors fitted to the training boxes" in printed and f"note: --set {key} was applied after the fit" in printed
    assert protos.read_pipeline_config(out).model.ssd.anchor_generator.multiscale_anchor_generator.anchor_scale == 5.0


def test_retinanet_is_fitted_as_an_ssd(tiny_dataset):
    # RetinaNet (SSD meta-architecture, ResNet50 FPN) rendered at 256 px (fewer anchors, a faster
    # test): 30-60 px lesions on 1024 px images are 8-15 px, under its smallest anchor (32 px).
    config = _template("retinanet_resnet50_v1_fpn_640", tiny_dataset, image_size=256)
    before, after, _ = anchors.fit(config, _Boxes(1024, np.linspace(30, 60, 40)))
    assert after.threshold == 0.5
    assert after.at_05 > before.at_05 + 0.3
    g = config.model.ssd.anchor_generator.multiscale_anchor_generator
    # its ResNet50 FPN does not build at level 2: the fit keeps level 3
    assert config.model.ssd.feature_extractor.fpn.min_level == g.min_level == after.params["min_level"] == 3


def test_centernet_anchors_are_refused_naming_the_models_that_have_them(tiny_dataset, tmp_path, capsys):
    fittable = ("ssd_mobilenet_v2_fpnlite_320, faster_rcnn_resnet50_v1_640, mask_rcnn_resnet50_v1_640, "
                "mask_rcnn_inception_resnet_v2_1024, retinanet_resnet50_v1_fpn_640")
    assert anchors.fittable_models() == fittable.split(", ")
    with pytest.raises(UserError, match=r"center_net model \(CenterNet has no anchors.*" + fittable):
        render("centernet_resnet50_v1_fpn_512", tiny_dataset, options=RenderOptions(fit_anchors=True))
    base = str(tmp_path / "centernet.config")
    assert main(["config", "--model", "centernet_resnet50_v1_fpn_512", "--data", tiny_dataset, "--out", base]) == 0
    capsys.readouterr()
    out = str(tmp_path / "fitted.config")
    assert main(["anchors", "--data", tiny_dataset, "--config", base, "--out", out]) == 1
    assert "retinanet_resnet50_v1_fpn_640" in capsys.readouterr().err and not os.path.exists(out)


def test_config_warns_when_most_boxes_are_too_small_for_any_anchor(tmp_path, capsys):
    """The small-lesion benchmark's tiles: 95% of the boxes under the smallest box SSD's 32 px anchors
    can match at IoU 0.5 (a 22.6 px square). `config` says so (exactly: IoU <= area ratio), and what
    the matcher then does."""
    from medtfod.training.anchors import reach_warning, smallest_anchor_area
    from medtfod.odapi import protos
    from medtfod.core.resources import resource_path
    config = protos.read_pipeline_config(resource_path("pipeline_configs", "ssd_mobilenet_v2_fpnlite_320.config"))
    assert smallest_anchor_area(config) == 32.0 ** 2

    class Boxes:  # a Dataset with only what input_boxes reads
        path, splits = str(tmp_path), ["train"]

        def __init__(self, sides):
            self.sides = sides

        def images(self, split):
            from types import SimpleNamespace
            return [SimpleNamespace(name=f"{i}.png", width=320, height=320) for i in range(len(self.sides))]

        def ground_truth(self, split):
            from medtfod.core.boxes import Box
            return {f"{i}.png": [("lesion", Box(10, 10, 10 + s, 10 + s))] for i, s in enumerate(self.sides)}
    warning = reach_warning(config, Boxes([16, 20, 22, 16, 18, 20, 21, 22, 19, 17]), "train")
    assert warning.startswith("warning: 100% of the 10 training boxes are too small for any anchor to match at IoU >= "
                              "0.5 (that needs a box of at least 0.5 x the smallest anchor's area, 32 px square")
    assert "each gets only its one forced best anchor as a positive" in warning  # force_match_for_each_row
    config.model.ssd.matcher.argmax_matcher.force_match_for_each_row = False
    assert "they get no positive anchor" in reach_warning(config, Boxes([16, 20]), "train")
    config.model.ssd.matcher.argmax_matcher.force_match_for_each_row = True
    assert reach_warning(config, Boxes([16, 20, 22, 40]), "train") is None  # 75%: under POOR_REACH
    assert reach_warning(config, Boxes([16, 23, 40]), "train") is None  # 23 px: 529 >= 512, reachable
