"""`medtfod augment-preview`: what a config's augmentation does to the training images and their
boxes, as a grid picture; thin, like the rest of the CLI."""
from __future__ import annotations

from .common import POSITIVE, library_log_temp, quiet_options


def cmd_augment_preview(args) -> int:
    from ..training.augment_preview import augment_preview
    with library_log_temp(args):
        out = augment_preview(args.config, args.out, n=args.n, seed=args.seed, tile_size=args.tile_size)
    print(f"wrote {out}: {args.n} augmented training samples with their boxes")
    return 0


def add_parsers(subparsers) -> None:
    preview = subparsers.add_parser(
        "augment-preview", parents=[quiet_options()],
        help="draw augmented training samples with their boxes (the config's augmentation, through the OD API)")
    preview.add_argument("--config", required=True, help="a pipeline.config (`medtfod config`'s output)")
    preview.add_argument("--out", required=True, help="the grid PNG to write")
    preview.add_argument("--n", type=POSITIVE, default=16, help="how many samples (default 16)")
    preview.add_argument("--seed", type=int, default=0, help="random seed: the same seed draws the same grid (default 0)")
    preview.add_argument("--tile-size", type=POSITIVE, default=256, help="each sample's tile in pixels (default 256)")
    preview.set_defaults(func=cmd_augment_preview)
