"""Fusion (ensemble-boxes) and flip TTA: a model fused with itself is itself; a flipped view is
flipped back; detect runs ensembles of stand-in SavedModels end to end."""
import csv
import threading

import numpy as np
import pytest
from PIL import Image

from medtfod.inference import ensemble
from medtfod.core.errors import UserError
from support.inference import batched_blob_finder, blob_finder
from medtfod.core.labelmap import LabelMap


def result(boxes, scores, classes):
    n = len(scores)
    pad = 5 - n
    return {"detection_boxes": np.array([list(boxes) + [[0, 0, 0, 0]] * pad], np.float32),
            "detection_scores": np.array([list(scores) + [0] * pad], np.float32),
            "detection_classes": np.array([list(classes) + [0] * pad], np.float32),
            "num_detections": np.array([n], np.float32)}


ONE = result([[0.1, 0.1, 0.3, 0.4], [0.5, 0.5, 0.9, 0.8], [0.12, 0.3, 0.35, 0.6]], [0.9, 0.6, 0.3], [1, 2, 1])


@pytest.mark.parametrize("method", ensemble.METHODS)
def test_a_model_fused_with_itself_is_itself(method):
    fused = ensemble.fuse([ONE, ONE], method, iou=0.55)
    n = int(fused["num_detections"][0])
    assert n == 3
    np.testing.assert_allclose(fused["detection_boxes"][0][:n], ONE["detection_boxes"][0][:3], atol=1e-6)
    np.testing.assert_allclose(fused["detection_scores"][0][:n], ONE["detection_scores"][0][:3], atol=1e-6)
    assert fused["detection_classes"][0][:n].tolist() == [1, 2, 1]


def test_wbf_averages_agreeing_boxes_and_halves_a_box_only_one_view_found():
    other = result([[0.1, 0.12, 0.3, 0.42]], [0.7], [1])  # agrees with ONE's first box, misses the rest
    fused = ensemble.fuse([ONE, other], "wbf", iou=0.55)
    n = int(fused["num_detections"][0])
    boxes, scores = fused["detection_boxes"][0][:n], fused["detection_scores"][0][:n]
    first = np.argmax(scores)
    expected = (0.9 * np.array([0.1, 0.1, 0.3, 0.4]) + 0.7 * np.array([0.1, 0.12, 0.3, 0.42])) / 1.6
    np.testing.assert_allclose(boxes[first], expected, atol=1e-6)
    assert scores[first] == pytest.approx((0.9 + 0.7) / 2)
    assert sorted(scores.tolist()) == pytest.approx([0.15, 0.3, 0.8])  # 0.6 and 0.3 found by one view of two


def test_hflip_back_mirrors_x_only():
    back = ensemble.hflip_back(ONE)["detection_boxes"][0][0]
    np.testing.assert_allclose(back, [0.1, 0.6, 0.3, 0.9], atol=1e-7)


def test_label_maps_must_agree():
    with pytest.raises(UserError, match=r"label maps differ: a has \[\('Mass', 2\)\], b has \[\('Tumor', 2\)\]"):
        ensemble.check_label_maps(["a", "b"], [LabelMap({"Nodule": 1, "Mass": 2}), LabelMap({"Nodule": 1, "Tumor": 2})])
    with pytest.raises(UserError, match="choose one of wbf, nms, mean"):
        ensemble.fuse([ONE, ONE], "vote")


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    root = tmp_path_factory.mktemp("blob_finders")
    paths = {}
    for name, shift, labels in (("exact", 0.0, "Mass"), ("shifted", 0.02, "Mass"), ("other", 0.0, "Tumor")):
        module = blob_finder(tf, shift)
        tf.saved_model.save(module, str(root / name / "saved_model"), signatures=module.__call__.get_concrete_function())
        (root / name / "label_map.pbtxt").write_text(f'item {{ id: 1 name: "{labels}" }}\n')
        paths[name] = str(root / name)
    images = root / "images"
    images.mkdir()
    symmetric = np.zeros((100, 200, 3), np.uint8)
    symmetric[30:60, 70:130] = 255  # centred: its mirror image is itself
    Image.fromarray(symmetric).save(images / "symmetric.png")
    off = np.zeros((100, 200, 3), np.uint8)
    off[20:50, 10:60] = 255  # left side: the flipped view finds it on the right
    Image.fromarray(off).save(images / "left.png")
    paths["images"] = str(images)
    return paths


def boxes_of(path):
    with open(path, newline="") as f:
        return {r["image"]: [float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")] for r in csv.DictReader(f)}


@pytest.mark.tf
def test_detect_with_flip_tta_and_a_two_model_ensemble(stand_ins, tmp_path):
    from medtfod.inference.detect import DetectOutputs, detect
    from medtfod.inference.predictor import PredictOptions
    detect(stand_ins["exact"], str(tmp_path / "plain"), images=stand_ins["images"],
           options=PredictOptions(min_score=0.1),
           outputs=DetectOutputs(quiet=True, draw=False))
    detect(stand_ins["exact"], str(tmp_path / "tta"), images=stand_ins["images"],
           options=PredictOptions(min_score=0.1, tta=["hflip"]),
           outputs=DetectOutputs(quiet=True, draw=False))
    plain, tta = boxes_of(tmp_path / "plain" / "detections.csv"), boxes_of(tmp_path / "tta" / "detections.csv")
    assert plain["symmetric.png"] == [70, 30, 130, 60] and plain["left.png"] == [10, 20, 60, 50]
    for image in plain:  # the flipped view, flipped back, agrees with the plain one within a pixel
        assert np.abs(np.subtract(tta[image], plain[image])).max() <= 1.0, (image, tta[image])
    detect([stand_ins["exact"], stand_ins["shifted"]], str(tmp_path / "ens"), images=stand_ins["images"],
           options=PredictOptions(min_score=0.1, fuse="wbf", fuse_iou=0.5),
           outputs=DetectOutputs(quiet=True, draw=False))
    fused = boxes_of(tmp_path / "ens" / "detections.csv")
    assert fused["left.png"] == pytest.approx([12, 20, 62, 50], abs=0.01)  # the mean of x and x + 4 px
    with pytest.raises(UserError, match="label maps differ"):
        detect([stand_ins["exact"], stand_ins["other"]], str(tmp_path / "bad"), images=stand_ins["images"],
               outputs=DetectOutputs(quiet=True))


@pytest.mark.tf
def test_flip_tta_runs_both_views_side_by_side_with_the_same_result(tmp_path):
    """detect sends a batch and its mirror image to the model in two threads (issue 23's TTA speed:
    one call leaves the cores idle between its ops; measured faster than one call of 2B in
    benchmarks/detect_speed.py); the answer equals one image at a time's."""
    from medtfod.inference.detect import DetectOutputs, detect
    from medtfod.inference.predictor import PredictOptions
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    module = batched_blob_finder(tf)
    calls = []
    traced = module.__call__.get_concrete_function()
    tf.saved_model.save(module, str(tmp_path / "float" / "saved_model"), signatures=traced)
    (tmp_path / "float" / "label_map.pbtxt").write_text('item { id: 1 name: "Mass" }\n')
    images = tmp_path / "images"
    images.mkdir()
    for k, (x0, x1) in enumerate(((10, 60), (120, 190), (80, 100))):  # asymmetric: a mixed-up view shows
        pixels = np.zeros((100, 200, 3), np.uint8)
        pixels[20 + k:50 + 2 * k, x0:x1] = 255
        Image.fromarray(pixels).save(images / f"b{k}.png")
    loaded = tf.saved_model.load(str(tmp_path / "float" / "saved_model"))

    def counted(pixels):
        calls.append((int(pixels.shape[0]), threading.get_ident()))
        return loaded(pixels)
    counted.signatures = loaded.signatures
    found = {}
    for batch in (1, 3):
        calls.clear()
        detect(str(tmp_path / "float"), str(tmp_path / f"b{batch}"), images=str(images),
               options=PredictOptions(min_score=0.1, batch_size=batch, tta=["hflip"]),
               outputs=DetectOutputs(quiet=True, draw=False), detect_fns=[counted])
        found[batch] = boxes_of(tmp_path / f"b{batch}" / "detections.csv")
        assert sorted(n for n, _ in calls) == ([1] * 6 if batch == 1 else [3, 3]), calls
        threads = {thread for _, thread in calls}  # batch 3: one batch, its two views in two threads
        assert (len(threads) == 2 if batch == 3 else len(threads) >= 2) and threading.get_ident() not in threads
    assert found[1] == found[3]
    assert found[3]["b1.png"] == pytest.approx([120, 21, 190, 52], abs=1.0)


@pytest.mark.tf
def test_draw_format_jpg_and_colliding_drawn_names(stand_ins, tmp_path):
    from medtfod.inference.detect import DetectOutputs, detect
    from medtfod.inference.predictor import PredictOptions
    detect(stand_ins["exact"], str(tmp_path / "jpg"), images=stand_ins["images"],
           options=PredictOptions(min_score=0.1),
           outputs=DetectOutputs(quiet=True, draw_format="jpg"))
    for name in ("symmetric.jpg", "left.jpg"):
        assert (tmp_path / "jpg" / name).read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
    assert not list((tmp_path / "jpg").glob("*.png"))
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (200, 200, 200)).save(images / "x.png")
    Image.new("RGB", (40, 30), (200, 200, 200)).save(images / "x.jpg")
    with pytest.raises(UserError, match=r"x\.jpg and x\.png would both be drawn to x\.jpg"):
        detect(stand_ins["exact"], str(tmp_path / "clash"), images=str(images),
               outputs=DetectOutputs(quiet=True, draw_format="jpg"))
    assert not (tmp_path / "clash").exists()  # refused before any work
    detect(stand_ins["exact"], str(tmp_path / "ok"), images=str(images),
           options=PredictOptions(min_score=0.0),
           outputs=DetectOutputs(quiet=True))  # default: x.png, x.jpg
    assert sorted(p.name for p in (tmp_path / "ok").glob("x.*")) == ["x.jpg", "x.png"]
