"""Fold ensemble against the best single fold model, on the demo's synthetic data.

    .venv/bin/python benchmarks/cv_ensemble.py [--folds 3] [--steps 600] [--images 300]

Generates the demo's synthetic set (cached in .medtfod-bench/cv/), converts it with
`--folds K --split test=0.2`, runs `medtfod cv` with the demo's training settings (evaluating
every 200 steps, best by AP@0.5), then detects on the held-out `test` split (which no fold
model saw) with: each fold model alone, the best of them (by its out-of-fold AP@0.5: chosen
without looking at test), that model with flip TTA, the WBF ensemble of all fold models, and
the ensemble with flip TTA. Prints AP@0.5 (mean over classes), FROC mean (CPM) and image AUC
on `test` with 95% patient-bootstrap intervals, and the detect time of each, against the best
single model as the baseline (ratios). Minutes on 2 CPU cores; not part of the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BENCH = os.path.join(ROOT, ".medtfod-bench", "cv")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()

    from medtfod.data import demo_data, manifest
    from medtfod.cli import main as cli
    from medtfod.demo import DEMO_OVERRIDES, DEMO_TRAINING, MODEL
    from medtfod.inference.detect import DetectOutputs, detect
    from medtfod.inference.predictor import PredictOptions
    from medtfod.data.readers.detections import read_detections_csv, read_ground_truth
    from medtfod.evaluation.evaluate import MetricsOptions, evaluate_all

    root = os.path.join(BENCH, f"{args.images}img_{args.folds}folds_{args.steps}steps")
    data_dir, cv_dir = os.path.join(root, "data"), os.path.join(root, "cv")
    if not os.path.isfile(os.path.join(data_dir, "dataset.json")):
        source = demo_data.generate(os.path.join(root, "source"), num_images=args.images, size=256, seed=0)
        assert cli(["convert", "nih", "--bbox-csv", source["bbox_csv"], "--images", source["images"],
                    "--data-entry", source["data_entry"], "--label-map", source["label_map"], "--out", data_dir,
                    "--folds", str(args.folds), "--split", "test=0.2", "-q"]) == 0
    overrides = [a for k, v in DEMO_OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    started = time.time()
    assert cli(["cv", "--data", data_dir, "--model", MODEL, "--out", cv_dir, "--steps", str(args.steps),
                "--batch-size", str(DEMO_TRAINING["batch_size"]), "--image-size", str(DEMO_TRAINING["image_size"]),
                "--learning-rate", str(DEMO_TRAINING["learning_rate"]),
                "--warmup-steps", str(int(args.steps * DEMO_TRAINING["warmup_fraction"])),
                "--augment", "random_horizontal_flip", "--eval-every", "200", "--select-by", "ap50", "-q",
                *overrides]) == 0
    print(f"cv: {time.time() - started:.0f} s (0 when every fold was done earlier)")

    result = json.load(open(os.path.join(cv_dir, "metrics.json")))
    folds = result["folds"]
    best = max(folds, key=lambda f: result["per_fold"][f]["summary"]["ap50_mean"] or 0)
    exports = {f: os.path.join(cv_dir, f, "exported") for f in folds}
    gt = read_ground_truth(data_dir, "test")
    patients = manifest.load(data_dir).patients("test")
    runs = [(f"fold model {f}" + (" (best out-of-fold)" if f == best else ""), [exports[f]], ()) for f in folds]
    runs += [(f"best fold {best} + hflip TTA", [exports[best]], ("hflip",)),
             (f"WBF ensemble of {len(folds)} folds", list(exports.values()), ()),
             (f"WBF ensemble of {len(folds)} folds + hflip TTA", list(exports.values()), ("hflip",))]
    rows = []
    for name, models, tta in runs:
        out = os.path.join(root, "test_detections", name.replace(" ", "_").replace("(", "").replace(")", ""))
        t = time.time()
        detect(models if len(models) > 1 else models[0], out, dataset=data_dir, split="test",
               options=PredictOptions(min_score=0.0, tta=tta, fuse="wbf" if len(models) > 1 or tta else None),
               outputs=DetectOutputs(draw=False, quiet=True))
        seconds = time.time() - t
        metrics = evaluate_all(gt, read_detections_csv(os.path.join(out, "detections.csv")), patients=patients,
                               options=MetricsOptions(bootstrap=200))
        rows.append((name, metrics, seconds))
    baseline = next(r for r in rows if "best out-of-fold" in r[0])

    def cell(value, ci):
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if value is not None and ci[0] is not None else "n/a"
    print(f"\ntest split: {len(gt)} images, {len(set(patients.values()))} patients (no fold model saw them)")
    print(f"{'model':<44} {'AP@0.5 [95% CI]':>24} {'FROC mean [95% CI]':>24} {'AUC [95% CI]':>24} "
          f"{'detect s':>9} {'vs best':>8}")
    for name, m, seconds in rows:
        print(f"{name:<44} {cell(m['ap']['0.5']['mean'], m['ci95']['ap50_mean']):>24} "
              f"{cell(m['froc']['mean'], m['ci95']['froc_mean']):>24} "
              f"{cell(m['image_level']['auc'], m['ci95']['auc']):>24} {seconds:>9.1f} "
              f"{seconds / baseline[2]:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
