"""`medtfod demo` and `medtfod doctor`; thin, like the rest of the CLI."""
from __future__ import annotations

import os

from .common import POSITIVE, library_log_in, quiet_options


def cmd_demo(args) -> int:
    from ..demo import run_demo
    with library_log_in(args.workspace, args):
        run_demo(args.workspace, num_images=args.num_images, steps=args.steps, quiet=args.quiet, verbose=args.verbose)
    return 0


def cmd_doctor(args) -> int:
    from ..doctor import doctor
    from ..odapi.runtime import library_log
    with library_log(None, verbose=args.verbose):  # TensorFlow's start-up chatter is not the report
        return doctor()


def _add_demo(subparsers) -> None:
    demo = subparsers.add_parser("demo", parents=[quiet_options()],
                                 help="synthetic data -> convert -> train -> eval -> export -> detect")
    demo.add_argument("--workspace", default=os.path.join("workspace", "demo"))
    demo.add_argument("--num-images", type=POSITIVE, default=300)
    demo.add_argument("--steps", type=POSITIVE, default=600)
    demo.set_defaults(func=cmd_demo)


def _add_doctor(subparsers) -> None:
    doctor = subparsers.add_parser("doctor", help="check the installation")
    doctor.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's own log live")
    doctor.set_defaults(func=cmd_doctor)


_PARSERS = {"demo": _add_demo, "doctor": _add_doctor}


def add_parsers(subparsers, *names: str) -> None:
    """This group's subcommands, `names` only when given (see `training.add_parsers`)."""
    for name in names or _PARSERS:
        _PARSERS[name](subparsers)
