"""Checks `config` makes on the dataset while rendering: training tiles (`check_tiles`) and
whether the anchors can reach the training boxes at all (`check_anchor_reach`). Each prints
what a user should know, or raises UserError."""
from __future__ import annotations

from ..core.errors import UserError


def check_tiles(config, spec, data_dir: str, train_splits, opts) -> None:
    """For a dataset `convert --tile` cut: refuse --positive-fraction (its shards are whole images;
    --tile-keep-empty sets the tiles' balance) and warn when tiles are smaller than the model's
    input (each would be enlarged)."""
    from ..data.tiles import load_tiles
    tiled = load_tiles(data_dir)
    if not tiled or not set(train_splits) & set(tiled.get("splits", {})):
        return
    if opts.positive_fraction is not None:
        raise UserError(f"{data_dir} was cut into training tiles (convert --tile); --positive-fraction samples whole "
                        "images: set the tiles' balance with convert --tile-keep-empty instead")
    arch = getattr(config.model, spec.meta_arch)
    resizer = arch.image_resizer
    kind = resizer.WhichOneof("image_resizer_oneof")
    side = (resizer.fixed_shape_resizer.width if kind == "fixed_shape_resizer"
            else resizer.keep_aspect_ratio_resizer.max_dimension if kind == "keep_aspect_ratio_resizer" else 0)
    note = f"training on the {tiled['size']} px tiles of {', '.join(s for s in train_splits if s in tiled['splits'])}"
    if side and tiled["size"] < side:
        note += (f"; they are smaller than the model's {side} px input and will be enlarged: convert --tile {side} "
                 "matches it (and detect --tile the same size)")
    elif side:
        note += f"; detect with --tile {tiled['size']} to see images as training did"
    print(note, flush=True)


def check_anchor_reach(config, data_dir: str, train_splits) -> None:
    """Print `anchors.reach_warning` (most training boxes smaller than any anchor can match), if any."""
    from ..odapi.anchors import anchor_generator
    try:
        anchor_generator(config)
    except UserError:
        return  # CenterNet: no anchors
    from ..data.dataset import Dataset
    from .anchors import reach_warning
    warning = reach_warning(config, Dataset(data_dir), train_splits)
    if warning:
        print(warning, flush=True)
