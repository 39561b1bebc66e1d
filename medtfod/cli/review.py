"""The correction loop's subcommands (`annotate`, `review-diff`), registered on the `medtfod`
parser by `cli.build_parser`; thin, like the rest of the CLI."""
from __future__ import annotations

import json

from .common import OPEN_FRACTION


def cmd_review_diff(args) -> int:
    from ..core import atomic
    from ..core.fence import check_outputs, need_file
    from ..review.diff import format_diff, review_diff
    need_file("--out", args.out)
    check_outputs({"--out": args.out}, {"--predicted": args.predicted, "--corrected": args.corrected,
                                        "--label-map": args.label_map})
    labels = None
    if args.label_map:
        from ..core.labelmap import read_label_map
        labels = read_label_map(args.label_map).names
    diff = review_diff(args.predicted, args.corrected, args.iou, labels)
    atomic.write_file(args.out, json.dumps(diff, indent=1) + "\n")
    print(format_diff(diff))
    for problem in diff["problems"][:10]:
        where = f"{problem['file']}" + (f":{problem['line']}" if problem.get("line") else "")
        print(f"problem: {where}: {problem['message']}")
    if len(diff["problems"]) > 10:
        print(f"... and {len(diff['problems']) - 10} more problems (all in {args.out})")
    print(f"written to {args.out}")
    return 0


def cmd_annotate(args) -> int:
    from ..review.annotate import annotate
    return annotate(args.images, args.annotations, predicted=args.predicted, label_map=args.label_map,
                    order=args.order, check_only=args.check)


def add_parsers(subparsers) -> None:
    """`annotate` and `review-diff`."""
    ann = subparsers.add_parser("annotate",
                                help="correct boxes in labelImg: pre-annotations shown, corrections saved apart")
    ann.add_argument("--images", required=True, help="the image folder (read only)")
    ann.add_argument("--annotations", required=True,
                     help="folder where labelImg saves the corrected VOC XML (created; the save dir)")
    ann.add_argument("--predicted", help="`detect --annotations voc` output: shown for images not corrected yet "
                                         "(never written to)")
    ann.add_argument("--label-map", help="classes offered in labelImg (default: --predicted's classes.txt)")
    ann.add_argument("--order", choices=("uncertainty", "name"), default="name",
                     help="uncertainty: least certain images first (needs --predicted's queue.csv); default name")
    ann.add_argument("--check", action="store_true", help="check that labelImg can start here, then stop")
    ann.set_defaults(func=cmd_annotate)

    diff = subparsers.add_parser("review-diff",
                                 help="what a reader changed: pre-annotations vs corrected VOC files")
    diff.add_argument("--predicted", required=True, help="`detect --annotations voc` output folder")
    diff.add_argument("--corrected", required=True, help="the corrected VOC folder (e.g. annotate's --annotations)")
    diff.add_argument("--iou", type=OPEN_FRACTION, default=0.5,
                      help="IoU at which a corrected box is the same finding as a predicted one (default 0.5)")
    diff.add_argument("--label-map", help="classes a corrected label must be in (default: --predicted's classes.txt)")
    diff.add_argument("--out", required=True, help="diff JSON to write")
    diff.set_defaults(func=cmd_review_diff)

