"""Small lesions on big images: downscaling vs fitted anchors vs tiling (issue 23).

    .venv/bin/python benchmarks/small_lesions.py [--arms downscale,fit-anchors,tiles] [--work DIR]
        [--patients 100] [--size 2048] [--steps 600] [--tile 320] [--tile-keep-empty 0.1]
        [--contrast 40,80] [--bootstrap 1000] [--seed 0]

Generates (once, seeded: `lesion_images.py`) `--patients` patients of 2-3 grey `--size` px PNGs
with 0-3 round lesions of 8-24 px each (`--contrast`: grey levels above the background, whose
noise has sigma 8 and whose texture has lesion-sized spots of amplitude 7 and 14;
the default 40-80 is plain to see at full resolution, 14-36 is faint), converts them with `medtfod convert csv` (patient
split train 0.7 / val 0.3), and trains SSD-MobileNet V2 FPNLite from scratch with `--recipe
cpu-scratch` at a 320 px input and `--steps` steps (batch 8, rate 0.04, a quarter warm-up) in
three arms that differ only in the method:

  downscale    whole images, shrunk to the 320 px input (a 16 px lesion becomes 2.5 px)
  fit-anchors  the same with `config --fit-anchors` (anchors fitted to the training boxes)
  tiles        `convert --tile 320` (the train split cut into 320 px tiles at native resolution,
               `--tile-keep-empty` of the tiles without lesions kept) and `detect --tile 320`
  tiles-fit    tiles with `config --fit-anchors` (the template's smallest anchor, 32 px, matches
               few 8-24 px lesions at IoU 0.5; `config` warns of it)

Every arm is measured on the same held-out val patients' whole images (detections at every
score): per-lesion sensitivity at 1 FP/image and the FROC mean (1/8 ... 8 FP/image), FROC hits
at IoU 0.1, with 95% patient-bootstrap intervals (the same replicates for every arm), over all
lesions and by lesion size (the box's longer side: 8-12, 12-18, 18-24 px). In a size bin the
false positives are all of them (every unmatched detection, whatever its size), so a bin's
sensitivity at 1 FP/image is at the same threshold as the overall one; a detection matched to a
lesion of another bin counts for neither. Prints the table and the train (and detect) time per
arm, and writes it all to `--work`/results[_contrastLOW-HIGH].json. Each arm's model and detections are kept under
`--work`; a rerun skips what is done (delete an arm's folder to run it again). About 10-15 min
per arm on 2 shared CPU cores at the defaults; not part of the tests.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import lesion_images  # noqa: E402 (benchmarks/, the script's own folder)
from bench_common import ci, trained_export  # noqa: E402

MODEL = "ssd_mobilenet_v2_fpnlite_320"
INPUT = 320
ARMS = ("downscale", "fit-anchors", "tiles", "tiles-fit")
BINS = (0.0, 12.0, 18.0, math.inf)   # longer side in px; the generator's lesions are 8-24 px
BIN_NAMES = ("8-12 px", "12-18 px", "18-24 px")
FRACTIONS = {"train": 0.7, "val": 0.3}
IOU_FROC = 0.1
THRESHOLD = 0.5   # only for the lesion records `strata.match` takes; FROC uses every score


def dataset(work: str, images: str, table: str, args, tiles: bool):
    """The converted set (whole images, or the train split tiled), converted once."""
    from medtfod import ConvertOptions, Dataset
    out = os.path.join(work, (f"data_tiles{args.tile}_keep{args.tile_keep_empty:g}" if tiles else "data_whole") + args.tag)
    if not os.path.isfile(os.path.join(out, "dataset.json")):
        extra = {}
        if tiles:
            from medtfod.data.tiles import TileOptions
            extra = dict(tile=TileOptions(args.tile, keep_empty=args.tile_keep_empty))
        Dataset.convert("csv", images, out, table=table, columns=lesion_images.COLUMNS,
                        options=ConvertOptions(fractions=dict(FRACTIONS), seed=args.seed, **extra))
    return Dataset(out)


def run_arm(arm: str, data, args, work: str) -> dict:
    """Train (once) and detect (once) on the val split's whole images; returns the detections'
    path and the times."""
    import medtfod
    from medtfod import ExportedModel, PredictOptions, RenderOptions
    rate = "" if args.learning_rate is None else f"_lr{args.learning_rate:g}"
    out = os.path.join(work, f"{arm}_{args.steps}steps{rate}{args.tag}")
    config = os.path.join(out, "model", "pipeline.config")
    if not os.path.isfile(os.path.join(out, "exported", "saved_model", "saved_model.pb")):
        medtfod.render_config(MODEL, data, config, RenderOptions(recipe="cpu-scratch", image_size=INPUT,
                                                                 steps=args.steps, learning_rate=args.learning_rate, fit_anchors=arm in ("fit-anchors", "tiles-fit")))
    seconds = trained_export(config, out)
    detected = os.path.join(out, "val_detect")
    timing = os.path.join(out, "detect_seconds.json")
    if not os.path.isfile(os.path.join(detected, "detections.csv")):
        started = time.time()
        options = PredictOptions(tile=args.tile) if arm.startswith("tiles") else None
        predictions = ExportedModel(os.path.join(out, "exported")).predict(data, split="val", min_score=0,
                                                                           options=options)
        predictions.save(detected, draw=False)
        with open(timing, "w") as f:
            json.dump({"seconds": time.time() - started}, f)
    with open(timing) as f:
        detect_seconds = json.load(f)["seconds"]
    return {"train_seconds": seconds, "detect_seconds": detect_seconds,
            "detections": os.path.join(detected, "detections.csv")}


def measure(data, detections: str, n: int) -> dict:
    """{stratum: {lesions, sensitivity_at_1fp, froc_mean, froc, ci95}} on the val split."""
    from medtfod.data.readers.detections import as_csv_detections
    from medtfod.evaluation import strata
    from medtfod.evaluation.lesions import lesion_overlaps
    from medtfod.evaluation.matching import FROC_RATES, threshold_key
    gt = data.ground_truth("val")
    dets = as_csv_detections(detections, labels=data.label_names, images=gt)
    lesions = lesion_overlaps(gt, dets, THRESHOLD)
    m = strata.match(gt, dets, lesions, data.patients("val"), THRESHOLD, IOU_FROC)
    size = np.array([max(lesion.box.width, lesion.box.height) for lesion in lesions], float)
    every, fps = np.ones(len(m.images), bool), np.ones(len(dets), bool)
    parts = [strata.Stratum("all", every, np.ones(len(lesions), bool), fps, every)]
    for name, low, high in zip(BIN_NAMES, BINS, BINS[1:]):
        inside = (size >= low) & (size < high)
        shown = np.zeros(len(m.images), bool)
        shown[m.lesion_image[inside]] = True
        parts.append(strata.Stratum(name, every, inside, fps, every, shown))
    keys = [f"froc@{threshold_key(r)}" for r in FROC_RATES]
    result = {}
    for s in parts:
        point = strata.measure(m, s, bootstrap=0, rates=FROC_RATES)
        found = strata.replicates(m, s, n, rates=FROC_RATES)
        froc_mean = np.mean([found[k] for k in keys], axis=0)

        def interval(values):
            values = values[~np.isnan(values)]
            return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) else [None, None]
        result[s.name] = {"lesions": point["lesions"], "images_with_lesions": point["images"],
                          "froc": point["froc"], "sensitivity_at_1fp": point["froc"]["1"],
                          "froc_mean": float(np.mean(list(point["froc"].values()))),
                          "ci95": {"sensitivity_at_1fp": interval(found["froc@1"]), "froc_mean": interval(froc_mean)}}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "medtfod-small-lesions"))
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--tile", type=int, default=INPUT)
    parser.add_argument("--tile-keep-empty", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="instead of the cpu-scratch recipe's 0.04 (fitted anchors on the tiles diverged at it)")
    parser.add_argument("--contrast", default="40,80", help="LOW,HIGH grey levels above the background")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prepare", action="store_true", help="only generate the images and convert them (both ways)")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    try:
        contrasts = tuple(float(v) for v in args.contrast.split(","))
    except ValueError:
        contrasts = ()
    if len(contrasts) != 2 or not 0 < contrasts[0] <= contrasts[1]:
        parser.error(f"--contrast {args.contrast!r}: give LOW,HIGH grey levels, 0 < LOW <= HIGH")
    work = os.path.abspath(args.work)
    args.tag = "" if contrasts == (14.0, 36.0) else f"_contrast{contrasts[0]:g}-{contrasts[1]:g}"  # 14-36: the first run's
    images = os.path.join(work, f"images_{args.patients}p_{args.size}px_seed{args.seed}{args.tag}")
    plan = lesion_images.plan(args.patients, args.size, args.seed, contrasts=contrasts)
    table = lesion_images.write(images, plan, args.size, args.seed)
    print(f"{len(plan)} images of {args.size} px, {args.patients} patients, "
          f"{sum(len(i.lesions) for i in plan)} lesions, {sum(not i.lesions for i in plan)} images without one: {images}")
    results = {"setup": {k: v for k, v in vars(args).items() if k not in ("arms", "work", "tag")}, "arms": {}}
    whole = dataset(work, images, table, args, tiles=False)
    if args.prepare:
        dataset(work, images, table, args, tiles=True)
        print(f"prepared: {work}")
        return 0
    for arm in arms:
        data = dataset(work, images, table, args, tiles=True) if arm.startswith("tiles") else whole
        if sorted(data.ground_truth("val")) != sorted(whole.ground_truth("val")):
            raise SystemExit(f"{arm}: its val split differs from the whole-image dataset's; they must hold the same images")
        with open(os.path.join(data.path, "report.json")) as f:
            tiles = json.load(f)["splits"]["train"].get("tiles")
        print(f"{arm}: {len(data.images('train'))} training images" + (
            f", cut into {tiles['tiles']} tiles of {tiles['size']} px ({tiles['without_boxes']} without a lesion)"
            if tiles else ""))
        run = run_arm(arm, data, args, work)
        results["arms"][arm] = {**run, "train_images": len(data.images("train")), "train_tiles": tiles,
                                "metrics": measure(whole, run["detections"], args.bootstrap)}
    gt = whole.ground_truth("val")
    results["val"] = {"images": len(gt), "patients": len(set(whole.patients("val").values())),
                      "lesions": sum(len(v) for v in gt.values())}
    print(f"\nSSD-MobileNet V2 FPNLite from scratch, {INPUT} px input, batch 8, {args.steps} steps, rate "
          f"{args.learning_rate or 0.04:g}; val: "
          f"{results['val']['images']} whole {args.size} px images of {results['val']['patients']} held-out patients, "
          f"{results['val']['lesions']} lesions; 95% patient-bootstrap CIs ({args.bootstrap} replicates)")
    print(f"{'arm':<12} {'lesions':<9} {'n':>4} {'sensitivity @ 1 FP/image':>26} {'FROC mean':>22} {'train min':>9} "
          f"{'detect min':>10}")
    for arm, r in results["arms"].items():
        for k, (name, m) in enumerate(r["metrics"].items()):
            times = f"{r['train_seconds'] / 60:>9.1f} {r['detect_seconds'] / 60:>10.1f}" if k == 0 else ""
            print(f"{arm if k == 0 else '':<12} {name:<9} {m['lesions']:>4} "
                  f"{ci(m['sensitivity_at_1fp'], *m['ci95']['sensitivity_at_1fp']):>26} "
                  f"{ci(m['froc_mean'], *m['ci95']['froc_mean']):>22} {times}")
    rate = "" if args.learning_rate is None else f"_lr{args.learning_rate:g}"
    path = os.path.join(work, f"results{rate}{args.tag}.json")
    with open(path + ".part", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".part", path)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
