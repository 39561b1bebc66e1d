"""`medtfod detect`: run an exported model (or an ensemble) on images; thin, like the rest of the CLI."""
from __future__ import annotations

from ..core.errors import UserError
from .common import FRACTION, OPEN_FRACTION, POSITIVE, library_log_in, quiet_options


def cmd_detect(args) -> int:
    from ..inference.detect import DetectOutputs, detect
    from ..inference.model import ExportedModel
    from ..inference.predictor import PredictOptions
    if bool(args.dataset) != bool(args.split):
        raise UserError("--dataset and --split go together (e.g. --dataset data --split val)")
    ensemble = len(args.model) > 1 or bool(args.tta)
    if ensemble:
        print(f"fusing {len(args.model)} model(s) x {1 + len(args.tta or [])} view(s) with {args.fuse}")
    min_score, source = ExportedModel(args.model[0], args.runtime).min_score(args.min_score, fused=ensemble)
    print(f"min score {min_score:g} from {source}")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    options = PredictOptions(min_score=min_score, max_per_image=args.max_per_image, classes=classes,
                             batch_size=args.batch_size, workers=args.workers, tta=args.tta or (), fuse=args.fuse,
                             fuse_iou=args.fuse_iou, label_map=args.label_map, runtime=args.runtime)
    outputs = DetectOutputs(draw=not args.no_draw, draw_format=args.draw_format, annotations=args.annotations,
                            annotations_out=args.annotations_out, quiet=args.quiet)
    with library_log_in(args.out, args):
        summary = detect(args.model if ensemble else args.model[0], args.out, images=args.images,
                         dataset=args.dataset, split=args.split, options=options, outputs=outputs)
    skipped = f", {len(summary['skipped'])} unreadable images skipped" if summary["skipped"] else ""
    print(f"{summary['images']} images, {summary['detections']} detections at score >= {min_score:g}"
          f"{skipped}; {'' if args.no_draw else 'drawn images, '}detections.csv/.json, coco_results.json "
          f"and images.csv in {args.out}")
    if args.annotations:
        print(f"{args.annotations} pre-annotations of the kept detections, and queue.csv, in {args.annotations_out}")
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
    detect.add_argument("--annotations", choices=preannotate.FORMATS,
                        help="also write the kept detections as pre-annotations to correct: labelImg's VOC XML, "
                             "Label Studio tasks, or COCO JSON (CVAT)")
    detect.add_argument("--annotations-out", help="folder for --annotations (an annotation tool opens it)")
    detect.set_defaults(func=cmd_detect)
