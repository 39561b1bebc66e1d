"""`medtfod config`, `anchors`, `train`, `eval`, `export`, `pretrained` and `tensorboard`: the training
commands; thin, like the rest of the CLI."""
from __future__ import annotations

import contextlib
import os
import sys

from ..core.errors import UserError
from .common import (NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, library_log_in, library_log_temp, number,
                     quiet_options, render_options, rendering_options)


def cmd_config(args) -> int:
    from ..training.config import parse_overrides, render, write_config
    from ..core.fence import check_outputs
    from ..training.schedule import base_rate, schedule_of
    check_outputs({"--out": args.out}, {"--data": args.data, "--checkpoint": args.checkpoint})
    from ..training.config import check_config_out
    check_config_out(args.out)
    fitted: list = []
    from ..odapi.runtime import library_log
    with library_log(None, verbose=False, keep_on_user_error=False) if args.fit_anchors else contextlib.nullcontext():
        config = render(args.model, args.data, options=render_options(args), anchor_report=fitted)
    write_config(config, args.out)
    print(f"wrote {args.out} ({args.model}, {config.model.WhichOneof('model')}, "
          f"batch {config.train_config.batch_size}, {config.train_config.num_steps} steps, "
          f"{' + '.join(schedule_of(config.train_config)[:2])}, learning rate {base_rate(config.train_config):g})")
    from ..training.balance import describe
    if describe(config):
        print(describe(config))
    if fitted:
        from ..training.anchors import describe as describe_anchors
        print("anchors fitted to the training boxes:\n" + describe_anchors(*fitted[0]))
        overridden = [k for k in parse_overrides(args.set) if "anchor_generator" in k or ".fpn." in k]
        if overridden:
            print(f"note: --set {', '.join(overridden)} was applied after the fit, so the config differs from the "
                  "'after' row there")
    if args.checkpoint:
        print("fine-tuning restores " + ("the whole model (a model of this architecture and these classes)"
                                         if config.train_config.fine_tune_checkpoint_type == "full" else
                                         "the backbone and feature pyramid; the box heads start fresh"))
    return 0


def cmd_anchors(args) -> int:
    from ..core.fence import check_outputs
    from ..data.dataset import Dataset
    from ..odapi import protos
    from ..training.anchors import describe, fit
    from ..training.config import check_config_out, write_config
    check_outputs({"--out": args.out}, {"--data": args.data, "--config": args.config})
    check_config_out(args.out)
    if not os.path.isfile(args.config):
        raise UserError(f"config not found: {args.config}")
    config = protos.read_pipeline_config(args.config)
    splits = args.split or ["train"]
    with library_log_temp(args, keep_on_user_error=False):
        before, after, count = fit(config, Dataset(args.data), splits)
    write_config(config, args.out)
    print(describe(before, after, count, splits))
    print(f"wrote {args.out}")
    return 0


def cmd_train(args) -> int:
    from ..training.config import data_inputs
    from ..core.fence import check_outputs
    from ..odapi.checks import check_input_files
    from ..training.trainer import TrainOptions, train
    check_outputs({"--model-dir": args.model_dir}, data_inputs(args.config))
    # Before the model folder and its log are made: a glob matching nothing writes nothing.
    check_input_files(args.config, train=True, evaluation=args.eval_every is not None)
    from ..training.cluster import exit_on_interrupt, role_from_flags
    role = role_from_flags(args.cluster, args.task_index, args.num_workers)
    # A worker that is not the chief writes nothing into MODEL_DIR: its log is kept (and named)
    # only when it fails.
    log = library_log_in(args.model_dir, args) if role is None or role.is_chief else library_log_temp(args)
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
    from ..training.selection import format_metrics
    from ..odapi.checks import check_input_files
    check_outputs({"--model-dir": args.model_dir}, data_inputs(args.config))
    check_input_files(args.config, train=False, evaluation=True)
    if args.select_by and not args.all:
        raise UserError("--select-by ranks the checkpoints of a run: use it with --all")
    if args.all:
        if args.checkpoint:
            raise UserError("--all evaluates every checkpoint; drop --checkpoint (or --all)")
        if args.select_by:
            from ..training.selection import metric_key
            metric_key(args.select_by)
        with library_log_in(args.model_dir, args):
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
    with library_log_in(args.model_dir, args):
        result = evaluate(args.config, args.model_dir, checkpoint=args.checkpoint, verbose=args.verbose,
                          score=medical_metrics)
    print(format_metrics(result))
    print(f"metrics written to {os.path.join(args.model_dir, 'metrics.json')} (and metrics-<step>.json)")
    return 0


def cmd_export(args) -> int:
    from ..training.config import data_inputs
    from ..core.fence import check_outputs
    from ..odapi.export import export
    check_outputs({"--out": args.out}, dict(data_inputs(args.config), **{"--config": args.config,
                                                                       "--model-dir": args.model_dir}))
    if args.onnx:
        from ..odapi.onnx_export import check_available
        check_available()
    with library_log_in(args.out, args):
        path = export(args.config, args.model_dir, args.out, input_type=args.input_type, verbose=args.verbose,
                      tflite=args.tflite, checkpoint=args.checkpoint)
        print(f"exported SavedModel to {path}" + (f" and TFLite to {os.path.join(args.out, 'tflite')}"
                                                  if args.tflite else ""), flush=True)
        if args.onnx:
            from ..inference.model import ExportedModel
            ExportedModel(args.out).to_onnx(verbose=args.verbose)
            print(f"exported ONNX to {os.path.join(args.out, 'model.onnx')} (parity with the SavedModel in "
                  f"{os.path.join(args.out, 'export.json')})")
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


def _add_config(subparsers) -> None:
    from ..training.config import MODELS
    config = subparsers.add_parser("config", parents=[rendering_options()],
                                   help="render a pipeline config for a converted dataset")
    config.add_argument("--model", required=True, choices=sorted(MODELS), help="model family")
    config.add_argument("--data", required=True, help="a `medtfod convert` output folder")
    config.add_argument("--out", required=True, help="pipeline.config to write")
    config.set_defaults(func=cmd_config)


def _add_anchors(subparsers) -> None:
    anchors = subparsers.add_parser("anchors", parents=[quiet_options()], help="fit a config's anchors to a dataset's boxes")
    anchors.add_argument("--data", required=True, help="a `medtfod convert` output folder")
    anchors.add_argument("--config", required=True, help="pipeline.config whose anchors to fit (SSD, RetinaNet, Faster/Mask R-CNN)")
    anchors.add_argument("--out", required=True, help="the patched pipeline.config to write")
    anchors.add_argument("--split", action="append", help="split(s) whose boxes to fit (default train; repeatable)")
    anchors.set_defaults(func=cmd_anchors)


def _add_train(subparsers) -> None:
    train = subparsers.add_parser("train", parents=[quiet_options()], help="train with the OD API's TF2 loop")
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


def _add_eval(subparsers) -> None:
    ev = subparsers.add_parser("eval", parents=[quiet_options()], help="evaluate a checkpoint once (COCO metrics)")
    ev.add_argument("--config", required=True)
    ev.add_argument("--model-dir", required=True)
    ev.add_argument("--checkpoint", help="checkpoint prefix (default: the latest)")
    ev.add_argument("--all", action="store_true", help="evaluate every checkpoint in --model-dir, oldest first")
    ev.add_argument("--select-by", metavar="METRIC", help="with --all: copy the best checkpoint by this metric "
                    "(coco_map, ap50, ap10, froc_mean, auc) to MODEL_DIR/best/")
    ev.set_defaults(func=cmd_eval)


def _add_export(subparsers) -> None:
    export = subparsers.add_parser("export", parents=[quiet_options()],
                                   help="export the latest checkpoint as a SavedModel")
    export.add_argument("--config", required=True)
    export.add_argument("--model-dir", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--input-type", default="image_tensor")
    export.add_argument("--checkpoint", help="best (MODEL_DIR/best/, the default when it exists), latest, "
                        "or a checkpoint prefix")
    export.add_argument("--tflite", action="store_true",
                        help="SSD, RetinaNet: also write tflite/model.tflite, checked against the SavedModel")
    export.add_argument("--onnx", action="store_true",
                        help="also write model.onnx (tf2onnx, float32 batches) for ONNX Runtime, checked against the "
                             "SavedModel on eval images (fails above 1e-3); detect --runtime onnx runs it without "
                             "TensorFlow")
    export.set_defaults(func=cmd_export)


def _add_pretrained(subparsers) -> None:
    pre = subparsers.add_parser("pretrained", parents=[quiet_options()],
                                help="get or import a TF2 Detection Zoo checkpoint")
    pre.add_argument("action", choices=("get", "import"), help="get: download; import: a .tar.gz fetched by hand")
    pre.add_argument("model_or_file", metavar="MODEL|FILE", help="model name (get) or .tar.gz / folder (import)")
    pre.add_argument("--workspace", default=os.path.join("workspace", "demo"),
                     help="workspace whose pre-trained-models/ receives it (default workspace/demo)")
    pre.add_argument("--sha256", help="refuse the archive unless its sha256 is this (it is printed either way)")
    pre.set_defaults(func=cmd_pretrained)


def _add_tensorboard(subparsers) -> None:
    board = subparsers.add_parser("tensorboard", help="start TensorBoard on a model folder")
    board.add_argument("--model-dir", required=True)
    board.add_argument("--port", type=number(int, 1, 65535), default=6006)
    board.add_argument("--host", default="localhost",
                       help="address to listen on (default localhost; 0.0.0.0 serves the network)")
    board.set_defaults(func=cmd_tensorboard)


_PARSERS = {"config": _add_config, "anchors": _add_anchors, "train": _add_train, "eval": _add_eval, "export": _add_export,
            "pretrained": _add_pretrained, "tensorboard": _add_tensorboard}


def add_parsers(subparsers, *names: str) -> None:
    """This group's subcommands, `names` only when given (in their order; `build_parser` keeps
    `medtfod --help` in the workflow's order, which interleaves the groups)."""
    for name in names or _PARSERS:
        _PARSERS[name](subparsers)
