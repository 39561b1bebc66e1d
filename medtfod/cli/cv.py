"""`medtfod cv`, registered on the `medtfod` parser by `cli.build_parser`; thin, like the rest of the CLI."""
from __future__ import annotations

from .common import NON_NEGATIVE_INT, POSITIVE, quiet_options, render_options, rendering_options


def cmd_cv(args) -> int:
    import os

    from ..training.cv import CvOptions, format_cv, run_cv
    from ..core.fence import check_outputs
    from ..odapi.runtime import LOG_NAME, library_log
    check_outputs({"--out": args.out}, {"--data": args.data, "--checkpoint": args.checkpoint})
    os.makedirs(args.out, exist_ok=True)
    with library_log(os.path.join(args.out, LOG_NAME), verbose=args.verbose):
        result = run_cv(args.data, args.model, args.out, render_options=render_options(args),
                        options=CvOptions(eval_every=args.eval_every, select_by=args.select_by,
                                          bootstrap=args.bootstrap), quiet=args.quiet, verbose=args.verbose)
    print(format_cv(result))
    print(f"out-of-fold detections and metrics in {args.out} (detections.csv, metrics.json)")
    return 0


def add_parsers(subparsers) -> None:
    """`cv`."""
    from ..training.models import MODELS
    from ..training.selection import METRICS
    cv = subparsers.add_parser("cv", parents=[quiet_options(), rendering_options()],
                               help="K-fold cross-validation on a `convert --folds K` dataset (out-of-fold metrics)")
    cv.add_argument("--data", required=True, help="a `medtfod convert --folds K` output folder")
    cv.add_argument("--model", required=True, choices=sorted(MODELS), help="model family")
    cv.add_argument("--out", required=True, help="folder for the folds' runs, exports and detections")
    cv.add_argument("--eval-every", type=POSITIVE, help="evaluate every N steps while training (a multiple of 100)")
    cv.add_argument("--select-by", metavar="METRIC", help=f"with --eval-every: export each fold's best checkpoint "
                    f"by one of {', '.join(METRICS)}")
    cv.add_argument("--bootstrap", type=NON_NEGATIVE_INT, default=200,
                    help="patient-bootstrap resamples for the out-of-fold CIs (default 200)")
    cv.set_defaults(func=cmd_cv)
