"""Operating point: threshold choice on hand-computed FROC points, its storage beside the
export, and detect using it by default."""
import json

import pytest

from medtfod.core.annotations import Detection as Det
from medtfod.core.boxes import Box
from medtfod.evaluation.calibrate import choose_threshold
from medtfod.inference.operating_point import OPERATING_POINT, read_operating_point
from medtfod.cli import main
from medtfod.inference.model import DEFAULT_MIN_SCORE, ExportedModel


def resolve_min_score(model, min_score):
    return ExportedModel(model).min_score(min_score)
from medtfod.core.errors import UserError

A, B = Box(10, 10, 50, 50), Box(100, 100, 140, 140)
FAR = Box(300, 300, 340, 340)
# 4 GT boxes on 3 images (c.png is a negative). In score order the detections are:
# .9 hit a/A, .8 FP on c, .7 hit b/A, .6 FP a, .5 hit a/B, .4 FP c; the last GT box (b/B) is never found.
GT = {"a.png": [("Mass", A), ("Mass", B)], "b.png": [("Mass", A), ("Nodule", B)], "c.png": []}
DETS = [Det("a.png", "Mass", .9, A), Det("c.png", "Mass", .8, A), Det("b.png", "Mass", .7, A),
        Det("a.png", "Nodule", .6, FAR), Det("a.png", "Mass", .5, B), Det("c.png", "Nodule", .4, B)]


@pytest.mark.parametrize("target,expected", [
    (0.25, (0.9, 0.25, 0.0)),      # the first hit alone
    (0.5, (0.7, 0.5, 1 / 3)),      # .9 and .7 hit; .8 is a false positive on c
    (0.75, (0.5, 0.75, 2 / 3)),
])
def test_sensitivity_target_takes_the_highest_threshold_reaching_it(target, expected):
    point = choose_threshold(GT, DETS, sensitivity=target)
    assert (point["min_score"], point["sensitivity"], point["avg_fp"]) == pytest.approx(expected)


@pytest.mark.parametrize("budget,expected", [
    (0.0, (0.9, 0.25, 0.0)),
    (0.5, (0.7, 0.5, 1 / 3)),      # .6 would make it 2/3 FP/image
    (1.0, (0.4, 0.75, 1.0)),       # everything: 3 FPs on 3 images
])
def test_fp_budget_takes_the_lowest_threshold_within_it(budget, expected):
    point = choose_threshold(GT, DETS, fp_per_image=budget)
    assert (point["min_score"], point["sensitivity"], point["avg_fp"]) == pytest.approx(expected)


def test_unreachable_targets_say_what_is_reachable():
    with pytest.raises(UserError, match=r"sensitivity 0.9 is out of reach.*finds 0.750 of the boxes"):
        choose_threshold(GT, DETS, sensitivity=0.9)
    with pytest.raises(UserError, match=r"0.1 FP/image is out of reach.*score 0.8"):
        choose_threshold(GT, [DETS[1]] + DETS[2:], fp_per_image=0.1)
    with pytest.raises(UserError, match="exactly one target"):
        choose_threshold(GT, DETS)
    with pytest.raises(UserError, match="no ground-truth boxes"):
        choose_threshold({"c.png": []}, [], sensitivity=0.5)


@pytest.fixture
def export_dir(tmp_path):
    folder = tmp_path / "exported"
    (folder / "saved_model").mkdir(parents=True)
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"")
    return folder


def test_calibrate_command_stores_the_point_and_detect_uses_it(tiny_dataset, export_dir, tmp_path, capsys):
    from medtfod.evaluation.metrics import read_ground_truth
    gt = read_ground_truth(tiny_dataset, "val")
    # detections of the val split: every GT box found once at a score that falls with the image's order
    names = sorted(gt)
    rows = ["image,label,score,xmin,ymin,xmax,ymax"]
    for i, name in enumerate(names):
        for label, box in gt[name]:
            rows.append(f"{name},{label},{0.9 - 0.01 * i:.2f},{box.xmin},{box.ymin},{box.xmax},{box.ymax}")
    csv_path = tmp_path / "detections.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    assert resolve_min_score(str(export_dir), None)[0] == DEFAULT_MIN_SCORE
    assert main(["calibrate", "--model", str(export_dir), "--dataset", tiny_dataset, "--split", "val",
                 "--sensitivity", "1", "--detections", str(csv_path)]) == 0
    printed = capsys.readouterr()
    assert "operating point: min score" in printed.out
    assert "its lowest score is 0.85" in printed.out and "--min-score 0" in printed.out  # a thresholded table is named
    stored = json.loads((export_dir / OPERATING_POINT).read_text())
    last = max(i for i, n in enumerate(names) if gt[n])
    assert stored["min_score"] == pytest.approx(0.9 - 0.01 * last)
    assert stored["sensitivity"] == 1.0 and stored["avg_fp"] == 0.0 and stored["split"] == "val"
    assert stored["images"] == len(gt) and stored["target_sensitivity"] == 1
    score, source = resolve_min_score(str(export_dir / "saved_model"), None)
    assert score == stored["min_score"] and "calibrated operating point" in source
    assert resolve_min_score(str(export_dir), 0.2) == (0.2, "--min-score")


def test_a_damaged_operating_point_is_named(export_dir):
    (export_dir / OPERATING_POINT).write_text('{"min_score": 7}')
    with pytest.raises(UserError, match=r"operating_point.json: min_score 7.0 is not in \[0, 1\]"):
        read_operating_point(str(export_dir))
    (export_dir / OPERATING_POINT).write_text("{")
    with pytest.raises(UserError, match="not a valid operating point"):
        resolve_min_score(str(export_dir), None)


def test_calibrate_refuses_detections_from_another_split(tiny_dataset, export_dir, tmp_path, capsys):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("image,label,score,xmin,ymin,xmax,ymax\nnot_in_val.png,Mass,0.5,1,1,5,5\n")
    assert main(["calibrate", "--model", str(export_dir), "--dataset", tiny_dataset, "--fp-per-image", "1",
                 "--detections", str(csv_path)]) == 1
    assert "1 images in the detections are not in the val split" in capsys.readouterr().err
    assert not (export_dir / OPERATING_POINT).exists()


def test_a_point_holds_only_for_the_tiling_it_was_calibrated_on(tiny_dataset, export_dir, tmp_path, capsys):
    """calibrate --tile records the tiling; detect/predict use a point only when they tile the same
    way (a whole-image threshold on tiled scores kept a different share of boxes, silently)."""
    from medtfod.evaluation.metrics import read_ground_truth
    gt = read_ground_truth(tiny_dataset, "val")
    rows = ["image,label,score,xmin,ymin,xmax,ymax"]
    for i, name in enumerate(sorted(gt)):
        for label, box in gt[name]:
            rows.append(f"{name},{label},{0.9 - 0.01 * i:.2f},{box.xmin},{box.ymin},{box.xmax},{box.ymax}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    calibrate = ["calibrate", "--model", str(export_dir), "--dataset", tiny_dataset, "--sensitivity", "1",
                 "--detections", str(tmp_path / "d.csv")]
    assert main([*calibrate, "--tile-merge", "wbf"]) == 1
    assert "--tile-overlap, --tile-merge and --tile-full go with --tile PX" in capsys.readouterr().err
    assert main([*calibrate, "--tile", "320", "--tile-merge", "wbf"]) == 0
    assert "--tile 320 --tile-overlap 0.2 --tile-merge wbf now uses it" in capsys.readouterr().out
    stored = json.loads((export_dir / OPERATING_POINT).read_text())
    tiling = {"tile": 320, "overlap": 0.2, "merge": "wbf", "full": False}
    assert stored["tiling"] == tiling
    metrics = ["metrics", "--detections", str(tmp_path / "d.csv"), "--ground-truth", tiny_dataset, "--split", "val",
               "--model", str(export_dir), "--bootstrap", "0", "--out"]
    assert main([*metrics, str(tmp_path / "m1.json")]) == 0  # detections of whole images: not this point's
    threshold = json.loads((tmp_path / "m1.json").read_text())["threshold"]
    assert threshold["source"] == "default" and "chosen on 320 px tiles" in threshold["detail"], threshold
    assert main([*metrics, str(tmp_path / "m2.json"), "--tile", "320", "--tile-merge", "wbf"]) == 0
    threshold = json.loads((tmp_path / "m2.json").read_text())["threshold"]
    assert threshold["source"] == "operating_point" and threshold["min_score"] == stored["min_score"], threshold
    capsys.readouterr()
    model = ExportedModel(str(export_dir))
    assert model.min_score(None, tiling=tiling) == (stored["min_score"], model.min_score(None, tiling=tiling)[1])
    for other in (None, dict(tiling, merge="nms"), dict(tiling, tile=640)):
        score, source = model.min_score(None, tiling=other)
        assert score == DEFAULT_MIN_SCORE and "chosen on 320 px tiles (overlap 0.2, wbf merge)" in source, source
        assert "run medtfod calibrate " + ("without --tile" if other is None else f"--tile {other['tile']}") in source
    assert main(calibrate) == 0  # a whole-image point (as every point calibrated before --tile)
    assert "detect --tile does not" in capsys.readouterr().out
    assert "tiling" not in json.loads((export_dir / OPERATING_POINT).read_text()) or \
        json.loads((export_dir / OPERATING_POINT).read_text())["tiling"] is None
    score, source = model.min_score(None, tiling=tiling)
    assert score == DEFAULT_MIN_SCORE and "chosen on whole images" in source and "calibrate --tile 320" in source
    from medtfod.evaluation.calibrate import calibrate as calibrate_fn
    from medtfod.inference.predictor import PredictOptions
    with pytest.raises(UserError, match="one model's own threshold"):
        calibrate_fn(str(export_dir), tiny_dataset, sensitivity=1, detections=str(tmp_path / "d.csv"),
                     options=PredictOptions(tta=("hflip",)))

