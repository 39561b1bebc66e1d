"""Threshold-dependent metrics, per-lesion IoU and strata on a hand-worked case (the arithmetic
is in the comments), and the strata's intervals against the bootstrap's reference loop."""
import numpy as np
import pytest

from medtfod.core.annotations import Detection as Det
from medtfod.core.boxes import Box
from medtfod.core.errors import UserError
from medtfod.evaluation import metrics
from medtfod.evaluation.bootstrap import bootstrap_ci, detection_cis
from medtfod.evaluation.evaluate import MetricsOptions, evaluate_all, operating_threshold
from medtfod.evaluation.lesions import lesion_overlaps
from medtfod.evaluation.strata import match, measure
from medtfod.evaluation import stratify

# Three patients. a.png (p1, F): a small nodule S1 (10 px) and a large mass L1 (40 px).
# b.png (p2, M): a small nodule S2 (8 px) and a large nodule L2 (30 px). c.png (p3, F): no finding.
S1, L1, S2, L2 = Box(0, 0, 10, 10), Box(50, 50, 90, 90), Box(0, 0, 8, 8), Box(20, 20, 50, 50)
GT = {"a.png": [("nodule", S1), ("mass", L1)], "b.png": [("nodule", S2), ("nodule", L2)], "c.png": []}
PATIENTS = {"a.png": "p1", "b.png": "p2", "c.png": "p3"}
META = {"a.png": {"sex": "F"}, "b.png": {"sex": "M"}, "c.png": {"sex": "F"}}
# Detections; the threshold is 0.5, hits need IoU >= 0.1 (AP: 0.5):
#   d1 on S1, IoU 1, IoBB 1.            d2 on L1: 30x40 = 1200 / (1600 + 1600 - 1200) = IoU 0.6, IoBB 0.75.
#   d3 on L2, IoU 1, but scores 0.4.    d4 on b, overlaps nothing: a false positive of size 10 (small).
#   d5 on the negative c.png: a false positive of size 30 (large).
#   d6 on S2: 32 / (64 + 32 - 32) = IoU 0.5 exactly, IoBB 32/32 = 1.
D = [Det("a.png", "nodule", 0.9, Box(0, 0, 10, 10)), Det("a.png", "mass", 0.6, Box(60, 50, 100, 90)),
     Det("b.png", "nodule", 0.4, Box(20, 20, 50, 50)), Det("b.png", "nodule", 0.7, Box(100, 100, 110, 110)),
     Det("c.png", "nodule", 0.8, Box(0, 0, 30, 30)), Det("b.png", "nodule", 0.55, Box(0, 0, 4, 8))]
OPTIONS = MetricsOptions(min_score=0.5, bootstrap=0, size_bins=(0, 20, float("inf")), by=("sex",))


def test_per_lesion_best_iou_and_iobb_at_the_threshold():
    lesions = lesion_overlaps(GT, D, 0.5)
    # S1: d1 -> 1; L1: d2 -> 0.6; S2: d6 -> 0.5 (d4 overlaps nothing); L2: only d3, below 0.5 -> 0
    assert [lesion.best_iou for lesion in lesions] == pytest.approx([1, 0.6, 0.5, 0])
    assert [lesion.best_iobb for lesion in lesions] == pytest.approx([1, 0.75, 1, 0])
    at = evaluate_all(GT, D, patients=PATIENTS, options=OPTIONS, meta=META)["at_threshold"]
    assert at["mean_iou"] == pytest.approx((1 + 0.6 + 0.5 + 0) / 4)
    assert at["mean_iobb"] == pytest.approx((1 + 0.75 + 1 + 0) / 4)
    assert at["median_iou"] == pytest.approx(0.55)
    assert at["histogram"]["counts"] == [1, 0, 0, 0, 0, 1, 1, 0, 0, 1]   # 0 | 0.5 | 0.6 | 1 (last bin holds 1)
    assert at["per_class"] == {"mass": {"lesions": 1, "mean_iou": pytest.approx(0.6)},
                               "nodule": {"lesions": 3, "mean_iou": pytest.approx(0.5)}}
    # hits at 0.5: S1, L1, S2 (L2's only match scores 0.4); false positives d4 and d5 over 3 images
    assert (at["lesions"], at["hits"], at["missed"], at["detections"], at["false_positives"]) == (4, 3, 1, 5, 2)
    assert at["sensitivity"] == 0.75 and at["fp_per_image"] == pytest.approx(2 / 3)


def _by_name(strata):
    return {s["name"]: s for s in strata}


def test_every_stratified_number_of_the_worked_case():
    result = evaluate_all(GT, D, patients=PATIENTS, options=OPTIONS, meta=META)["strata"]
    size = _by_name(result["size"]["strata"])
    assert result["size"]["edges"] == [0, 20, None] and list(size) == ["0-20 px", ">= 20 px"]
    small, large = size["0-20 px"], size[">= 20 px"]
    # small: S1 and S2 on a and b. Hits at 0.5: both (d1, d6). Best IoU 1 and 0.5. Unmatched small
    # detections >= 0.5: d4 -> 1 FP over all 3 images.
    assert (small["lesions"], small["images"], small["patients"]) == (2, 2, 2)
    assert small["sensitivity"] == 1.0 and small["mean_iou"] == pytest.approx(0.75)
    assert small["fp_per_image"] == pytest.approx(1 / 3)
    # AP@0.5, nodules only (no small mass): d1 TP, d5 left out (unmatched, 30 px), d4 FP (10 px), d6 TP,
    # d3 left out (matched the large L2): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 + 1/2 * 2/3
    assert small["ap50"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # FROC (all classes): d1 TP, d4 FP (1/3 FP/image), d6 TP -> sensitivity 1 at 1/3 FP/image
    assert small["froc"] == {"0.5": 1.0, "1": 1.0, "2": 1.0}
    # large: L1 (hit by d2, IoU 0.6) and L2 (missed at 0.5, IoU 0); d5 the one large FP
    assert (large["lesions"], large["images"], large["patients"]) == (2, 2, 2)
    assert large["sensitivity"] == 0.5 and large["mean_iou"] == pytest.approx(0.3)
    assert large["fp_per_image"] == pytest.approx(1 / 3)
    # AP: mass 1 (d2); nodule: d5 FP then d3 TP -> precision 1/2 at recall 1 -> 0.5; mean 0.75
    assert large["ap50"] == pytest.approx(0.75)
    assert large["froc"] == {"0.5": 1.0, "1": 1.0, "2": 1.0}   # d5 FP, d2 TP, d3 TP: all at 1/3 FP/image
    assert small["too_small"] and large["too_small"]            # under 10 lesions
    sex = _by_name(result["by"]["sex"]["strata"])
    assert list(sex) == ["F", "M"]
    f, m = sex["F"], sex["M"]
    # F: a.png and c.png (p1, p3): S1 and L1 both hit; d5 the FP over 2 images
    assert (f["lesions"], f["images"], f["patients"]) == (2, 2, 2)
    assert f["sensitivity"] == 1.0 and f["mean_iou"] == pytest.approx(0.8) and f["fp_per_image"] == 0.5
    assert f["ap50"] == 1.0 and f["froc"] == {"0.5": 1.0, "1": 1.0, "2": 1.0}
    # M: b.png (p2): S2 hit (d6), L2 missed at 0.5; d4 the FP on 1 image.
    assert (m["lesions"], m["images"], m["patients"]) == (2, 1, 1)
    assert m["sensitivity"] == 0.5 and m["mean_iou"] == pytest.approx(0.25) and m["fp_per_image"] == 1.0
    # AP (nodules S2, L2): d4 FP, d6 TP, d3 TP -> precision 0, 1/2, 2/3 -> envelope 2/3 over both halves
    assert m["ap50"] == pytest.approx(2 / 3)
    # FROC: d4 brings 1 FP/image before any hit, so at 0.5 FP/image nothing is found yet
    assert m["froc"] == {"0.5": 0.0, "1": 1.0, "2": 1.0}


def test_the_whole_split_as_a_stratum_equals_the_unstratified_metrics():
    rng = np.random.default_rng(4)
    images = [f"{k}.png" for k in range(12)]
    gt = {image: [("n" if rng.random() < 0.6 else "m", Box(*(lambda x, y, s: (x, y, x + s, y + s))(
        *rng.uniform(0, 80, 2), rng.uniform(4, 30)))) for _ in range(rng.integers(0, 3))] for image in images}
    dets = []
    for image, objects in gt.items():
        for label, box in objects:
            if rng.random() < 0.8:
                dx = rng.normal(0, 3)
                dets.append(Det(image, label, round(float(rng.uniform(0, 1)), 3),
                                Box(box.xmin + dx, box.ymin, box.xmax + dx, box.ymax)))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 80, 2)
            dets.append(Det(image, "n", round(float(rng.uniform(0, 1)), 3), Box(x, y, x + 10, y + 10)))
    patients = {image: f"p{k // 2}" for k, image in enumerate(images)}
    lesions = lesion_overlaps(gt, dets, 0.5)
    m = match(gt, dets, lesions, patients, 0.5, 0.1)
    whole = measure(m, stratify.all_images(m), bootstrap=30, rates=(0.125, 0.5, 1, 2))
    assert whole["ap50"] == pytest.approx(metrics.average_precision(gt, dets, 0.5)["mean"])
    assert whole["froc"] == pytest.approx({k: v for k, v in metrics.froc(gt, dets, 0.1, (0.125, 0.5, 1, 2)).items()
                                           if k != "mean"})
    curve = metrics.froc_curve(gt, [d for d in dets if d.score >= 0.5], 0.1)
    assert whole["sensitivity"] == pytest.approx(curve["sensitivity"][-1])
    assert whole["fp_per_image"] == pytest.approx(curve["avg_fp"][-1])
    # the same replicates as the unstratified intervals
    reference = detection_cis(gt, dets, patients, n=30, rates=(0.125, 0.5, 1, 2))
    assert whole["ci95"]["ap50"] == pytest.approx(list(reference["ap50_mean"]))
    assert whole["ci95"]["froc"]["0.5"] == pytest.approx(list(reference["froc@0.5"]))


def test_a_field_stratums_intervals_resample_its_own_patients():
    """F's intervals equal the reference loop (`bootstrap_ci`) run on F's images alone."""
    many_gt = {f"{p}_{k}.png": GT[image] for p in range(6) for k, image in enumerate(sorted(GT))}
    # copies differ (d1 dropped from even copies, d2 from every third), so replicates differ
    many_dets = [Det(f"{p}_{sorted(GT).index(d.image)}.png", d.label, d.score, d.box) for p in range(6)
                 for k, d in enumerate(D) if not (k == 0 and p % 2 == 0) and not (k == 1 and p % 3 == 0)]
    patients = {image: image.split("_")[0] + {"0": "", "1": "m", "2": "x"}[image[-5]] for image in many_gt}
    meta = {image: META[sorted(GT)[int(image.split("_")[1][0])]] for image in many_gt}
    result = evaluate_all(many_gt, many_dets, patients=patients, meta=meta,
                          options=MetricsOptions(min_score=0.5, bootstrap=40, size_bins=(), by=("sex",)))
    female = _by_name(result["strata"]["by"]["sex"]["strata"])["F"]
    own = {image for image in many_gt if meta[image]["sex"] == "F"}
    sub_gt = {image: many_gt[image] for image in own}
    sub_dets = [d for d in many_dets if d.image in own]

    def sensitivity(gt, dets):
        kept = [d for d in dets if d.score >= 0.5]
        found = metrics.match_detections(gt, kept, 0.1)
        total = sum(len(v) for v in gt.values())
        return sum(m is not None for m in found) / total if total else None

    def mean_iou(gt, dets):
        values = [lesion.best_iou for lesion in lesion_overlaps(gt, dets, 0.5)]
        return float(np.mean(values)) if values else None
    sub_patients = {image: patients[image] for image in own}
    for key, fn in (("sensitivity", sensitivity), ("mean_iou", mean_iou)):
        expected = bootstrap_ci(sub_gt, sub_dets, fn, sub_patients, n=40)
        assert expected[0] < expected[1] and female["ci95"][key] == pytest.approx(list(expected))
    assert "size" not in result["strata"]   # size_bins=() turns size strata off


def test_tertiles_numeric_bins_and_field_errors():
    lesions = lesion_overlaps(GT, D, 0.5)
    m = match(GT, D, lesions, PATIENTS, 0.5, 0.1)
    sizes, det_sizes = stratify.sizes(m, [lesion.box for lesion in lesions], [d.box for d in D], META, "px")
    assert list(sizes) == [10, 40, 8, 30]
    edges, parts = stratify.size_strata(m, sizes, det_sizes, None, "px")
    assert edges[0] == 0 and edges[-1] == float("inf") and len(parts) == 3   # tertiles of 8, 10, 30, 40
    # mm without pixel spacing: the lesions go to their own stratum, named
    _, parts = stratify.size_strata(m, *stratify.sizes(m, [lesion.box for lesion in lesions], [d.box for d in D],
                                                       {"a.png": {"pixel_spacing": "0.5,0.25"}}, "mm"), None, "mm")
    assert parts[-1].name == stratify.NO_SPACING and int(parts[-1].lesions.sum()) == 2
    assert stratify.number("045Y") == 45 and stratify.number("006M") == 0.5 and stratify.number("F") is None
    ages = {"a.png": {"age": "34"}, "b.png": {"age": "061Y"}, "c.png": {}}
    names = [s.name for s in stratify.field_strata(m, ages, "age", [0, 40, 60, 120])]
    assert names == ["0-40", "40-60", "60-120", "(empty)"]   # every bin shown, empty or not
    with pytest.raises(UserError, match=r"--by sexx: .*did you mean 'sex'"):
        stratify.field_strata(m, META, "sexx", None)
    with pytest.raises(UserError, match=r"image a.png has sex 'F', not a number"):
        stratify.field_strata(m, META, "sex", [0, 1])
    with pytest.raises(UserError, match="increasing"):
        stratify.parse_bins("0,32,16", "--size-bins")


def test_threshold_record_and_strict_json_nulls(tmp_path):
    import json
    assert operating_threshold(0.3)["source"] == "min_score"
    assert operating_threshold()["min_score"] == 0.5 and operating_threshold()["source"] == "default"
    export = tmp_path / "export"
    (export / "saved_model").mkdir(parents=True)
    (export / "saved_model" / "saved_model.pb").write_bytes(b"")
    (export / "operating_point.json").write_text(json.dumps({"min_score": 0.42, "sensitivity": 0.9, "avg_fp": 0.5,
                                                             "target_sensitivity": 0.9}))
    chosen = operating_threshold(None, str(export))
    assert (chosen["min_score"], chosen["source"]) == (0.42, "operating_point")
    assert operating_threshold(0.3, str(export))["min_score"] == 0.3    # --min-score wins
    positives_only = {image: v for image, v in GT.items() if v}
    result = evaluate_all(positives_only, [d for d in D if d.image in positives_only], options=OPTIONS, meta=META)
    json.dumps(result, allow_nan=False)
    assert result["image_level"]["auc"] is None
    assert result["nulls"]["image_level.auc"] == "no image without findings in the split"


def _noisy_detections(tiny_nih, dataset, path, keep=lambda score: True):
    """Every val GT box found shifted, with a random score, plus a random false positive per image."""
    import csv
    import os
    val = open(os.path.join(dataset, "splits", "val.txt")).read().split()
    rows = [r for r in list(csv.reader(open(tiny_nih["bbox_csv"])))[1:] if r[0] in val]
    rng = np.random.default_rng(1)
    found = []
    for image, label, x, y, w, h in rows:
        x, y, w, h = map(float, (x, y, w, h))
        dx = float(rng.normal(0, min(3, w / 4)))
        found.append([image, label, f"{rng.uniform(0, 1):.6f}", f"{x + dx:.2f}", f"{y:.2f}", f"{x + w + dx:.2f}",
                      f"{y + h:.2f}"])
    for image in val:
        found.append([image, "Nodule", f"{rng.uniform(0, 1):.6f}", "1.00", "1.00", "9.00", "9.00"])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "score", "xmin", "ymin", "xmax", "ymax"])
        writer.writerows(r for r in found if keep(float(r[2])))
    return str(path)


def test_min_score_gives_the_prefiltered_numbers_and_keeps_ap(tiny_nih, tiny_dataset, tmp_path):
    """The issue's rule: metrics on every detection with --min-score 0.3 give exactly the
    threshold-dependent numbers of the same command on the detections >= 0.3, and the AP/FROC of
    the command without --min-score; --model's operating point is the threshold when no
    --min-score is given."""
    import json
    from medtfod.cli import main
    full = _noisy_detections(tiny_nih, tiny_dataset, tmp_path / "full.csv")
    cut = _noisy_detections(tiny_nih, tiny_dataset, tmp_path / "cut.csv", keep=lambda score: score >= 0.3)
    assert len(open(cut).readlines()) < len(open(full).readlines())

    def run(name, detections, *extra):
        out = tmp_path / f"{name}.json"
        assert main(["metrics", "--detections", detections, "--ground-truth", tiny_dataset, "--split", "val",
                     "--out", str(out), "--bootstrap", "0", "--size-bins", "0,12,inf", *extra]) == 0
        return json.loads(out.read_text())
    at, pre, plain = run("at", full, "--min-score", "0.3"), run("pre", cut, "--min-score", "0.3"), run("plain", full)
    for key in ("iobb", "confusion", "at_threshold"):
        assert at[key] == pre[key], key
    for key in ("sensitivity", "specificity", "threshold"):
        assert at["image_level"][key] == pre["image_level"][key], key
    for mine, theirs in zip(at["strata"]["size"]["strata"], pre["strata"]["size"]["strata"]):
        assert [mine[k] for k in ("sensitivity", "fp_per_image", "mean_iou")] == \
            [theirs[k] for k in ("sensitivity", "fp_per_image", "mean_iou")]
    assert at["ap"] == plain["ap"] and at["froc"] == plain["froc"] and at["image_level"]["auc"] == plain["image_level"]["auc"]
    assert at["at_threshold"] != plain["at_threshold"]     # 0.5 (the default) is another threshold
    assert (at["threshold"]["source"], plain["threshold"]["source"], plain["threshold"]["min_score"]) == \
        ("min_score", "default", 0.5)
    export = tmp_path / "export"
    (export / "saved_model").mkdir(parents=True)
    (export / "saved_model" / "saved_model.pb").write_bytes(b"")
    (export / "operating_point.json").write_text(json.dumps({"min_score": 0.3, "sensitivity": 0.9, "avg_fp": 0.5,
                                                             "target_sensitivity": 0.9}))
    calibrated = run("calibrated", full, "--model", str(export))
    assert calibrated["threshold"]["source"] == "operating_point" and calibrated["at_threshold"] == at["at_threshold"]


def test_metrics_input_and_output_errors(tiny_nih, tiny_dataset, tmp_path, capsys):
    from medtfod.cli import main
    full = _noisy_detections(tiny_nih, tiny_dataset, tmp_path / "full.csv")
    lines = open(full).read().splitlines()
    image = lines[1].split(",")[0]
    bad = tmp_path / "bad.csv"
    args = ["metrics", "--ground-truth", tiny_dataset, "--split", "val", "--bootstrap", "0"]
    for row, message in ((f"{image},Nodle,0.5,1,1,9,9", r"bad.csv:3: label 'Nodle' is not a class of the dataset "
                                                         r"\(.*\).*did you mean 'Nodule'"),
                         ("zz.png,Mass,0.5,1,1,9,9", r"bad.csv:3: image 'zz.png' is not among the \d+ images")):
        bad.write_text("\n".join([lines[0], lines[1], row]) + "\n")
        assert main(args + ["--detections", str(bad), "--out", str(tmp_path / "m.json")]) == 1
        assert __import__("re").search(message, capsys.readouterr().err), message
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"my": "notes"}\n')
    assert main(args + ["--detections", full, "--out", str(foreign)]) == 1
    assert "is not a metrics file medtfod wrote" in capsys.readouterr().err
    assert foreign.read_text() == '{"my": "notes"}\n'
    ours = tmp_path / "m.json"
    assert main(args + ["--detections", full, "--out", str(ours)]) == 0
    assert main(args + ["--detections", full, "--out", str(ours), "--by", "sex"]) == 0   # over its own output
    import json
    strata = json.loads(ours.read_text())["strata"]
    assert strata["by"]["sex"]["strata"]    # the tiny NIH set's Data_Entry has a gender column


def test_a_split_without_lesions_and_replicates_in_blocks(monkeypatch):
    import json
    from medtfod.evaluation import strata
    negatives = {"c.png": [], "d.png": []}
    result = evaluate_all(negatives, [Det("c.png", "n", 0.8, Box(0, 0, 10, 10))], label_names=["n"],
                          options=MetricsOptions(bootstrap=10))
    json.dumps(result, allow_nan=False)
    at = result["at_threshold"]
    assert (at["lesions"], at["false_positives"], at["fp_per_image"], at["sensitivity"]) == (0, 1, 0.5, None)
    assert result["strata"]["size"]["strata"] == [] and result["nulls"]["at_threshold.sensitivity"]
    # the bootstrap in blocks of replicates gives the same intervals as in one block
    whole = evaluate_all(GT, D, patients=PATIENTS, meta=META, options=MetricsOptions(min_score=0.5, bootstrap=30,
                                                                                    by=("sex",)))["strata"]
    monkeypatch.setattr(strata, "BLOCK_CELLS", 7)
    blocks = evaluate_all(GT, D, patients=PATIENTS, meta=META, options=MetricsOptions(min_score=0.5, bootstrap=30,
                                                                                     by=("sex",)))["strata"]
    assert blocks == whole


def test_options_are_checked_as_the_flags_are():
    assert MetricsOptions(size_bins="0,16,inf", by="sex").size_bins == (0, 16, float("inf"))
    assert MetricsOptions(by="sex").by == ("sex",)
    for bad, message in ((dict(min_score=1.5), "min_score=1.5: give a number from 0"),
                         (dict(min_score=float("nan")), "min_score=nan"),
                         (dict(size_bins=(16, 0)), "increasing"), (dict(size_bins="0,32,"), "numbers"),
                         (dict(size_bins=""), "numbers"), (dict(size_bins=(-5, 32)), "not below 0"),
                         (dict(by=("age", "age:0,50,120")), "'age' is given twice"),
                         (dict(size_unit="cm"), "'px' or 'mm'"), (dict(bootstrap=-1), "bootstrap=-1")):
        with pytest.raises(UserError, match=message):
            MetricsOptions(**bad)


def test_open_bins_uncovered_sizes_one_patient_and_natural_order():
    import json
    meta = {"a.png": {"age": "70", "tirads": "4a"}, "b.png": {"age": "30", "tirads": "5"},
            "c.png": {"age": "50", "tirads": "3"}}
    result = evaluate_all(GT, D, patients=PATIENTS, meta=meta, options=MetricsOptions(
        min_score=0.5, bootstrap=10, size_bins=(9, 20), by=("age:0,50,inf", "tirads")))
    json.dumps(result, allow_nan=False)
    age = result["strata"]["by"]["age"]
    assert age["bins"] == [0, 50, None] and result["nulls"]["strata.by.age.bins[2]"].startswith("an open end")
    assert [s["name"] for s in result["strata"]["by"]["tirads"]["strata"]] == ["3", "4a", "5"]
    # one patient in a stratum: no interval, and the reason
    assert age["strata"][0]["ci95"]["sensitivity"] == [None, None]
    assert "fewer than 2 patients" in result["nulls"]["strata.by.age.strata[0].ci95.sensitivity"]
    # sizes outside [9, 20): S2 (8 px), L1 (40) and L2 (30) go to 'outside the bins', not lost
    size = {s["name"]: s["lesions"] for s in result["strata"]["size"]["strata"]}
    assert size == {"9-20 px": 1, stratify.OUTSIDE: 3}
    with pytest.raises(UserError, match="--size-unit mm: no image with a lesion has a pixel_spacing"):
        evaluate_all(GT, D, meta=META, options=MetricsOptions(bootstrap=0, size_unit="mm"))


def test_metrics_warns_and_report_refuses_a_foreign_out(tiny_nih, tiny_dataset, tmp_path, capsys):
    from medtfod.cli import main
    full = _noisy_detections(tiny_nih, tiny_dataset, tmp_path / "full.csv")
    header = tmp_path / "header.csv"
    header.write_text(open(full).readline())
    assert main(["metrics", "--detections", str(header), "--ground-truth", tiny_dataset, "--split", "val",
                 "--out", str(tmp_path / "h.json"), "--bootstrap", "0"]) == 0
    assert "holds no detection: every lesion counts as missed" in capsys.readouterr().out
    assert main(["metrics", "--detections", full, "--ground-truth", tiny_dataset, "--out", str(tmp_path / "a.json"),
                 "--bootstrap", "0"]) == 0
    assert "no --split: every image of the dataset is evaluated" in capsys.readouterr().out
    (tmp_path / "plots.png").write_text("x")
    assert main(["metrics", "--detections", full, "--ground-truth", tiny_dataset, "--split", "val", "--out",
                 str(tmp_path / "p.json"), "--plots", str(tmp_path / "plots.png")]) == 1
    assert "is a file; give a folder" in capsys.readouterr().err and not (tmp_path / "p.json").exists()
    high = tmp_path / "high.csv"
    lines = open(full).read().splitlines()
    high.write_text(lines[0] + "\n" + lines[1].replace(lines[1].split(",")[2], "1.5", 1) + "\n")
    assert main(["metrics", "--detections", str(high), "--ground-truth", tiny_dataset, "--split", "val",
                 "--out", str(tmp_path / "x.json")]) == 1
    assert "high.csv:2: score '1.5' is not a score from 0 to 1" in capsys.readouterr().err
