"""TFLite export: refusal of models the OD API cannot convert, and the output naming and box
comparison (numpy only; the export itself is checked end to end in test_end_to_end)."""
import numpy as np
import pytest

from medtfod.cli import main
from medtfod.training.config import RenderOptions, render, write_config
from medtfod.odapi.tflite import _name_outputs, compare


@pytest.mark.parametrize("model", ["faster_rcnn_resnet50_v1_640", "centernet_resnet50_v1_fpn_512"])
def test_tflite_refuses_other_families_before_any_work(model, tiny_dataset, tmp_path, capsys):
    config = str(tmp_path / "model.config")
    write_config(render(model, tiny_dataset, options=RenderOptions(tiny=True)), config)
    out = tmp_path / "exported"
    assert main(["export", "--config", config, "--model-dir", str(tmp_path / "none"), "--out", str(out),
                 "--tflite"]) == 1
    err = capsys.readouterr().err
    assert "--tflite supports the SSD family only (SSD, RetinaNet)" in err and not out.exists()
    assert ("is a center_net model" in err) == model.startswith("centernet")


def outputs(boxes, classes, scores):
    n = len(scores)
    pad = lambda a, shape: np.concatenate([np.asarray(a, np.float32).reshape(shape), np.zeros((10 - n,) + shape[1:],
                                                                                               np.float32)])[None]
    return [pad(scores, (n,)), pad(boxes, (n, 4)), np.array([n], np.float32), pad(classes, (n,))]


def test_outputs_are_named_by_content_not_position():
    raw = outputs([[0.1, 0.2, 0.5, 1.2], [0, 0, 0.3, 0.3]], [1, 0], [0.9, 0.4])
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        named = _name_outputs([raw[i] for i in order])
        assert named["num_detections"] == 2
        assert named["detection_classes"].tolist() == [2, 1]  # 0-based -> label map ids
        assert named["detection_scores"] == pytest.approx([0.9, 0.4])
        assert named["detection_boxes"][0] == pytest.approx([0.1, 0.2, 0.5, 1.0])  # clipped like the SavedModel


def saved(boxes, classes, scores):
    return {"detection_boxes": np.array([boxes], np.float32), "detection_classes": np.array([classes], np.float32),
            "detection_scores": np.array([scores], np.float32), "num_detections": np.array([len(scores)], np.float32)}


def test_compare_pairs_same_class_boxes_and_tolerates_swapped_near_ties():
    t = {"detection_boxes": np.array([[0, 0, .5, .5], [.5, .5, 1, 1]], np.float32),
         "detection_classes": np.array([1, 2]), "detection_scores": np.array([.5, .5], np.float32),
         "num_detections": 2}
    same = compare(t, saved([[.5, .5, 1, 1], [0, 0, .5, .5]], [2, 1], [.5, .5]))
    assert same == {"compared": 2, "max_box_difference": 0.0, "max_score_difference": 0.0}
    moved = compare(t, saved([[0, 0, .5, .5], [.5, .5, 1, .9]], [1, 2], [.5, .4]))
    assert moved["max_box_difference"] == pytest.approx(0.1) and moved["max_score_difference"] == pytest.approx(0.1)
    other_class = compare(t, saved([[0, 0, .5, .5], [.5, .5, 1, 1]], [1, 1], [.5, .5]))
    assert other_class["max_box_difference"] == float("inf")
