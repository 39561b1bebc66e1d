"""The `medtfod` command: one parser, thin subcommands that call typed functions.

`build_parser()` is separate from `main(argv)` so tests can drive the CLI in-process.
A `UserError` prints as `medtfod: error: ...` with exit status 1 and no traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import List, Optional

from .. import __version__
from ..core.errors import UserError

INTERRUPTED = "medtfod: interrupted; outputs in progress were discarded"


def _library_log(folder: str, args):
    """TensorFlow's and the OD API's own output -> FOLDER/medtfod.log (live too with -v)."""
    from ..odapi.runtime import LOG_NAME, library_log
    return library_log(os.path.join(folder, LOG_NAME), verbose=args.verbose)


def library_log_temp(args, whose: str = "TensorFlow's and the OD API's", keep_on_user_error: bool = True):
    """TensorFlow's and the OD API's (or `whose`) own output -> a temporary log, kept only on failure."""
    from ..odapi.runtime import library_log
    return library_log(None, verbose=args.verbose, whose=whose, keep_on_user_error=keep_on_user_error)


def cmd_convert(args) -> int:
    from ..data.convert import ConvertOptions, convert_table, summary
    from ..core.problems import Problems
    from ..data.sources import read_source
    from ..data.splits import fold_fractions, parse_fractions
    fractions = fold_fractions(args.folds, args.split) if args.folds else parse_fractions(args.split or "train=0.8,val=0.2")
    opts = ConvertOptions(fractions=fractions, seed=args.seed, max_bad=args.max_bad,
                          clip_tolerance=args.clip_tolerance, shard_size=args.shard_size,
                          workers=args.workers or ConvertOptions().workers, folds=args.folds or 0)
    from ..data.beam.convert import check_paths, parse_pipeline_options
    from ..core.fence import check_outputs
    from ..data.sources import SOURCES
    beam_options = parse_pipeline_options(args.pipeline_option)
    if args.workers and args.runner:
        raise UserError("--workers sizes the local pool; with --runner the runner decides (for direct: "
                        "--pipeline-option direct_num_workers=N --pipeline-option direct_running_mode=multi_processing)")
    if beam_options and not args.runner:
        raise UserError("--pipeline-option is for the Beam path; give --runner too (e.g. --runner direct)")
    tables = {opt: getattr(args, opt[2:].replace("-", "_"), None)
              for opt in [o for o, _ in SOURCES[args.source].inputs] + ["--data-entry", "--label-map"]}
    check_paths({k: v for k, v in tables.items() if v}, args.images, args.out, args.runner)
    check_outputs({"--out": args.out}, {"--label-map": args.label_map})
    problems = Problems(strict=args.strict)
    table, label_map = read_source(args.source, args, problems)
    if args.runner:
        from ..data.beam.convert import convert_table_beam
        # Beam's own output (and its worker processes') goes to a log kept only on failure.
        try:
            with library_log_temp(args, whose="Apache Beam's", keep_on_user_error=False):
                report = convert_table_beam(table, args.images, args.out, label_map, opts, problems, args.runner,
                                            beam_options, verbose=args.verbose)
        except KeyboardInterrupt:
            # The output in progress is already removed and the runner's workers stopped
            # (beam_local.stoppable); Beam's daemon threads may still be winding down, and
            # a normal exit would wait for any it left behind.
            print(INTERRUPTED, file=sys.stderr, flush=True)
            os._exit(130)
    else:
        report = convert_table(table, args.images, args.out, label_map, opts, problems, quiet=args.quiet)
    print(summary(report, args.out))
    return 0


def cmd_audit(args) -> int:
    from ..data.audit import audit, summary
    from ..core.fence import check_outputs
    check_outputs({"--out": args.out}, {"--splits": args.splits, "--images": args.images,
                                        "--data-entry": args.data_entry})
    patients = None
    if args.data_entry:
        from ..core.problems import Problems
        from ..data.readers.nih import read_data_entry
        patients = read_data_entry(args.data_entry, Problems()).patients
    result = audit(args.splits, args.images, patients)
    print(summary(result))
    if args.out:
        from ..core import atomic
        atomic.write_file(args.out, json.dumps(result, indent=2) + "\n")
    return 1 if result["leaks"] else 0


def render_options(args) -> dict:
    """`config.render`'s keyword arguments from the options `config` and `cv` share."""
    from ..training.config import parse_overrides
    return dict(batch_size=args.batch_size, steps=args.steps, image_size=args.image_size,
                learning_rate=args.learning_rate, warmup_steps=args.warmup_steps, checkpoint=args.checkpoint,
                augment=args.augment.split(",") if args.augment else None, overrides=parse_overrides(args.set),
                tiny=args.tiny)


def cmd_config(args) -> int:
    from ..training.config import render, write_config
    from ..core.fence import check_outputs
    from ..training.schedule import base_rate, schedule_of
    check_outputs({"--out": args.out}, {"--data": args.data, "--checkpoint": args.checkpoint})
    config = render(args.model, args.data, **render_options(args))
    write_config(config, args.out)
    print(f"wrote {args.out} ({args.model}, {config.model.WhichOneof('model')}, "
          f"batch {config.train_config.batch_size}, {config.train_config.num_steps} steps, "
          f"{' + '.join(schedule_of(config.train_config)[:2])}, learning rate {base_rate(config.train_config):g})")
    if args.checkpoint:
        print("fine-tuning restores " + ("the whole model (a model of this architecture and these classes)"
                                         if config.train_config.fine_tune_checkpoint_type == "full" else
                                         "the backbone and feature pyramid; the box heads start fresh"))
    return 0


def cmd_train(args) -> int:
    from ..training.config import data_inputs
    from ..core.fence import check_outputs
    from ..training.trainer import TrainOptions, train
    check_outputs({"--model-dir": args.model_dir}, data_inputs(args.config))
    from ..training.cluster import exit_on_interrupt, role_from_flags
    role = role_from_flags(args.cluster, args.task_index, args.num_workers)
    # A worker that is not the chief writes nothing into MODEL_DIR: its log is kept (and named)
    # only when it fails.
    log = _library_log(args.model_dir, args) if role is None or role.is_chief else library_log_temp(args)
    multi = role is not None and role.workers > 1

    def interrupted() -> str:
        from ..odapi.multiworker import remove_worker_dirs
        remove_worker_dirs(args.model_dir, role)
        return (f"interrupted: {role.describe()}; the other workers stop within about 10 s. Start every worker "
                "again with the same command to resume from the chief's latest checkpoint in " + args.model_dir)
    try:
        with exit_on_interrupt(interrupted) if multi else contextlib.nullcontext(), log:
            train(args.config, args.model_dir, options=TrainOptions(
                steps=args.steps, checkpoint_every_n=args.checkpoint_every_n, role=role,
                cluster_timeout=args.cluster_timeout, verbose=args.verbose, quiet=args.quiet, eval_every=args.eval_every,
                select_by=args.select_by, patience=args.patience, min_delta=args.min_delta))
    except UserError as e:
        if not multi:
            raise
        # A failed cluster's servers cannot shut down cleanly: exiting normally would bury this
        # message under TensorFlow's C++ shutdown errors, printed after the log is closed.
        print(f"medtfod: error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)
    if role is not None and not role.is_chief:
        print(f"training done ({role.describe()}); the chief wrote the checkpoints and logs to {args.model_dir}")
    else:
        print(f"training done; checkpoints and TensorBoard logs in {args.model_dir}")
    return 0


def cmd_eval(args) -> int:
    from ..training.config import data_inputs
    from ..core.fence import check_outputs
    from ..odapi.evaluate import evaluate, evaluate_all_checkpoints, summary_line
    from ..evaluation.medical import medical_metrics
    from ..training.selection import select_best
    check_outputs({"--model-dir": args.model_dir}, data_inputs(args.config))
    if args.select_by and not args.all:
        raise UserError("--select-by ranks the checkpoints of a run: use it with --all")
    if args.all:
        if args.checkpoint:
            raise UserError("--all evaluates every checkpoint; drop --checkpoint (or --all)")
        if args.select_by:
            from ..training.selection import metric_key
            metric_key(args.select_by)
        with _library_log(args.model_dir, args):
            results = evaluate_all_checkpoints(args.config, args.model_dir, verbose=False, score=medical_metrics)
        for result in results:
            print(summary_line(result), flush=True)
        if args.select_by:
            best = select_best(args.model_dir, results, args.select_by)
            print(f"best by {args.select_by}: " + (f"step {best['step']} ({best['checkpoint']}), copied to "
                                                    f"{os.path.join(args.model_dir, 'best')}" if best else
                                                    "none (the metric is undefined for every checkpoint)"))
        print(f"metrics-<step>.json per checkpoint and metrics.json (latest) in {args.model_dir}")
        return 0
    with _library_log(args.model_dir, args):
        result = evaluate(args.config, args.model_dir, checkpoint=args.checkpoint, verbose=args.verbose,
                          score=medical_metrics)
    print(format_metrics(result))
    print(f"metrics written to {os.path.join(args.model_dir, 'metrics.json')} (and metrics-<step>.json)")
    return 0


def format_metrics(result: dict) -> str:
    lines = [f"evaluation of {result['checkpoint']} (step {result['step']}):"]
    for name, value in result["metrics"].items():
        if name.startswith("DetectionBoxes_") or name.startswith("DetectionMasks_"):
            lines.append(f"  {name:<45} {value:.4f}")
    return "\n".join(lines)


def cmd_export(args) -> int:
    from ..training.config import data_inputs
    from ..core.fence import check_outputs
    from ..odapi.export import export
    check_outputs({"--out": args.out}, dict(data_inputs(args.config), **{"--config": args.config,
                                                                       "--model-dir": args.model_dir}))
    with _library_log(args.out, args):
        path = export(args.config, args.model_dir, args.out, input_type=args.input_type, verbose=args.verbose,
                      tflite=args.tflite, checkpoint=args.checkpoint)
    print(f"exported SavedModel to {path}" + (f" and TFLite to {os.path.join(args.out, 'tflite')}" if args.tflite else ""))
    return 0


def cmd_detect(args) -> int:
    from ..inference.detect import detect, resolve_min_score
    if bool(args.dataset) != bool(args.split):
        raise UserError("--dataset and --split go together (e.g. --dataset data --split val)")
    ensemble = len(args.model) > 1 or bool(args.tta)
    if ensemble:
        print(f"fusing {len(args.model)} model(s) x {1 + len(args.tta or [])} view(s) with {args.fuse}")
    min_score, source = resolve_min_score(args.model[0], args.min_score, fused=ensemble)
    print(f"min score {min_score:g} from {source}")
    with _library_log(args.out, args):
        summary = detect(args.model if ensemble else args.model[0], args.images, args.out, min_score=min_score,
                         label_map_path=args.label_map, quiet=args.quiet, max_per_image=args.max_per_image,
                         classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
                         dataset=args.dataset, split=args.split, workers=args.workers, batch_size=args.batch_size,
                         draw=not args.no_draw, annotations=args.annotations,
                         annotations_out=args.annotations_out, fuse=args.fuse, fuse_iou=args.fuse_iou,
                         tta=args.tta or (), draw_format=args.draw_format)
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


def cmd_calibrate(args) -> int:
    from ..evaluation.calibrate import choose_threshold, describe, write_operating_point
    from ..inference.detect import export_dir as export_dir_of, split_detections
    from ..core.fence import check_outputs
    from ..evaluation.metrics import read_ground_truth
    export_dir = export_dir_of(args.model)
    check_outputs({"--model": export_dir}, {"--dataset": args.dataset, "--detections": args.detections})
    gt = read_ground_truth(args.dataset, args.split)
    with _library_log(export_dir, args):
        dets = split_detections(export_dir, args.dataset, args.split, gt, args.detections, quiet=args.quiet)
    point = choose_threshold(gt, dets, sensitivity=args.sensitivity, fp_per_image=args.fp_per_image, iou=args.iou)
    path, record = write_operating_point(export_dir, point, target_sensitivity=args.sensitivity,
                                         target_fp_per_image=args.fp_per_image, iou=args.iou,
                                         dataset=os.path.abspath(args.dataset), split=args.split, images=len(gt),
                                         boxes=sum(len(v) for v in gt.values()))
    print(f"operating point: {describe(record)}")
    print(f"written to {path}; medtfod detect --model {export_dir} now uses it unless --min-score is given")
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo
    with _library_log(args.workspace, args):
        run_demo(args.workspace, num_images=args.num_images, steps=args.steps, quiet=args.quiet, verbose=args.verbose)
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


def cmd_pretrained(args) -> int:
    from ..training import pretrained
    if args.action == "get":
        folder = pretrained.download(args.model_or_file, args.workspace, quiet=args.quiet, sha256=args.sha256)
    else:
        folder = pretrained.import_archive(args.model_or_file, args.workspace, sha256=args.sha256)
    print(f"installed {folder}\nuse it with: medtfod config ... --checkpoint {pretrained.checkpoint_prefix(folder)}")
    return 0


def cmd_tensorboard(args) -> int:
    from ..training.board import serve
    if not os.path.isdir(args.model_dir):
        raise UserError(f"model folder not found: {args.model_dir}")
    print(f"TensorBoard for {args.model_dir} (train: Loss/*, learning_rate; eval: DetectionBoxes_*, "
          f"side-by-side images) at http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    return serve(args.model_dir, port=args.port, host=args.host)


def cmd_doctor(args) -> int:
    from ..doctor import doctor
    from ..odapi.runtime import library_log
    with library_log(None, verbose=args.verbose):  # TensorFlow's start-up chatter is not the report
        return doctor()


class _Parser(argparse.ArgumentParser):
    """argparse, with usage mistakes ending in exit status 1 like every other user error."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _number(kind, low=None, high=None, low_open=False):
    """An argparse type: a finite `kind` within [low, high] (low excluded when `low_open`)."""
    import math

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) \
                or (high is not None and value > high):
            bounds = (f"> {low:g}" if low_open else f">= {low:g}") if low is not None else ""
            bounds += (" and " if bounds and high is not None else "") + (f"<= {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number {bounds}")
        return value
    return parse


POSITIVE = _number(int, 1)
NON_NEGATIVE_INT = _number(int, 0)
NON_NEGATIVE = _number(float, 0.0)
FRACTION = _number(float, 0.0, 1.0)
OPEN_FRACTION = _number(float, 0.0, 1.0, low_open=True)
POSITIVE_FLOAT = _number(float, 0.0, low_open=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="medtfod", description="TF Object Detection API workflow for medical images.")
    parser.add_argument("--version", action="version", version=f"medtfod {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    quiet = _Parser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    quiet.add_argument("-v", "--verbose", action="store_true",
                       help="show TensorFlow's and the OD API's own log live (it always goes to medtfod.log "
                            "in the output folder)")

    convert = sub.add_parser("convert", help="box tables + images -> VOC XML, TFRecords, label map, splits")
    sources = convert.add_subparsers(dest="source", metavar="SOURCE", required=True)
    common = _Parser(add_help=False, parents=[quiet])
    common.add_argument("--images", required=True, help="image folder (searched recursively by file name)")
    common.add_argument("--out", required=True, help="output folder (replaced only when complete)")
    common.add_argument("--label-map", help="label map .pbtxt (default: the source's shipped map, or the classes found)")
    common.add_argument("--split", help="patient-level split fractions (default: train=0.8,val=0.2); with --folds, "
                                         "only the held-out splits, e.g. test=0.1 (default: none)")
    common.add_argument("--folds", type=_number(int, 2), help="K patient-grouped, class-stratified folds "
                                                               "fold1..foldK (for `medtfod cv`) instead of train/val")
    common.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    common.add_argument("--strict", action="store_true", help="stop at the first bad row, writing nothing")
    common.add_argument("--max-bad", type=FRACTION, default=0.05,
                        help="fail when more than this share of rows/images is bad (default 0.05)")
    common.add_argument("--clip-tolerance", type=NON_NEGATIVE, default=2.0,
                        help="pixels a box may extend past the image and be clipped (default 2)")
    common.add_argument("--shard-size", type=POSITIVE, default=256, help="images per TFRecord shard (default 256)")
    common.add_argument("--workers", type=POSITIVE, help="processes reading images (default: all cores; "
                                                          "the local converter only)")
    from ..data.beam.convert import RUNNERS
    common.add_argument("--runner", choices=list(RUNNERS),
                        help="run the per-image work on Apache Beam (needs apache-beam: bootstrap.py install --beam): "
                             "direct (in this process), prism, flink, spark or dataflow; --images and --out may "
                             "then be gs:// or s3:// (default: the local process pool)")
    common.add_argument("--pipeline-option", action="append", metavar="KEY=VALUE",
                        help="a Beam pipeline option, repeatable: project=..., region=..., temp_location=gs://..., "
                             "direct_num_workers=2, flink_master=HOST:PORT ...")
    from ..data.sources import SOURCES
    for name, source in SOURCES.items():
        p = sources.add_parser(name, parents=[common], help=source.help, description=source.help)
        for option, text in source.inputs:
            p.add_argument(option, required=True, help=text)
        if name == "nih":
            p.add_argument("--data-entry", help="Data_Entry_2017*.csv: patient ids and images without findings")
        if name == "csv":
            p.add_argument("--label", help="class of every row, for tables without a label column")
        if name == "siim":
            p.add_argument("--width", type=POSITIVE, default=1024, help="width the RLE refers to (default 1024)")
            p.add_argument("--height", type=POSITIVE, default=1024, help="height the RLE refers to (default 1024)")
            p.add_argument("--extension", default=".png", help="image file extension, e.g. .dcm (default .png)")
        p.set_defaults(func=cmd_convert)

    audit = sub.add_parser("audit", help="check a split for patients or identical images in two splits")
    audit.add_argument("--splits", required=True, help="folder of <split>.txt lists (or a converted dataset)")
    audit.add_argument("--images", help="image folder (recursive); not needed for a converted dataset, "
                       "which holds its images' bytes")
    audit.add_argument("--data-entry", help="Data_Entry_2017*.csv: patient ids for a folder of split lists "
                       "(a converted dataset has its own)")
    audit.add_argument("--out", help="write the findings as JSON here")
    audit.set_defaults(func=cmd_audit)

    from ..training.config import MODELS
    rendering = _Parser(add_help=False)  # config's options, shared with cv
    rendering.add_argument("--batch-size", type=POSITIVE)
    rendering.add_argument("--steps", type=POSITIVE, help="training steps (the LR schedule follows)")
    rendering.add_argument("--image-size", type=POSITIVE, help="model input size in pixels (square)")
    rendering.add_argument("--learning-rate", type=POSITIVE_FLOAT)
    rendering.add_argument("--warmup-steps", type=NON_NEGATIVE_INT)
    rendering.add_argument("--checkpoint", help="fine-tune checkpoint prefix; omitted = train from scratch")
    rendering.add_argument("--augment", help="comma-separated augmentations replacing the template's, "
                           "e.g. random_horizontal_flip,random_adjust_contrast")
    rendering.add_argument("--tiny", action="store_true",
                           help="a small CPU-friendly variant (128 px, fewer proposals, 15x15 masks) for tests")
    rendering.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                           help="set any config field, e.g. train_config.batch_size=4 (repeatable)")
    config = sub.add_parser("config", parents=[rendering], help="render a pipeline config for a converted dataset")
    config.add_argument("--model", required=True, choices=sorted(MODELS), help="model family")
    config.add_argument("--data", required=True, help="a `medtfod convert` output folder")
    config.add_argument("--out", required=True, help="pipeline.config to write")
    config.set_defaults(func=cmd_config)

    train = sub.add_parser("train", parents=[quiet], help="train with the OD API's TF2 loop")
    train.add_argument("--config", required=True)
    train.add_argument("--model-dir", required=True)
    train.add_argument("--steps", type=POSITIVE, help="total steps (default: the config's num_steps)")
    train.add_argument("--checkpoint-every-n", type=POSITIVE, default=1000)
    train.add_argument("--cluster", metavar="HOST:PORT,...",
                       help="multi-worker training: every worker's address, the chief first; sets TF_CONFIG "
                            "for this process (or set TF_CONFIG yourself, as Vertex AI and Kubeflow do)")
    train.add_argument("--task-index", type=NON_NEGATIVE_INT, metavar="I",
                       help="with --cluster: which worker this process is (0 is the chief)")
    train.add_argument("--cluster-timeout", type=POSITIVE, default=600, metavar="SECONDS",
                       help="how long to wait for every worker to join (default 600)")
    train.add_argument("--num-workers", type=POSITIVE,
                       help="optional check: the number of workers the cluster must have")
    train.add_argument("--eval-every", type=POSITIVE, help="evaluate every N steps (a multiple of 100) while training")
    from ..training.selection import METRICS
    train.add_argument("--select-by", metavar="METRIC", help=f"keep the best checkpoint in MODEL_DIR/best/ by "
                       f"one of {', '.join(METRICS)} (default with --eval-every: froc_mean when some eval images "
                       "have no box, else ap50)")
    train.add_argument("--patience", type=POSITIVE, help="stop after this many evaluations without improvement")
    train.add_argument("--min-delta", type=NON_NEGATIVE, default=0.0,
                       help="an improvement must exceed this (default 0)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", parents=[quiet], help="evaluate a checkpoint once (COCO metrics)")
    ev.add_argument("--config", required=True)
    ev.add_argument("--model-dir", required=True)
    ev.add_argument("--checkpoint", help="checkpoint prefix (default: the latest)")
    ev.add_argument("--all", action="store_true", help="evaluate every checkpoint in --model-dir, oldest first")
    ev.add_argument("--select-by", metavar="METRIC", help="with --all: copy the best checkpoint by this metric "
                    "(coco_map, ap50, ap10, froc_mean, auc) to MODEL_DIR/best/")
    ev.set_defaults(func=cmd_eval)

    export = sub.add_parser("export", parents=[quiet], help="export the latest checkpoint as a SavedModel")
    export.add_argument("--config", required=True)
    export.add_argument("--model-dir", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--input-type", default="image_tensor")
    export.add_argument("--checkpoint", help="best (MODEL_DIR/best/, the default when it exists), latest, "
                        "or a checkpoint prefix")
    export.add_argument("--tflite", action="store_true",
                        help="SSD only: also write tflite/model.tflite, checked against the SavedModel")
    export.set_defaults(func=cmd_export)

    detect = sub.add_parser("detect", parents=[quiet], help="run an exported model on a folder of images")
    detect.add_argument("--model", required=True, action="append",
                        help="export folder (or its saved_model/); repeat it for an ensemble (fused with --fuse)")
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

    calibrate = sub.add_parser("calibrate", parents=[quiet],
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

    demo = sub.add_parser("demo", parents=[quiet], help="synthetic data -> convert -> train -> eval -> export -> detect")
    demo.add_argument("--workspace", default=os.path.join("workspace", "demo"))
    demo.add_argument("--num-images", type=POSITIVE, default=300)
    demo.add_argument("--steps", type=POSITIVE, default=600)
    demo.set_defaults(func=cmd_demo)

    met = sub.add_parser("metrics", help="AP@0.1/0.25/0.5, FROC, IoBB, image-level AUC and COCO from detections.csv")
    met.add_argument("--detections", required=True, help="detections.csv as `medtfod detect` writes it")
    met.add_argument("--ground-truth", required=True, help="a `medtfod convert` output folder")
    met.add_argument("--split", help="only this split's images (default: all)")
    met.add_argument("--out", required=True, help="metrics JSON to write")
    met.add_argument("--plots", help="folder for froc.png and pr_<class>.png")
    met.add_argument("--iou-froc", type=OPEN_FRACTION, default=0.1, help="IoU a FROC hit needs (default 0.1)")
    met.add_argument("--bootstrap", type=NON_NEGATIVE_INT, default=200,
                     help="patient-level bootstrap resamples for the 95%% CIs (0 = none; default 200)")
    met.set_defaults(func=cmd_metrics)

    rep = sub.add_parser("report", parents=[quiet], help="one self-contained HTML page to review a model on a split")
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

    pre = sub.add_parser("pretrained", parents=[quiet], help="get or import a TF2 Detection Zoo checkpoint")
    pre.add_argument("action", choices=("get", "import"), help="get: download; import: a .tar.gz fetched by hand")
    pre.add_argument("model_or_file", metavar="MODEL|FILE", help="model name (get) or .tar.gz / folder (import)")
    pre.add_argument("--workspace", default=os.path.join("workspace", "demo"),
                     help="workspace whose pre-trained-models/ receives it (default workspace/demo)")
    pre.add_argument("--sha256", help="refuse the archive unless its sha256 is this (it is printed either way)")
    pre.set_defaults(func=cmd_pretrained)

    board = sub.add_parser("tensorboard", help="start TensorBoard on a model folder")
    board.add_argument("--model-dir", required=True)
    board.add_argument("--port", type=_number(int, 1, 65535), default=6006)
    board.add_argument("--host", default="localhost",
                       help="address to listen on (default localhost; 0.0.0.0 serves the network)")
    board.set_defaults(func=cmd_tensorboard)

    from .review import register
    register(sub, quiet)
    from .cv import register as register_cv
    register_cv(sub, quiet, rendering)

    doctor = sub.add_parser("doctor", help="check the installation")
    doctor.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's own log live")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..training.cluster import drop_blank_tf_config
    drop_blank_tf_config()
    try:
        return args.func(args)
    except UserError as e:
        print(f"medtfod: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
