"""The `medtfod` command: one parser, thin subcommands that call typed functions.

`build_parser()` is separate from `main(argv)` so tests can drive the CLI in-process.
A `UserError` prints as `medtfod: error: ...` with exit status 1 and no traceback.

Each command group is a module with its `cmd_*` functions and its part of the parser
(`add_parsers`): `data` (convert, audit), `training` (config, anchors, train, eval, export, pretrained,
tensorboard), `inference` (detect), `evaluation` (calibrate, metrics, report), `review`
(annotate, review-diff), `augment` (augment-preview), `cv`, `tools` (demo, doctor); what they
share is in `common`.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import List, Optional

from .. import __version__
from ..core.errors import UserError
from . import augment, cv, data, evaluation, inference, review, tools, training
from .common import INTERRUPTED, Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="medtfod", description="TF Object Detection API workflow for medical images.")
    parser.add_argument("--version", action="version", version=f"medtfod {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # `medtfod --help` lists the subcommands in the workflow's order, which interleaves the groups
    data.add_parsers(sub)
    training.add_parsers(sub, "config", "anchors")
    augment.add_parsers(sub)
    training.add_parsers(sub, "train", "eval", "export")
    inference.add_parsers(sub)
    evaluation.add_parsers(sub, "calibrate")
    tools.add_parsers(sub, "demo")
    evaluation.add_parsers(sub, "metrics", "report")
    training.add_parsers(sub, "pretrained", "tensorboard")
    review.add_parsers(sub)
    cv.add_parsers(sub)
    tools.add_parsers(sub, "doctor")
    return parser


# Options whose value may begin with '-' and a digit (a window given as W,L may start with a minus
# sign: argparse would take '-5,40' for an option). Their next word is taken as the value.
NEGATIVE_VALUES = ("--window",)


def _join_negative_values(argv: List[str]) -> List[str]:
    """['--window', '-5,40'] -> ['--window=-5,40'] (argparse takes '-5,40' for an option)."""
    out: List[str] = []
    for word in argv:
        if out and out[-1] in NEGATIVE_VALUES and word[:1] == "-" and word[1:2].isdigit():
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    from ..training.cluster import drop_blank_tf_config
    drop_blank_tf_config()
    previous = _terminate_as_interrupt()
    try:
        return args.func(args)
    except Terminated:
        print(INTERRUPTED.replace("interrupted", "terminated (SIGTERM)"), file=sys.stderr)
        return 143
    except UserError as e:
        print(f"medtfod: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:  # the light ONNX install: one line instead of an import traceback
        from ..odapi.runtime import NEEDS_TF, TF_MODULES
        if (e.name or "").split(".")[0] not in TF_MODULES:
            raise
        print(f"medtfod: error: {NEEDS_TF} (missing: {e.name})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, batch schedulers and container runtimes send), raised where Ctrl-C's
    KeyboardInterrupt would be, so that the same clean-up runs: outputs in progress are removed."""


def _terminate_as_interrupt():
    """Make SIGTERM raise `Terminated` in the main thread while a command runs; returns the
    handler to restore (None when it was not the default, or off the main thread)."""
    import threading
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return None

    command = os.getpid()

    def terminated(signum, frame):
        if os.getpid() != command:  # a forked worker (process pools stop theirs with SIGTERM): die quietly
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()
    return signal.signal(signal.SIGTERM, terminated)


if __name__ == "__main__":
    sys.exit(main())
