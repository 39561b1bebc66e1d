"""`medtfod detect`: run an exported model (or an ensemble) on images; thin, like the rest of the CLI."""
from __future__ import annotations

import argparse
import dataclasses

from ..core.errors import UserError
from .common import FRACTION, OPEN_FRACTION, POSITIVE, library_log_in, quiet_options


def add_tile_options(parser) -> None:
    """--tile, --tile-overlap, --tile-merge and --tile-full (detect, calibrate, report, metrics)."""
    from ..inference import tiling
    parser.add_argument("--tile", type=POSITIVE, metavar="PX",
                        help="run the model on overlapping PX x PX windows at native resolution (small lesions on "
                             "big images; at least the model's input size), boxes mapped back and merged")
    parser.add_argument("--tile-overlap", type=float, default=0.2, metavar="F",
                        help="with --tile: share of a window overlapping its neighbour, from 0 up to (not including) 0.9 (default 0.2)")
    parser.add_argument("--tile-merge", choices=tiling.MERGES, default="nms",
                        help="with --tile: how boxes of overlapping windows merge (default nms; none keeps all)")
    parser.add_argument("--tile-full", action="store_true",
                        help="with --tile: also run the whole image, shrunk to the input, for large lesions")


def check_tile_options(args) -> None:
    if args.tile is None and (args.tile_full or args.tile_merge != "nms" or args.tile_overlap != 0.2):
        raise UserError("--tile-overlap, --tile-merge and --tile-full go with --tile PX")


def tile_options(args):
    """`PredictOptions` with only the tile options given (calibrate, report, metrics)."""
    from ..inference.predictor import PredictOptions
    check_tile_options(args)
    return PredictOptions(tile=args.tile, tile_overlap=args.tile_overlap, tile_merge=args.tile_merge,
                          tile_full=args.tile_full)


def cmd_detect(args) -> int:
    from ..inference.detect import DetectOutputs, detect
    from ..inference.model import ExportedModel
    from ..inference.predictor import PredictOptions
    check_tile_options(args)
    if bool(args.dataset) != bool(args.split):
        raise UserError("--dataset and --split go together (e.g. --dataset data --split val)")
    ensemble = len(args.model) > 1 or bool(args.tta)
    if ensemble:
        print(f"fusing {len(args.model)} model(s) x {1 + len(args.tta or [])} view(s) with {args.fuse}")
    first = ExportedModel(args.model[0], args.runtime)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    options = PredictOptions(min_score=args.min_score, max_per_image=args.max_per_image, classes=classes,
                             batch_size=args.batch_size, workers=args.workers, tta=args.tta or (), fuse=args.fuse,
                             fuse_iou=args.fuse_iou, label_map=args.label_map, window=args.window, clahe=args.clahe,
                             tile=args.tile, tile_overlap=args.tile_overlap, tile_merge=args.tile_merge,
                             tile_full=args.tile_full, runtime=args.runtime)
    min_score, source = first.min_score(args.min_score, fused=ensemble, tiling=options.tiling)
    options = dataclasses.replace(options, min_score=min_score)
    if args.tile is None and first.training_tiles:
        print(f"note: {args.model[0]} was trained on {first.training_tiles} px tiles (convert --tile); "
              f"detect --tile {first.training_tiles} shows it images as training did")
    print(f"min score {min_score:g} from {source}")
    if args.tile:
        from ..inference.tiling import check_tile_size
        for path in args.model:  # before saying what it will do
            model = first if path == args.model[0] else ExportedModel(path, args.runtime)
            if model.input_pixels:
                check_tile_size(args.tile, model.input_pixels, model.path)
        print(f"tiling: {args.tile} px windows overlapping by {args.tile_overlap:g}, merged with {args.tile_merge}"
              + (", plus the whole image" if args.tile_full else ""))
    outputs = DetectOutputs(draw=not args.no_draw, draw_format=args.draw_format, annotations=args.annotations,
                            annotations_out=args.annotations_out, quiet=args.quiet, dicom_sr=args.dicom_sr,
                            dicom_overlay=args.dicom_overlay, dicom_codes=args.dicom_codes)
    with library_log_in(args.out, args):
        summary = detect(args.model if ensemble else args.model[0], args.out, images=args.images,
                         dataset=args.dataset, split=args.split, options=options, outputs=outputs)
    skipped = f", {len(summary['skipped'])} unreadable images skipped" if summary["skipped"] else ""
    print(f"grey window for DICOM/16-bit images: {summary['window']}")
    print(f"{summary['images']} images, {summary['detections']} detections at score >= {min_score:g}"
          f"{skipped}; {'' if args.no_draw else 'drawn images, '}detections.csv/.json, coco_results.json "
          f"and images.csv in {args.out}")
    if args.annotations:
        print(f"{args.annotations} pre-annotations of the kept detections, and queue.csv, in {args.annotations_out}")
    if "dicom" in summary:
        folders = [f for f, on in (("dicom_sr/", args.dicom_sr), ("dicom_overlay/", args.dicom_overlay)) if on]
        skipped = summary["dicom"]["skipped"]
        print(f"DICOM results for {summary['dicom']['written']} images in {' and '.join(folders)} of {args.out}"
              + (f" (none for {len(skipped)} other inputs: see the notes above)" if skipped else ""))
    if summary["batch"] == 1 and args.batch_size > 1:
        print("note: this export takes one image per call; export with `--input-type float_image_tensor` "
              "and detect runs --batch-size images of one size per call (about 2-3x faster on CPU)")
    return 0


def add_parsers(subparsers) -> None:
    """`detect`."""
    detect = subparsers.add_parser("detect", parents=[quiet_options()],
                                   help="run an exported model on a folder of images")
    detect.add_argument("--model", required=True, action="append",
                        help="export folder (or its saved_model/, or its model.onnx); repeat it for an ensemble "
                             "(fused with --fuse)")
    detect.add_argument("--runtime", choices=("tf", "onnx"),
                        help="tf: the SavedModel (TensorFlow); onnx: the export's model.onnx on ONNX Runtime, "
                             "without TensorFlow (`export --onnx` writes it); default: onnx for a .onnx path, else tf")
    detect.add_argument("--images", help="image folder (recursive) or a .txt list of image paths")
    detect.add_argument("--dataset", help="a `medtfod convert` folder: detect on --split, ground truth drawn too")
    detect.add_argument("--split", help="with --dataset: the split to run on (e.g. val)")
    detect.add_argument("--out", required=True)
    detect.add_argument("--min-score", type=FRACTION,
                        help="keep detections scoring at least this (default: the export's calibrated "
                             "operating point, else 0.5)")
    detect.add_argument("--max-per-image", type=POSITIVE, default=100)
    detect.add_argument("--window", metavar="SPEC",
                        help="grey window for DICOM and 16-bit PNG/TIFF inputs, as convert's --window (default: the "
                             "one the model's training data was converted with, from export.json; a different one "
                             "gets a warning)")
    detect.add_argument("--clahe", action=argparse.BooleanOptionalAction, default=None,
                        help="CLAHE after the window, or not (default: as the model's training data)")
    detect.add_argument("--classes", help="comma-separated class names to keep (default: all)")
    detect.add_argument("--batch-size", type=POSITIVE, default=8,
                        help="images of one size per model call, for float_image_tensor exports (default 8)")
    detect.add_argument("--no-draw", action="store_true", help="write the tables only, no drawn copies")
    from ..inference import ensemble, preannotate  # light (numpy, already loaded): their tables drive the choices
    detect.add_argument("--draw-format", choices=("png", "jpg"),
                        help="format of the drawn copies (default: JPEG for JPEG inputs, else lossless PNG); jpg "
                             "(quality 90) encodes ~17x faster than PNG: detect then keeps up with its model")
    detect.add_argument("--workers", type=POSITIVE, default=2, help="threads decoding and drawing (default 2)")
    detect.add_argument("--label-map", help="default: label_map.pbtxt in the export folder")
    detect.add_argument("--fuse", choices=ensemble.METHODS, default="wbf",
                        help="how several models / TTA views are fused per image (default wbf: weighted boxes fusion)")
    detect.add_argument("--fuse-iou", type=OPEN_FRACTION,
                        help="IoU above which boxes of different views are one finding (default: the models' own "
                             "NMS IoU threshold, so a model fused with itself is itself; 0.55 if unknown)")
    detect.add_argument("--tta", action="append", choices=ensemble.TTA,
                        help="test-time augmentation: also run each image flipped horizontally, then fuse")
    add_tile_options(detect)
    detect.add_argument("--annotations", choices=preannotate.FORMATS,
                        help="also write the kept detections as pre-annotations to correct: labelImg's VOC XML, "
                             "Label Studio tasks, or COCO JSON (CVAT)")
    detect.add_argument("--annotations-out", help="folder for --annotations (an annotation tool opens it)")
    detect.add_argument("--dicom-sr", action="store_true",
                        help="also write a DICOM SR (TID 1500, one planar ROI per kept detection) per DICOM input "
                             "into OUT/dicom_sr/ (needs medtfod[dicom])")
    detect.add_argument("--dicom-overlay", action="store_true",
                        help="also write each DICOM input's drawn copy as a DICOM Secondary Capture into "
                             "OUT/dicom_overlay/, for viewers without SR support")
    detect.add_argument("--dicom-codes", metavar="CODES.csv",
                        help="with --dicom-sr: finding code per class (columns label,scheme,code,meaning; default: "
                             "local code 99MEDTFOD with the class name)")
    detect.set_defaults(func=cmd_detect)
