"""`medtfod convert` and `medtfod audit`: the dataset commands; thin, like the rest of the CLI."""
from __future__ import annotations

import json
import os
import sys

from ..core.errors import UserError
from .common import (FRACTION, INTERRUPTED, NON_NEGATIVE, POSITIVE, Parser, library_log_temp, number,
                     quiet_options)


def tile_options(args):
    """--tile, --tile-overlap, --tile-keep-empty -> TileOptions (None without --tile)."""
    from ..data.tiles import TileOptions
    if args.tile is None:
        if args.tile_overlap != 0.2 or args.tile_keep_empty != 1.0:
            raise UserError("--tile-overlap and --tile-keep-empty go with --tile PX")
        return None
    return TileOptions(args.tile, args.tile_overlap, args.tile_keep_empty)


def cmd_convert(args) -> int:
    from ..data.convert import ConvertOptions, convert_table, summary
    from ..core.problems import Problems
    from ..data.sources import read_source
    from ..data.splits import fold_fractions, parse_fractions
    fractions = fold_fractions(args.folds, args.split) if args.folds else parse_fractions(args.split or "train=0.8,val=0.2")
    opts = ConvertOptions(fractions=fractions, seed=args.seed, max_bad=args.max_bad,
                          clip_tolerance=args.clip_tolerance, shard_size=args.shard_size,
                          workers=args.workers or ConvertOptions().workers, folds=args.folds or 0,
                          shard_by=args.shard_by,
                          duplicate_distance=args.duplicate_distance,
                          allow_duplicates_across_splits=args.allow_duplicates_across_splits,
                          window=args.window, clahe=args.clahe,  # a bad --window: a UserError here, before any output
                          tile=tile_options(args))
    from ..data.beam.options import check_paths, parse_pipeline_options
    from ..core.fence import check_outputs
    from ..data.sources import SOURCES
    beam_options = parse_pipeline_options(args.pipeline_option)
    if args.runner and opts.tile is not None:
        from ..data.tiles import check_options
        check_options(opts.tile, False, runner=args.runner)
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
    table, label_map = read_source(args.source, problems, images=args.images, label_map=args.label_map,
                                   **{name: getattr(args, name) for name in args.source_inputs})
    if args.runner:
        from ..data.beam.convert import BeamRun, convert_table_beam
        # Beam's own output (and its worker processes') goes to a log kept only on failure.
        try:
            with library_log_temp(args, whose="Apache Beam's", keep_on_user_error=False):
                report = convert_table_beam(table, args.images, args.out, label_map, opts, problems,
                                            BeamRun(args.runner, beam_options), verbose=args.verbose)
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
    result = audit(args.splits, args.images, patients, args.duplicate_distance)
    print(summary(result))
    if args.out:
        from ..core import atomic
        atomic.write_file(args.out, json.dumps(result, indent=2) + "\n")
    return 1 if result["leaks"] else 0


def add_parsers(subparsers) -> None:
    """`convert` (one sub-subcommand per source) and `audit`."""
    convert = subparsers.add_parser("convert", help="box tables + images -> VOC XML, TFRecords, label map, splits")
    sources = convert.add_subparsers(dest="source", metavar="SOURCE", required=True)
    common = Parser(add_help=False, parents=[quiet_options()])
    common.add_argument("--images", required=True, help="image folder (searched recursively by file name)")
    common.add_argument("--out", required=True, help="output folder (replaced only when complete)")
    common.add_argument("--label-map", help="label map .pbtxt (default: the source's shipped map, or the classes found)")
    common.add_argument("--split", help="patient-level split fractions (default: train=0.8,val=0.2); with --folds, "
                                         "only the held-out splits, e.g. test=0.1 (default: none)")
    common.add_argument("--folds", type=number(int, 2), help="K patient-grouped, class-stratified folds "
                                                              "fold1..foldK (for `medtfod cv`) instead of train/val")
    common.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    from ..data.duplicates import DEFAULT_DISTANCE
    common.add_argument("--duplicate-distance", type=number(int, 0, 64), default=DEFAULT_DISTANCE,
                        help="images whose 64-bit perceptual hashes differ in at most this many bits are "
                             f"near-identical: kept in one split with their patients (default {DEFAULT_DISTANCE})")
    common.add_argument("--allow-duplicates-across-splits", action="store_true",
                        help="do not search for identical or near-identical images: split by patient alone, "
                             "as before (copies under two patients may then land in two splits)")
    common.add_argument("--window", metavar="SPEC",
                        help="grey window for DICOM and 16-bit PNG/TIFF images: header (the default: the DICOM's "
                             "VOI LUT/window, then min-max), minmax, percentile[:P1,P99], W,L, lung, mediastinum, "
                             "bone, brain, abdomen, or multi:A;B;C (three windows as the RGB channels); recorded "
                             "in dataset.json and applied again by detect")
    common.add_argument("--clahe", action="store_true",
                        help="contrast-limited adaptive histogram equalization (OpenCV) after the window")
    common.add_argument("--strict", action="store_true", help="stop at the first bad row, writing nothing")
    common.add_argument("--max-bad", type=FRACTION, default=0.05,
                        help="fail when more than this share of rows/images is bad (default 0.05)")
    common.add_argument("--clip-tolerance", type=NON_NEGATIVE, default=2.0,
                        help="pixels a box may extend past the image and be clipped (default 2)")
    common.add_argument("--shard-size", type=POSITIVE, default=256, help="images per TFRecord shard (default 256)")
    common.add_argument("--shard-by", choices=("split", "finding"), default="split",
                        help="finding: write each split's images with and without findings to separate shards "
                             "(<split>.record-positive-*, <split>.record-negative-*), for `config --positive-fraction` "
                             "(default: split)")
    common.add_argument("--tile", type=POSITIVE, metavar="PX",
                        help="also cut the training splits (train, the folds) into PX x PX tiles at native resolution "
                             "for `config` to train on (<split>-tiles.record-*, tiles.json); val/test stay whole")
    common.add_argument("--tile-overlap", type=float, default=0.2, metavar="F",
                        help="with --tile: share of a tile overlapping its neighbour, from 0 up to (not including) 0.9 (default 0.2)")
    common.add_argument("--tile-keep-empty", type=FRACTION, default=1.0, metavar="F",
                        help="with --tile: share of tiles without boxes kept (default 1: all)")
    common.add_argument("--workers", type=POSITIVE, help="processes reading images (default: all cores; "
                                                          "the local converter only)")
    from ..data.beam.options import RUNNERS
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
        own = [p.add_argument(option, required=True, help=text) for option, text in source.inputs]
        if name == "nih":
            own += [p.add_argument("--data-entry",
                                   help="Data_Entry_2017*.csv: patient ids and images without findings")]
        if name == "csv":
            own += [p.add_argument("--label", help="class of every row, for tables without a label column")]
        if name in ("csv", "coco", "siim"):
            own += [p.add_argument("--meta", metavar="COL[,COL...]",
                                   help="columns (for coco: keys of the image entries) kept as per-image fields "
                                        "in the manifest, named in lower case")]
        if name == "siim":
            own += [p.add_argument("--width", type=POSITIVE, default=1024,
                                   help="width the RLE refers to (default 1024)"),
                    p.add_argument("--height", type=POSITIVE, default=1024,
                                   help="height the RLE refers to (default 1024)"),
                    p.add_argument("--extension", default=".png",
                                   help="image file extension, e.g. .dcm (default .png)")]
        # source_inputs: the source's own options, which `cmd_convert` passes to `read_source` by name
        p.set_defaults(func=cmd_convert, source_inputs=tuple(action.dest for action in own))

    audit = subparsers.add_parser("audit", help="check a split for patients or identical images in two splits")
    audit.add_argument("--splits", required=True, help="folder of <split>.txt lists (or a converted dataset)")
    audit.add_argument("--images", help="image folder (recursive); not needed for a converted dataset, "
                       "which holds its images' bytes")
    audit.add_argument("--data-entry", help="Data_Entry_2017*.csv: patient ids for a folder of split lists "
                       "(a converted dataset has its own)")
    audit.add_argument("--duplicate-distance", type=number(int, -1, 64), default=DEFAULT_DISTANCE,
                       help="images whose 64-bit perceptual hashes differ in at most this many bits are "
                            f"near-identical (default {DEFAULT_DISTANCE}, as convert's; -1: identical pixels only)")
    audit.add_argument("--out", help="write the findings as JSON here")
    audit.set_defaults(func=cmd_audit)
