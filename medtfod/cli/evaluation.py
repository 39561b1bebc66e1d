"""`medtfod calibrate`, `metrics` and `report`: the evaluation commands; thin, like the rest of the CLI."""
from __future__ import annotations

import json
import os

from .common import FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, OPEN_FRACTION, POSITIVE, library_log_in, quiet_options


def cmd_calibrate(args) -> int:
    from ..evaluation.calibrate import choose_threshold, describe, write_operating_point
    from ..inference.detect import export_dir as export_dir_of, split_detections
    from ..core.fence import check_outputs
    from ..evaluation.metrics import read_ground_truth
    export_dir = export_dir_of(args.model)
    check_outputs({"--model": export_dir}, {"--dataset": args.dataset, "--detections": args.detections})
    gt = read_ground_truth(args.dataset, args.split)
    with library_log_in(export_dir, args):
        dets = split_detections(export_dir, args.dataset, args.split, gt, args.detections, quiet=args.quiet)
    point = choose_threshold(gt, dets, sensitivity=args.sensitivity, fp_per_image=args.fp_per_image, iou=args.iou)
    path, record = write_operating_point(export_dir, point, target_sensitivity=args.sensitivity,
                                         target_fp_per_image=args.fp_per_image, iou=args.iou,
                                         dataset=os.path.abspath(args.dataset), split=args.split, images=len(gt),
                                         boxes=sum(len(v) for v in gt.values()))
    print(f"operating point: {describe(record)}")
    print(f"written to {path}; medtfod detect --model {export_dir} now uses it unless --min-score is given")
    return 0


def cmd_metrics(args) -> int:
    from ..core import atomic
    from ..evaluation.metrics import evaluate_all, read_detections_csv, read_ground_truth
    from ..data import manifest
    from ..evaluation.plots import format_table, write_plots
    from ..core.fence import check_outputs
    check_outputs({"--out": args.out, "--plots": args.plots},
                  {"--detections": args.detections, "--ground-truth": args.ground_truth})
    gt = read_ground_truth(args.ground_truth, args.split)
    dets = read_detections_csv(args.detections)
    patients = manifest.load(args.ground_truth).patients(args.split)
    label_map = os.path.join(args.ground_truth, "label_map.pbtxt")
    names = None
    if os.path.isfile(label_map):
        from ..core.labelmap import read_label_map
        names = read_label_map(label_map).names
    result = evaluate_all(gt, dets, patients=patients, iou_froc=args.iou_froc, bootstrap=args.bootstrap,
                          label_names=names)
    atomic.write_file(args.out, json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(format_table(result))
    if args.plots:
        for path in write_plots(gt, dets, args.plots, iou_froc=args.iou_froc):
            print(f"plot: {path}")
    print(f"metrics written to {args.out}")
    return 0


def cmd_report(args) -> int:
    from ..core.fence import check_outputs
    from ..evaluation.report import build_report
    check_outputs({"--out": args.out}, {"--model": args.model, "--dataset": args.dataset,
                                        "--model-dir": args.model_dir, "--detections": args.detections})
    from ..odapi.runtime import library_log
    # the export is an input here: TensorFlow's log is kept (and named) only when the report fails
    with library_log(None, verbose=args.verbose):
        done = build_report(args.model, args.dataset, args.split, args.out, model_dir=args.model_dir,
                            detections=args.detections, min_score=args.min_score, max_images=args.max_images,
                            iou=args.iou, bootstrap=args.bootstrap, quiet=args.quiet)
    print(f"report of {done['images']} {args.split} images written to {args.out} "
          f"(built in {done['seconds']:.1f} s, detect not included)")
    return 0


def _add_calibrate(subparsers) -> None:
    calibrate = subparsers.add_parser("calibrate", parents=[quiet_options()],
                                      help="choose the score threshold for a target sensitivity or FP/image on a split")
    calibrate.add_argument("--model", required=True, help="export folder; operating_point.json is written there")
    calibrate.add_argument("--dataset", required=True, help="a `medtfod convert` folder")
    calibrate.add_argument("--split", default="val", help="labelled split to calibrate on (default val)")
    target = calibrate.add_mutually_exclusive_group(required=True)
    target.add_argument("--sensitivity", type=OPEN_FRACTION, help="lesion-level sensitivity to reach, e.g. 0.9")
    target.add_argument("--fp-per-image", type=NON_NEGATIVE, help="false positives per image allowed, e.g. 0.5")
    calibrate.add_argument("--iou", type=OPEN_FRACTION, default=0.1, help="IoU that counts as a hit (default 0.1, as FROC)")
    calibrate.add_argument("--detections", help="a detections.csv of the split made with --min-score 0 "
                                                "(default: run the model now)")
    calibrate.set_defaults(func=cmd_calibrate)


def _add_metrics(subparsers) -> None:
    met = subparsers.add_parser("metrics",
                                help="AP@0.1/0.25/0.5, FROC, IoBB, image-level AUC and COCO from detections.csv")
    met.add_argument("--detections", required=True, help="detections.csv as `medtfod detect` writes it")
    met.add_argument("--ground-truth", required=True, help="a `medtfod convert` output folder")
    met.add_argument("--split", help="only this split's images (default: all)")
    met.add_argument("--out", required=True, help="metrics JSON to write")
    met.add_argument("--plots", help="folder for froc.png and pr_<class>.png")
    met.add_argument("--iou-froc", type=OPEN_FRACTION, default=0.1, help="IoU a FROC hit needs (default 0.1)")
    met.add_argument("--bootstrap", type=NON_NEGATIVE_INT, default=200,
                     help="patient-level bootstrap resamples for the 95%% CIs (0 = none; default 200)")
    met.set_defaults(func=cmd_metrics)


def _add_report(subparsers) -> None:
    rep = subparsers.add_parser("report", parents=[quiet_options()],
                                help="one self-contained HTML page to review a model on a split")
    rep.add_argument("--model", required=True, help="export folder")
    rep.add_argument("--dataset", required=True, help="a `medtfod convert` folder")
    rep.add_argument("--split", default="val", help="the split to report on (default val)")
    rep.add_argument("--out", required=True, help="the .html file to write")
    rep.add_argument("--model-dir", help="the training folder: adds the training history (TensorBoard events)")
    rep.add_argument("--detections", help="a detections.csv of the split made with --min-score 0 "
                                          "(default: run the model now)")
    rep.add_argument("--min-score", type=FRACTION, help="threshold for the confusion matrix and gallery "
                                                        "(default: the calibrated operating point, else 0.5)")
    rep.add_argument("--max-images", type=POSITIVE, default=200, help="gallery size; the worst cases are kept")
    rep.add_argument("--iou", type=OPEN_FRACTION, default=0.1, help="IoU a hit needs in the review (default 0.1)")
    rep.add_argument("--bootstrap", type=NON_NEGATIVE_INT, default=200,
                     help="patient bootstrap replicates for the CIs (default 200, as medtfod metrics)")
    rep.set_defaults(func=cmd_report)


_PARSERS = {"calibrate": _add_calibrate, "metrics": _add_metrics, "report": _add_report}


def add_parsers(subparsers, *names: str) -> None:
    """This group's subcommands, `names` only when given (see `training.add_parsers`)."""
    for name in names or _PARSERS:
        _PARSERS[name](subparsers)
