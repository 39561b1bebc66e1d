"""What the `medtfod` subcommand modules share: the argparse parser class and number types,
the option bundles several subcommands take (`quiet_options`, `rendering_options`), the
library-log helpers and the 'interrupted' line. Imported by the group modules, never importing
back from them or from `medtfod.cli`."""
from __future__ import annotations

import argparse
import os
import sys

INTERRUPTED = "medtfod: interrupted; outputs in progress were discarded"


def library_log_in(folder: str, args):
    """TensorFlow's and the OD API's own output -> FOLDER/medtfod.log (live too with -v)."""
    from ..odapi.runtime import LOG_NAME, library_log
    return library_log(os.path.join(folder, LOG_NAME), verbose=args.verbose)


def library_log_temp(args, whose: str = "TensorFlow's and the OD API's", keep_on_user_error: bool = True):
    """TensorFlow's and the OD API's (or `whose`) own output -> a temporary log, kept only on failure."""
    from ..odapi.runtime import library_log
    return library_log(None, verbose=args.verbose, whose=whose, keep_on_user_error=keep_on_user_error)


class Parser(argparse.ArgumentParser):
    """argparse, with usage mistakes ending in exit status 1 like every other user error."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def number(kind, low=None, high=None, low_open=False):
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


POSITIVE = number(int, 1)
NON_NEGATIVE_INT = number(int, 0)
NON_NEGATIVE = number(float, 0.0)
FRACTION = number(float, 0.0, 1.0)
OPEN_FRACTION = number(float, 0.0, 1.0, low_open=True)
POSITIVE_FLOAT = number(float, 0.0, low_open=True)


def quiet_options() -> Parser:
    """-q/--quiet and -v/--verbose, a parent parser for the subcommands that take them."""
    quiet = Parser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    quiet.add_argument("-v", "--verbose", action="store_true",
                       help="show TensorFlow's and the OD API's own log live (it always goes to medtfod.log "
                            "in the output folder)")
    return quiet


def rendering_options() -> Parser:
    """`config`'s options, a parent parser shared with `cv` (read back by `render_options`)."""
    rendering = Parser(add_help=False)
    rendering.add_argument("--batch-size", type=POSITIVE)
    rendering.add_argument("--steps", type=POSITIVE, help="training steps (the LR schedule follows)")
    rendering.add_argument("--image-size", type=POSITIVE, help="model input size in pixels (square)")
    rendering.add_argument("--learning-rate", type=POSITIVE_FLOAT)
    rendering.add_argument("--warmup-steps", type=NON_NEGATIVE_INT)
    rendering.add_argument("--checkpoint", help="fine-tune checkpoint prefix; omitted = train from scratch")
    rendering.add_argument("--augment", help="comma-separated augmentations replacing the template's, "
                           "e.g. random_horizontal_flip,random_adjust_contrast")
    from ..training.augment import PRESETS
    rendering.add_argument("--augment-preset", choices=list(PRESETS),
                           help="a documented list of augmentation steps (README: Augmentation presets): "
                           "cxr has no horizontal flip; us adds contrast, brightness and scale jitter; "
                           "default keeps the template's")
    rendering.add_argument("--tiny", action="store_true",
                           help="a small CPU-friendly variant (128 px, fewer proposals, 15x15 masks) for tests")
    rendering.add_argument("--positive-fraction", type=float, metavar="F",
                           help="train on this share of images with findings, e.g. 0.5 (the OD API's "
                                "sample_from_datasets_weights; needs `convert --shard-by finding`)")
    rendering.add_argument("--hard-negatives", action="store_true",
                           help="SSD, RetinaNet: the OD API's hard example miner (3 negatives per positive, >= 3 per "
                                "image); R-CNN models already sample balanced minibatches, CenterNet has no anchors")
    from ..training.recipes import RECIPES
    rendering.add_argument("--recipe", choices=list(RECIPES),
                           help="measured values for the options left unset (README: Real data): cpu-scratch = "
                                "SSD from scratch on a CPU, batch 8, 256 px, 1,500 steps, rate 0.04, warm-up 375")
    rendering.add_argument("--fit-anchors", action="store_true",
                           help="fit the anchors to the training boxes, as `medtfod anchors` does (SSD, "
                                "RetinaNet, Faster/Mask R-CNN); prints the share of boxes an anchor matches, before and after")
    rendering.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                           help="set any config field, e.g. train_config.batch_size=4 (repeatable)")
    return rendering


def render_options(args):
    """`config.render`'s `RenderOptions` from the options `config` and `cv` share."""
    from ..training.config import RenderOptions, parse_overrides
    return RenderOptions(batch_size=args.batch_size, steps=args.steps, image_size=args.image_size,
                         learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
                         checkpoint=args.checkpoint, augment=args.augment.split(",") if args.augment else None,
                         augment_preset=args.augment_preset,
                         overrides=parse_overrides(args.set), tiny=args.tiny,
                         positive_fraction=args.positive_fraction, hard_negatives=args.hard_negatives,
                         recipe=args.recipe, fit_anchors=args.fit_anchors)
