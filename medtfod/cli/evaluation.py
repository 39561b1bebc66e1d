"""`medtfod calibrate`, `metrics` and `report`: the evaluation commands; thin, like the rest of the CLI."""
from __future__ import annotations

import json

from .common import FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, OPEN_FRACTION, POSITIVE, library_log_in, quiet_options


def cmd_calibrate(args) -> int:
    from ..core.fence import check_outputs
    from ..data.dataset import Dataset
    from ..evaluation.calibrate import calibrate
    from ..inference.detect import split_detections
    from ..inference.model import ExportedModel
    from ..inference.operating_point import describe
    from .inference import tile_options
    options = tile_options(args)
    model = ExportedModel(args.model)
    if args.tile and model.input_pixels:
        from ..inference.tiling import check_tile_size
        check_tile_size(args.tile, model.input_pixels, model.path)
    check_outputs({"--model": model.path}, {"--dataset": args.dataset, "--detections": args.detections})
    data = Dataset(args.dataset)
    with library_log_in(model.path, args):  # TensorFlow's output while the model runs, if it does
        detections = split_detections(model.path, data.path, args.split, data.ground_truth(args.split),
                                      args.detections, quiet=args.quiet, options=options)
    path, record = calibrate(model, data, args.split, sensitivity=args.sensitivity, fp_per_image=args.fp_per_image,
                             iou=args.iou, detections=detections, options=options)
    print(f"operating point: {describe(record)}")
    from ..inference.operating_point import tiling_flags
    flags = f" {tiling_flags(options.tiling)}" if args.tile else ""
    print(f"written to {path}; medtfod detect --model {model.path}{flags} now uses it unless --min-score is given"
          + (" (a run tiled otherwise, or not at all, does not)" if args.tile else
             (" (detect --tile does not: calibrate with --tile for it)")))
    return 0


def cmd_metrics(args) -> int:
    from ..core import atomic
    from ..core.fence import check_outputs, need_file, need_folder
    from ..data.dataset import Dataset
    from ..data.readers.detections import read_detections_csv
    from ..evaluation.evaluate import (MetricsOptions, check_metrics_out, evaluate_all, metrics_warnings,
                                       operating_threshold)
    from ..evaluation.plots import format_table, write_plots
    check_outputs({"--out": args.out, "--plots": args.plots},
                  {"--detections": args.detections, "--ground-truth": args.ground_truth, "--model": args.model})
    need_file("--out", args.out)
    need_folder("--plots", args.plots)
    check_metrics_out(args.out)
    dataset = Dataset(args.ground_truth)
    gt = dataset.ground_truth(args.split)  # read first, as before: its errors come before the table's
    dets = read_detections_csv(args.detections, labels=dataset.label_names, images=gt)
    from .inference import tile_options
    threshold = operating_threshold(args.min_score, args.model, tile_options(args).tiling)
    options = MetricsOptions(min_score=threshold["min_score"], iou_froc=args.iou_froc, bootstrap=args.bootstrap,
                             size_bins=args.size_bins,
                             size_unit=args.size_unit, by=args.by or ())
    result = evaluate_all(gt, dets, patients=dataset.patients(args.split), label_names=dataset.label_names,
                          threshold=threshold, options=options, meta=dataset.meta(args.split))
    atomic.write_file(args.out, json.dumps(result, indent=2, allow_nan=False) + "\n")
    for line in metrics_warnings(result, args.detections, dataset, args.split, dets):
        print(line)
    print(format_table(result))
    if args.plots:
        for path in write_plots(gt, dets, args.plots, iou_froc=args.iou_froc):
            print(f"plot: {path}")
    print(f"metrics written to {args.out}")
    return 0


def cmd_report(args) -> int:
    from ..core.fence import check_outputs
    from ..evaluation.report import ReportOptions, build_report
    check_outputs({"--out": args.out}, {"--model": args.model, "--dataset": args.dataset,
                                        "--model-dir": args.model_dir, "--detections": args.detections})
    from .inference import tile_options
    predict = tile_options(args)
    from ..odapi.runtime import library_log
    # the export is an input here: TensorFlow's log is kept (and named) only when the report fails
    with library_log(None, verbose=args.verbose):
        done = build_report(args.model, args.dataset, args.split, args.out,
                            ReportOptions(predict=predict, model_dir=args.model_dir, detections=args.detections,
                                          min_score=args.min_score, max_images=args.max_images, iou=args.iou,
                                          bootstrap=args.bootstrap, quiet=args.quiet, by=tuple(args.by or ()),
                                          size_bins=args.size_bins, size_unit=args.size_unit))
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
                                                "(default: run the model now; made with --tile, give the same --tile options here)")
    from .inference import add_tile_options
    add_tile_options(calibrate)
    calibrate.set_defaults(func=cmd_calibrate)


def _add_metrics(subparsers) -> None:
    met = subparsers.add_parser("metrics",
                                help="AP, FROC, AUC and COCO on all detections; IoBB, sensitivity, FP/image, per-lesion IoU at "
                                     "one threshold; strata by lesion size and image fields")
    met.add_argument("--detections", required=True, help="detections.csv as `medtfod detect` writes it")
    met.add_argument("--ground-truth", required=True, help="a `medtfod convert` output folder")
    met.add_argument("--split", help="only this split's images (default: all)")
    met.add_argument("--out", required=True, help="metrics JSON to write")
    met.add_argument("--plots", help="folder for froc.png and pr_<class>.png")
    met.add_argument("--iou-froc", type=OPEN_FRACTION, default=0.1, help="IoU a FROC hit needs (default 0.1)")
    met.add_argument("--bootstrap", type=NON_NEGATIVE_INT, default=200,
                     help="patient-level bootstrap resamples for the 95%% CIs (0 = none; default 200)")
    met.add_argument("--min-score", type=FRACTION,
                     help="the operating threshold of the threshold-dependent metrics (IoBB, image-level "
                          "sensitivity/specificity, confusion, sensitivity and FP/image, per-lesion IoU); "
                          "default: --model's calibrated operating point, else 0.5")
    met.add_argument("--model", help="the export the detections came from: its operating_point.json "
                                     "(medtfod calibrate) is the threshold when --min-score is not given")
    met.add_argument("--size-bins", help="lesion-size strata: bin edges of the longer GT side, e.g. 0,16,32,64,inf "
                                         "(default: tertiles of the split's GT sizes)")
    met.add_argument("--size-unit", choices=("px", "mm"), default="px",
                     help="size in pixels, or in mm from the images' pixel spacing (DICOM, NIH Data_Entry)")
    met.add_argument("--by", action="append", metavar="FIELD[:BINS]",
                     help="strata of an image field of the manifest, e.g. --by sex --by age:0,40,60,120 "
                          "(repeat for several; `medtfod audit` lists the fields)")
    from .inference import add_tile_options
    add_tile_options(met)  # how the detections were made: --model's operating point counts only for its own tiling
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
    rep.add_argument("--by", action="append", metavar="FIELD[:BINS]",
                     help="strata of an image field besides lesion size, e.g. --by sex --by age:0,40,60,120")
    rep.add_argument("--size-bins", help="lesion-size strata bin edges, as metrics --size-bins")
    rep.add_argument("--size-unit", choices=("px", "mm"), default="px", help="as metrics --size-unit")
    from .inference import add_tile_options
    add_tile_options(rep)
    rep.set_defaults(func=cmd_report)


_PARSERS = {"calibrate": _add_calibrate, "metrics": _add_metrics, "report": _add_report}


def add_parsers(subparsers, *names: str) -> None:
    """This group's subcommands, `names` only when given (see `training.add_parsers`)."""
    for name in names or _PARSERS:
        _PARSERS[name](subparsers)
