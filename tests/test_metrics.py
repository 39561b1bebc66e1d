"""Detection metrics on hand-computed cases (the arithmetic is in the comments), and
COCO numbers checked against pycocotools run directly."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from medtfod.core.annotations import Detection as Det
from medtfod.evaluation import metrics
from medtfod.evaluation.evaluate import MetricsOptions, evaluate_all
from medtfod.evaluation.bootstrap import bootstrap_ci, detection_cis
from medtfod.core.annotations import ImageRecord, Object
from medtfod.core.boxes import Box
from medtfod.core.errors import UserError
from medtfod.core.labelmap import LabelMap
from medtfod.evaluation.plots import format_table, write_plots
from medtfod.data.writers.coco import coco_json

from support import write

# The worked example. Three images: a.png (two nodules), b.png (one mass), c.png (negative).
G1, G2, G3 = Box(0, 0, 10, 10), Box(20, 0, 30, 10), Box(0, 0, 10, 10)
GT = {"a.png": [("nodule", G1), ("nodule", G2)], "b.png": [("mass", G3)], "c.png": []}
# Overlaps (areas: every box is 10 x 10 = 100):
#   D1 vs G1: identical                      IoU 1,               IoBB 1
#   D3 vs G2: x 25..30 -> 50 / (200 - 50)    IoU 1/3,             IoBB 50/100 = 0.5
#   D2 vs G1: x 5..10  -> 50 / 150           IoU 1/3,             IoBB 0.5   (G1 already taken by D1)
#   D4 vs G3: x 8..10  -> 20 / (200 - 20)    IoU 1/9 = 0.111,     IoBB 20/100 = 0.2
#   D5 on the negative image, D6 a nodule on b.png (which has only a mass): always false positives.
D1 = Det("a.png", "nodule", 0.9, Box(0, 0, 10, 10))
D3 = Det("a.png", "nodule", 0.85, Box(25, 0, 35, 10))
D2 = Det("a.png", "nodule", 0.8, Box(5, 0, 15, 10))
D4 = Det("b.png", "mass", 0.6, Box(8, 0, 18, 10))
D5 = Det("c.png", "nodule", 0.95, Box(0, 0, 10, 10))
D6 = Det("b.png", "nodule", 0.5, Box(0, 0, 10, 10))
DETS = [D1, D2, D3, D4, D5, D6]


def test_iou_and_iobb():
    assert metrics.iou(G2, D3[3]) == pytest.approx(1 / 3)
    assert metrics.iobb(G2, D3[3]) == 0.5
    assert metrics.iou(G3, D4[3]) == pytest.approx(1 / 9)
    assert metrics.iobb(G3, D4[3]) == pytest.approx(0.2)
    assert metrics.iobb(Box(0, 0, 10, 10), Box(2, 2, 4, 4)) == 1.0  # detection inside the GT box
    assert metrics.iou(Box(0, 0, 1, 1), Box(5, 5, 6, 6)) == 0.0


def test_matching_takes_best_unmatched_overlap_with_deterministic_ties():
    g = {"x": [("n", Box(0, 0, 10, 10)), ("n", Box(2, 0, 12, 10))]}
    # Alone, a detection on the second box picks it (IoU 1) over the first (IoU 8/12), though listed second.
    assert metrics.match_detections(g, [Det("x", "n", 0.9, Box(2, 0, 12, 10))], 0.5) == [1]
    # Box(1,0,11,10) overlaps both equally (90/110): the GT box listed first wins; the
    # lower-scored detection then gets the remaining one. Input order does not matter.
    dets = [Det("x", "n", 0.8, Box(2, 0, 12, 10)), Det("x", "n", 0.9, Box(1, 0, 11, 10))]
    assert metrics.match_detections(g, dets, 0.5) == [1, 0]
    # Equal scores: the detection listed first is matched first; the duplicate is a false positive.
    g1 = {"x": [("n", Box(0, 0, 10, 10))]}
    same = [Det("x", "n", 0.5, Box(0, 0, 10, 10)), Det("x", "n", 0.5, Box(0, 0, 10, 10))]
    assert metrics.match_detections(g1, same, 0.5) == [0, None]
    # Class-aware: a perfect box of the wrong class matches nothing.
    assert metrics.match_detections(g1, [Det("x", "m", 0.9, Box(0, 0, 10, 10))], 0.1) == [None]
    # Worked example at IoU 0.25: D1->G1, D3->G2 (1/3), D2 finds G1 taken, D4 1/9 too small.
    assert metrics.match_detections(GT, DETS, 0.25) == [0, None, 1, None, None, None]


def test_detections_on_unknown_images_are_refused():
    with pytest.raises(UserError, match="no ground truth.*'z.png'"):
        metrics.average_precision(GT, DETS + [Det("z.png", "nodule", 0.5, G1)], 0.5)


def test_average_precision_by_hand():
    # Nodule (2 GT boxes), detections by score: D5 .95, D1 .9, D3 .85, D2 .8, D6 .5
    # IoU 0.1 and 0.25: FP, TP, TP, FP, FP
    #   rank 1: recall 0,   precision 0/1
    #   rank 2: recall 1/2, precision 1/2
    #   rank 3: recall 1,   precision 2/3
    #   rank 4: recall 1,   precision 2/4;  rank 5: recall 1, precision 2/5
    #   envelope: p(r) = 2/3 on (0, 1]  -> AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3
    #   (without the envelope it would be 1/2 * 1/2 + 1/2 * 2/3 = 7/12)
    # IoU 0.5: only D1 is a TP (rank 2, recall 1/2, precision 1/2) -> AP = 1/2 * 1/2 = 1/4
    # Mass (1 GT box), one detection D4 (IoU 1/9): TP at 0.1 -> AP 1; FP at 0.25 and 0.5 -> AP 0
    expected = {0.1: (2 / 3, 1.0), 0.25: (2 / 3, 0.0), 0.5: (0.25, 0.0)}
    for t, (nodule, mass) in expected.items():
        ap = metrics.average_precision(GT, DETS, t)
        assert set(ap) == {"nodule", "mass", "mean"}
        assert ap["nodule"] == pytest.approx(nodule)
        assert ap["mass"] == pytest.approx(mass)
        assert ap["mean"] == pytest.approx((nodule + mass) / 2)  # 5/6, 1/3, 1/8


def test_average_precision_edge_cases():
    # A class with GT but no detections scores 0; a class with only detections is left out.
    ap = metrics.average_precision({"x": [("n", G1)]}, [Det("x", "other", 0.9, G1)], 0.5)
    assert ap == {"n": 0.0, "mean": 0.0}
    assert metrics.average_precision({"x": []}, [Det("x", "n", 0.9, G1)], 0.5) == {"mean": None}
    perfect = [Det(image, label, 1.0, box) for image, objects in GT.items() for label, box in objects]
    assert metrics.average_precision(GT, perfect, 0.5) == {"nodule": 1.0, "mass": 1.0, "mean": 1.0}


def test_froc_by_hand():
    # IoU 0.1, all classes, 3 GT boxes, 3 images (c.png counts although it has no GT).
    # By score: D5 .95 FP, D1 .9 TP, D3 .85 TP, D2 .8 FP, D4 .6 TP (IoU 1/9), D6 .5 FP
    #   threshold   FP  TP   avg_fp  sensitivity
    #   (origin)     0   0   0       0
    #   .95          1   0   1/3     0
    #   .9           1   1   1/3     1/3
    #   .85          1   2   1/3     2/3
    #   .8           2   2   2/3     2/3
    #   .6           2   3   2/3     1
    #   .5           3   3   1       1
    curve = metrics.froc_curve(GT, DETS, 0.1)
    assert curve["threshold"] == [None, 0.95, 0.9, 0.85, 0.8, 0.6, 0.5]
    assert curve["avg_fp"] == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    assert curve["sensitivity"] == pytest.approx([0, 0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    # Best sensitivity with avg_fp <= rate: 1/8 and 1/4 -> only the origin (0); 1/2 -> 2/3;
    # 1 and above -> 1. Mean = (0 + 0 + 2/3 + 1 + 1 + 1 + 1) / 7 = 2/3.
    result = metrics.froc(GT, DETS)
    assert list(result) == ["0.125", "0.25", "0.5", "1", "2", "4", "8", "mean"]
    assert [result[k] for k in list(result)[:7]] == pytest.approx([0, 0, 2 / 3, 1, 1, 1, 1])
    assert result["mean"] == pytest.approx(2 / 3)
    # IoU 0.5: only D1 hits. avg_fp reaches 1/3 with sensitivity 1/3 at threshold .9 and the
    # curve ends at 5/3 FP/image, so every rate >= 1/2 gets its last point: 1/3 (no extrapolation).
    strict = metrics.froc(GT, DETS, 0.5)
    assert [strict[k] for k in ("0.25", "0.5", "8")] == pytest.approx([0, 1 / 3, 1 / 3])
    assert strict["mean"] == pytest.approx(5 / 3 / 7)


def test_froc_equal_scores_enter_together():
    # One TP and one FP at the same score form one point (1/1 FP, 1/1 sensitivity): at a rate
    # of 0.5 FP/image that point is out of reach, so sensitivity there is 0.
    g = {"x": [("n", G1)]}
    dets = [Det("x", "n", 0.7, G1), Det("x", "n", 0.7, Box(50, 50, 60, 60))]
    curve = metrics.froc_curve(g, dets)
    assert curve["avg_fp"] == [0.0, 1.0] and curve["sensitivity"] == [0.0, 1.0]
    assert metrics.froc(g, dets, fps=(0.5, 1))["0.5"] == 0.0
    assert metrics.froc({"x": []}, dets)["mean"] is None


def test_iobb_localization_by_hand():
    # Nodule: counted on a.png only (the one image with nodule GT), so D5 (c.png) and D6 (b.png) are out.
    #   IoBB: D1-G1 1, D2-G1 0.5, D3-G2 0.5 (every other pair 0).
    #   T <= 0.5: G1 and G2 hit -> accuracy 2/2; every detection hits a box -> avg_fp 0/1
    #   T >= 0.75: only G1 hit -> accuracy 1/2; D2 and D3 hit nothing -> avg_fp 2/1 image = 2
    # Mass: b.png, D4-G3 IoBB 0.2 (D6 is a nodule, not counted for mass)
    #   T = 0.1: accuracy 1, avg_fp 0;  T >= 0.25: accuracy 0, avg_fp 1/1 = 1
    result = metrics.iobb_localization(GT, DETS)
    assert list(result) == ["mass", "nodule"]
    assert list(result["nodule"]) == ["0.1", "0.25", "0.5", "0.75", "0.9"]
    for t in ("0.1", "0.25", "0.5"):
        assert result["nodule"][t] == {"accuracy": 1.0, "avg_fp": 0.0}
    for t in ("0.75", "0.9"):
        assert result["nodule"][t] == {"accuracy": 0.5, "avg_fp": 2.0}
    assert result["mass"]["0.1"] == {"accuracy": 1.0, "avg_fp": 0.0}
    for t in ("0.25", "0.5", "0.75", "0.9"):
        assert result["mass"][t] == {"accuracy": 0.0, "avg_fp": 1.0}


# Image level: 3 positive, 2 negative images.
IMG_GT = {"p1": [("nodule", G1)], "p2": [("mass", G1)], "p3": [("nodule", G1)], "n1": [], "n2": []}
IMG_DETS = [Det("p1", "nodule", 0.9, G1), Det("p1", "nodule", 0.2, G1), Det("p2", "mass", 0.6, G1),
            Det("n1", "nodule", 0.6, G1), Det("n2", "nodule", 0.3, G1)]  # p3 has none -> score 0


def test_image_level_by_hand():
    # Scores: p1 0.9 (max of 0.9, 0.2), p2 0.6, p3 0; n1 0.6, n2 0.3.
    # Pairs (positive, negative): p1>n1 1, p1>n2 1, p2=n1 1/2, p2>n2 1, p3<n1 0, p3<n2 0
    #   AUC = 3.5 / 6 = 7/12
    # Youden over thresholds 0.9, 0.6, 0.3, 0 (called positive when score >= t):
    #   0.9: sens 1/3, spec 2/2 -> J = 1/3
    #   0.6: sens 2/3, spec 1/2 -> J = 1/6
    #   0.3: sens 2/3, spec 0   -> J = -1/3;   0: sens 1, spec 0 -> J = 0
    result = metrics.image_level(IMG_GT, IMG_DETS)
    assert result["auc"] == pytest.approx(7 / 12)
    assert result["threshold"] == 0.9
    assert result["sensitivity"] == pytest.approx(1 / 3) and result["specificity"] == 1.0
    # A given threshold 0.5: p1, p2 above -> sens 2/3; n1 above -> spec 1/2.
    fixed = metrics.image_level(IMG_GT, IMG_DETS, threshold=0.5)
    assert fixed == {"auc": pytest.approx(7 / 12), "sensitivity": pytest.approx(2 / 3),
                     "specificity": 0.5, "threshold": 0.5}
    # Only masses: p2 (0.6) is the only positive; every other image scores 0 for mass -> AUC 1.
    assert metrics.image_level(IMG_GT, IMG_DETS, classes=["mass"])["auc"] == 1.0
    # No negatives: AUC undefined.
    none = metrics.image_level({"p1": IMG_GT["p1"]}, IMG_DETS[:1])
    assert none["auc"] is None and none["specificity"] is None


def test_auc_equals_pairwise_count_on_random_scores():
    rng = np.random.default_rng(1)
    gt = {f"i{k}": ([("n", G1)] if k % 3 else []) for k in range(60)}
    dets = [Det(f"i{k}", "n", float(rng.integers(0, 5)) / 4, G1) for k in range(60) if rng.random() < 0.8]
    score = {image: 0.0 for image in gt}
    for image, _, s, _ in dets:
        score[image] = max(score[image], s)
    pos = [score[i] for i in gt if gt[i]]
    neg = [score[i] for i in gt if not gt[i]]
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert metrics.image_level(gt, dets)["auc"] == pytest.approx(pairs / (len(pos) * len(neg)))


def _cocoeval_directly(tmp_path, gt, dets, names):
    """COCOeval from files written by hand, independent of metrics.coco_dicts."""
    images = sorted(gt)
    dataset = {"images": [{"id": i + 1, "file_name": n, "width": 64, "height": 64} for i, n in enumerate(images)],
               "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)], "annotations": []}
    for i, image in enumerate(images):
        for label, box in gt[image]:
            dataset["annotations"].append({"id": len(dataset["annotations"]) + 1, "image_id": i + 1,
                                           "category_id": names.index(label) + 1, "iscrowd": 0,
                                           "bbox": [box.xmin, box.ymin, box.width, box.height], "area": box.area})
    results = [{"image_id": images.index(im) + 1, "category_id": names.index(label) + 1, "score": s,
                "bbox": [b.xmin, b.ymin, b.width, b.height]} for im, label, s, b in dets]
    write(tmp_path / "gt.json", json.dumps(dataset))
    write(tmp_path / "dt.json", json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(tmp_path / "gt.json"))
        evaluation = COCOeval(truth, truth.loadRes(str(tmp_path / "dt.json")), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def test_coco_metrics_match_pycocotools(tmp_path, capsys):
    names = ["nodule", "mass"]
    result = metrics.coco_metrics(GT, DETS, names)
    assert capsys.readouterr().out == ""  # pycocotools' prints are suppressed
    reference = _cocoeval_directly(tmp_path, GT, DETS, names)
    for key, value in zip(metrics.COCO_KEYS, reference.stats):
        assert result[key] == (pytest.approx(value) if value >= 0 else None), key
    assert result["APm"] is None and result["APl"] is None  # all boxes are 10 x 10 = small
    for k, name in enumerate(names):
        p = reference.eval["precision"][:, :, k, 0, -1]
        assert result["per_class"][name] == pytest.approx(p[p > -1].mean())
    perfect = [Det(image, label, 1.0, box) for image, objects in GT.items() for label, box in objects]
    best = metrics.coco_metrics(GT, perfect, names)
    assert best["AP50"] == 1.0 and best["AP"] == 1.0
    assert best["per_class"] == pytest.approx({"nodule": 1.0, "mass": 1.0})
    assert metrics.coco_metrics(GT, [], names)["AP50"] == 0.0
    message = r"label 'nodule' is not among the classes \(nodules, mass\); did you mean 'nodules'"
    with pytest.raises(UserError, match=message):
        metrics.coco_metrics(GT, DETS, ["nodules", "mass"])


def _patients_case():
    rng = np.random.default_rng(7)
    gt, dets, patients = {}, [], {}
    for p in range(20):
        for k in range(2):
            image = f"p{p}_{k}.png"
            patients[image] = f"P{p}"
            gt[image] = [("n", Box(10, 10, 30, 30))] if (p + k) % 3 else []
            for _ in range(int(rng.integers(0, 3))):
                x = float(rng.integers(0, 30))
                dets.append(Det(image, "n", float(rng.random()), Box(x, 10, x + 20, 30)))
    return gt, dets, patients


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    gt, dets, patients = _patients_case()
    fn = lambda g, d: metrics.average_precision(g, d, 0.5)["mean"]  # noqa: E731
    point = fn(gt, dets)
    low, high = bootstrap_ci(gt, dets, fn, patients, n=100, seed=0)
    assert low <= point <= high and low < high
    assert bootstrap_ci(gt, dets, fn, patients, n=100, seed=0) == (low, high)
    assert bootstrap_ci(gt, dets, fn, patients, n=100, seed=1) != (low, high)
    with pytest.raises(UserError, match="no patient id"):
        bootstrap_ci(gt, dets, fn, {}, n=10)


def test_bootstrap_counts_a_patient_drawn_twice_twice():
    # Patient A has one image with one GT box, B one negative image. Each replicate draws 2
    # patients: AA (2 boxes, 2 images), AB (1 box), BB (0 boxes, metric None -> skipped).
    gt = {"a.png": [("n", G1)], "b.png": []}
    seen = []

    def fn(g, d):
        seen.append((len(g), sum(len(v) for v in g.values())))
        return None if seen[-1][1] == 0 else float(seen[-1][1])
    low, high = bootstrap_ci(gt, [], fn, {"a.png": "A", "b.png": "B"}, n=200, seed=0)
    assert {images for images, _ in seen} == {2}
    assert {boxes for _, boxes in seen} == {0, 1, 2}
    assert (low, high) == (1.0, 2.0)
    assert bootstrap_ci({"b.png": []}, [], lambda g, d: None, {"b.png": "B"}, n=5) == (None, None)


def _mixed_case(seed, ties=False):
    """Patients with 1-3 images, two classes (one rare), negatives, duplicates and FPs."""
    rng = np.random.default_rng(seed)
    gt, dets, patients = {}, [], {}
    for p in range(12):
        for k in range(int(rng.integers(1, 4))):
            image = f"p{p}_{k}.png"
            patients[image] = f"P{p}"
            gt[image] = [(label, Box(10 + 40 * j, 10, 40 + 40 * j, 40))
                         for j, label in enumerate(["n"] * int(rng.integers(0, 3)) + (["m"] if rng.random() < 0.15 else []))]
            for _ in range(int(rng.integers(0, 5))):
                x = float(rng.integers(0, 90))
                score = float(rng.integers(1, 4)) / 4 if ties else float(rng.random())
                dets.append(Det(image, str(rng.choice(["n", "m"])), score, Box(x, 10, x + 30, 40)))
    return gt, dets, patients


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_bootstrap_equals_the_replicate_loop(seed):
    """detection_cis (weighted sums over all replicates at once) gives bootstrap_ci's intervals
    (real renamed replicates through the metric functions) for every metric it reports."""
    gt, dets, patients = _mixed_case(seed)
    fast = detection_cis(gt, dets, patients, n=60, seed=seed)
    loop = {"ap50_mean": lambda g, d: metrics.average_precision(g, d, 0.5)["mean"],
            "froc_mean": lambda g, d: metrics.froc(g, d, 0.1)["mean"],
            "auc": lambda g, d: metrics.image_level(g, d)["auc"],
            "froc@0.125": lambda g, d: metrics.froc(g, d, 0.1)["0.125"],
            "froc@2": lambda g, d: metrics.froc(g, d, 0.1)["2"]}
    for key, fn in loop.items():
        assert fast[key] == pytest.approx(bootstrap_ci(gt, dets, fn, patients, n=60, seed=seed), abs=1e-12), key
    tied_gt, tied, tied_patients = _mixed_case(seed, ties=True)  # FROC and AUC take equal scores together
    fast = detection_cis(tied_gt, tied, tied_patients, n=40, seed=seed)
    for key in ("froc_mean", "auc"):
        assert fast[key] == pytest.approx(bootstrap_ci(tied_gt, tied, loop[key], tied_patients, n=40, seed=seed),
                                          abs=1e-12), key
    assert detection_cis({"b.png": []}, [], {"b.png": "B"}, n=5)["ap50_mean"] == (None, None)  # no GT ever drawn


def test_evaluate_all_layout_table_and_plots(tmp_path):
    result = evaluate_all(GT, DETS, options=MetricsOptions(bootstrap=20))
    assert list(result) == ["format", "threshold", "ap", "froc", "image_level", "coco", "at_threshold", "iobb",
                            "confusion", "strata", "ci95", "nulls"]
    assert list(result["ap"]) == ["0.1", "0.25", "0.5"]
    assert result["ap"]["0.25"]["mean"] == pytest.approx(1 / 3)
    assert result["froc"]["mean"] == pytest.approx(2 / 3)
    assert list(result["ci95"]) == ["unit", "groups", "replicates", "ap50_mean", "froc_mean", "auc", "froc"]
    assert list(result["ci95"]["froc"]) == ["0.125", "0.25", "0.5", "1", "2", "4", "8"]
    assert result["ci95"]["unit"] == "image" and result["ci95"]["groups"] == len(GT)  # no patients given
    by_patient = evaluate_all(GT, DETS, patients={image: "p" for image in GT}, options=MetricsOptions(bootstrap=5))["ci95"]
    assert (by_patient["unit"], by_patient["groups"], by_patient["replicates"]) == ("patient", 1, 5)
    json.dumps(result, allow_nan=False)  # strict JSON: undefined values are None, not NaN
    assert evaluate_all(GT, DETS, options=MetricsOptions(bootstrap=0))["ci95"] == {}
    table = format_table(result)
    assert "FROC" in table and "nodule" in table and "n/a" in table  # APm is None
    paths = write_plots(GT, DETS, str(tmp_path / "plots"))
    assert sorted(os.path.basename(p) for p in paths) == ["froc.png", "pr_mass.png", "pr_nodule.png"]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_read_detections_csv(tmp_path):
    header = "image,label,score,xmin,ymin,xmax,ymax\n"
    path = write(tmp_path / "detections.csv", header + "a.png,nodule,0.900000,0.00,0.00,10.00,10.00\n"
                 "b.png,mass,0.5,8,0,18,10\n")
    assert metrics.read_detections_csv(path) == [Det("a.png", "nodule", 0.9, Box(0, 0, 10, 10)),
                                                 Det("b.png", "mass", 0.5, Box(8, 0, 18, 10))]
    assert metrics.read_detections_csv(write(tmp_path / "empty.csv", header)) == []
    bad = {
        "a.png,nodule,0.9,0,0,10,10\na.png,nodule,high,0,0,10,10\n":
            r"detections.csv:3: score 'high' is not a finite number",
        "a.png,nodule,0.9,0,0,10\n": r"detections.csv:2: expected 7 fields",
        "a.png,nodule,0.9,0,0,10,nan\n": r"detections.csv:2: ymax 'nan' is not a finite number",
        "a.png,nodule,0.9,10,0,10,10\n": r"detections.csv:2: box has no area",
        ",nodule,0.9,0,0,10,10\n": r"detections.csv:2: empty image",
    }
    for rows, message in bad.items():
        with pytest.raises(UserError, match=message):
            metrics.read_detections_csv(write(tmp_path / "detections.csv", header + rows))
    with pytest.raises(UserError, match=r"detections.csv:1: expected the header"):
        metrics.read_detections_csv(write(tmp_path / "detections.csv", "image,score\n"))
    with pytest.raises(UserError, match="cannot read"):
        metrics.read_detections_csv(str(tmp_path / "missing.csv"))


def _record(name, *objects):
    return ImageRecord(name, name, 64, 64, 1, "png", "P", [Object(label, box) for label, box in objects])


def test_read_ground_truth_from_convert_output(tmp_path):
    label_map = LabelMap.from_names(["nodule", "mass"])
    (tmp_path / "coco").mkdir()
    train = [_record("t.png", ("mass", Box(1, 2, 11, 22)))]
    (tmp_path / "coco" / "train.json").write_bytes(coco_json(train, label_map))
    (tmp_path / "coco" / "test.json").write_bytes(coco_json(
        [_record("a.png", ("nodule", Box(0.5, 0, 10, 10)), ("nodule", G2)), _record("c.png")], label_map))
    assert metrics.read_ground_truth(str(tmp_path), "test") == {
        "a.png": [("nodule", Box(0.5, 0, 10, 10)), ("nodule", G2)], "c.png": []}
    everything = metrics.read_ground_truth(str(tmp_path))
    assert sorted(everything) == ["a.png", "c.png", "t.png"]
    assert everything["t.png"] == [("mass", Box(1, 2, 11, 22))]
    with pytest.raises(UserError, match=r"split 'val' not found.*available: test, train"):
        metrics.read_ground_truth(str(tmp_path), "val")
    with pytest.raises(UserError, match="no coco"):
        metrics.read_ground_truth(str(tmp_path / "nowhere"))
    write(tmp_path / "coco" / "broken.json", '{"images": [], "annotations": [{"id": 1}]}')
    with pytest.raises(UserError, match="broken.json: not a COCO detection file"):
        metrics.read_ground_truth(str(tmp_path), "broken")
