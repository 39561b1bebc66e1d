"""Real data: SSD-MobileNet V2 FPNLite trained from scratch on the DDTI thyroid ultrasound set.

    .venv/bin/python benchmarks/real_ddti.py [--steps 1500] [--image-size 256] [--batch-size 8]
                                             [--variants baseline,us] [--seed 0]

Needs ../shared/data (the DDTI XMLs in thyroid_ddti/xml, the 480 JPEGs in thyroid_ddti_full/images;
see its SOURCES.md); exits with a message when it is absent. Converts DDTI with the default
patient-level split (train 0.8 / val 0.2, duplicate-aware), then for each variant renders a
config, trains from scratch (no pretrained weights are reachable here), exports and predicts on
the held-out val patients at every score. At the defaults, `baseline` renders exactly
`medtfod config --recipe cpu-scratch` (batch 8, 256 px, 1,500 steps, rate 0.04, warm-up 375, and
render's from-scratch batch-norm decay 0.99). Variants: `baseline` (the template's
augmentation), `us` (`--augment-preset us`), `zoo-bn` (the baseline with the zoo's batch-norm
decay 0.997 put back).
`--positive-fraction` has nothing to balance on DDTI: every converted image has a nodule.

Prints per variant, on held-out patients, with 95% patient-bootstrap intervals: AP@0.5, AP@0.1,
FROC mean, the mean per-lesion best IoU at score >= 0.3, and the top-1 mean IoU (each image's
highest-scoring detection against its best GT box, 0 without a detection: the measure of the
seed write-up, which regressed one box per image), with the train time; then each variant's
deltas against the first, with paired patient-bootstrap intervals for the IoU measures. Writes
the first variant's drawn val image to .medtfod-bench/real_ddti/. About 16 min per variant at the
defaults on 2 CPU cores; not part of the tests. Trained variants are reused (delete the folder to
train again).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench_common import ci, trained_export  # noqa: E402 (benchmarks/, the script's own folder)
BENCH = os.path.join(ROOT, ".medtfod-bench", "real_ddti")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
DRAW_SCORE = 0.3
ZOO_BN_DECAY = {  # the zoo's, meant for 50k-step fine-tuning; `config` renders 0.99 from scratch
    "model.ssd.feature_extractor.conv_hyperparams.batch_norm.decay": "0.997",
    "model.ssd.box_predictor.weight_shared_convolutional_box_predictor.conv_hyperparams.batch_norm.decay": "0.997",
}
# name -> RenderOptions fields; "zoo-bn" puts back the zoo's batch-norm decay
VARIANTS = {"baseline": {}, "us": {"augment_preset": "us"}, "zoo-bn": {"overrides": ZOO_BN_DECAY}}


def top1_ious(gt, dets):
    """{image: IoU of its highest-scoring detection with its best GT box (0 without one)} over
    the images that have GT boxes."""
    from medtfod.core.boxes import iou
    best = {}
    for d in dets:
        if d.image not in best or d.score > best[d.image].score:
            best[d.image] = d
    return {image: (max(iou(box, best[image].box) for _, box in objects) if image in best else 0.0)
            for image, objects in gt.items() if objects}


def lesion_ious(gt, dets, min_score):
    """{image: [best IoU of each of its lesions at min_score]}."""
    from medtfod.evaluation.lesions import lesion_overlaps
    out = {}
    for lesion in lesion_overlaps(gt, dets, min_score):
        out.setdefault(lesion.image, []).append(lesion.best_iou)
    return out


def patient_bootstrap(values_by_image, patients, n=1000, seed=0, paired=None):
    """(mean, low, high) of the mean over the values of all images, resampling patients; with
    `paired` (another {image: values}), of the difference of the two means."""
    ids = sorted({patients[i] for i in values_by_image})
    images_of = {p: [i for i in values_by_image if patients[i] == p] for p in ids}

    def mean(chosen, table):
        values = [v for p in chosen for i in images_of[p] for v in np.atleast_1d(table[i])]
        return float(np.mean(values)) if values else np.nan

    def stat(chosen):
        return mean(chosen, values_by_image) - (mean(chosen, paired) if paired else 0.0)
    rng = np.random.default_rng(seed)
    found = [stat(rng.choice(ids, len(ids))) for _ in range(n)]
    low, high = np.nanpercentile(found, [2.5, 97.5])
    return stat(ids), float(low), float(high)


def run_variant(name, data, args):
    import medtfod
    from medtfod import ExportedModel, MetricsOptions, RenderOptions
    out = os.path.join(BENCH, f"{name}_{args.steps}steps_{args.image_size}px_seed{args.seed}")
    exported = os.path.join(out, "exported")
    config = os.path.join(out, "model", "pipeline.config")
    if not os.path.isfile(os.path.join(exported, "saved_model", "saved_model.pb")):
        config = medtfod.render_config("ssd_mobilenet_v2_fpnlite_320", data, config,
                                       RenderOptions(steps=args.steps, batch_size=args.batch_size,
                                                     image_size=args.image_size, learning_rate=args.learning_rate,
                                                     warmup_steps=max(1, args.steps // 4),
                                                     **VARIANTS[name]))
    seconds = trained_export(config, out)
    model = ExportedModel(exported)
    predictions = model.predict(data, split="val", min_score=0)
    metrics = medtfod.evaluate(data, "val", predictions, options=MetricsOptions(min_score=DRAW_SCORE, bootstrap=1000))
    from medtfod.data.readers.detections import as_csv_detections
    dets = as_csv_detections(predictions)
    return {"name": name, "out": out, "metrics": metrics, "dets": dets, "predictions": predictions, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=0.04)
    parser.add_argument("--variants", default="baseline,us")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(SHARED, "thyroid_ddti")):
        print(f"{SHARED} is not here: this benchmark needs the real DDTI data (developers' checkout only)")
        return 1
    from medtfod import ConvertOptions, Dataset
    data_dir = os.path.join(BENCH, f"data_seed{args.seed}")
    if not os.path.isfile(os.path.join(data_dir, "dataset.json")):
        Dataset.convert("ddti", os.path.join(SHARED, "thyroid_ddti_full", "images"), data_dir,
                        xml_dir=os.path.join(SHARED, "thyroid_ddti", "xml"), options=ConvertOptions(seed=args.seed))
    data = Dataset(data_dir)
    gt, patients = data.ground_truth("val"), data.patients("val")
    print(f"DDTI: {len(data.images('train'))} train images, held out {len(gt)} val images of "
          f"{len(set(patients.values()))} patients, {sum(len(v) for v in gt.values())} nodules")
    runs = [run_variant(name, data, args) for name in args.variants.split(",")]
    print(f"\nSSD-MobileNet V2 FPNLite from scratch, {args.image_size} px, batch {args.batch_size}, {args.steps} steps; "
          f"val (held-out patients), 95% patient-bootstrap CIs")
    print(f"{'variant':<10} {'train min':>9} {'AP@0.5':>22} {'AP@0.1':>7} {'FROC mean':>22} "
          f"{'lesion IoU @0.3':>22} {'top-1 mean IoU':>22}")
    rows = {}
    for r in runs:
        m = r["metrics"]
        top1 = top1_ious(gt, r["dets"])
        rows[r["name"]] = {"top1": top1, "lesion": lesion_ious(gt, r["dets"], DRAW_SCORE)}
        print(f"{r['name']:<10} {r['seconds'] / 60:>9.1f} {ci(m['ap']['0.5']['mean'], *m['ci95']['ap50_mean']):>22} "
              f"{m['ap']['0.1']['mean']:>7.3f} {ci(m['froc']['mean'], *m['ci95']['froc_mean']):>22} "
              f"{ci(m['at_threshold']['mean_iou'], *m['at_threshold']['ci95']['mean_iou']):>22} "
              f"{ci(*patient_bootstrap(top1, patients)):>22}")
    base = runs[0]["name"]
    for r in runs[1:]:
        d_top1 = patient_bootstrap(rows[r["name"]]["top1"], patients, paired=rows[base]["top1"])
        d_lesion = patient_bootstrap(rows[r["name"]]["lesion"], patients, paired=rows[base]["lesion"])
        d_ap = r["metrics"]["ap"]["0.5"]["mean"] - runs[0]["metrics"]["ap"]["0.5"]["mean"]
        print(f"{r['name']} - {base}: AP@0.5 {d_ap:+.3f}; lesion IoU {ci(*d_lesion)}; top-1 mean IoU {ci(*d_top1)} "
              "(paired patient bootstrap)")
    first = runs[0]
    shown = next(p for p in first["predictions"] if gt[p.name])
    import dataclasses
    drawn = dataclasses.replace(shown, detections=list(shown.detections[:3]), box_masks=None)   # best first
    path = os.path.join(BENCH, f"val_{first['name']}.png")
    drawn.save(path, ground_truth=gt[shown.name])
    print(f"drawn: {path} ({shown.name}: its 3 highest-scoring detections, ground truth in white)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
