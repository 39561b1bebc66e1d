"""Training tiles (`convert --tile SIZE`): the training splits' images cut into SIZE x SIZE windows
at native resolution, so a model trained on them learns lesions at the size `detect --tile`
shows them. The windows are `medtfod.core.tiles`' grid, the one tiled detection uses.

    out/tfrecords/<split>-tiles.record-NNNNN-of-MMMMM   the tiles' tf.Examples (PNG), one tile
                                                         shard per whole-image shard of the split
    out/tiles.json                                      every tile: its image, patient, origin,
                                                         size and boxes (see `tiles_json`)

Only the splits a model trains on are tiled (`train`, and every fold of `--folds`); their whole
images are written as well, so val/test, metrics, reports and `detect --dataset` always work on
whole images. `medtfod config` points the training input at the tiles.

A box goes into a tile when at least MIN_VISIBLE of its area is inside the tile, clipped to the
tile's edges; a box kept by no tile (larger than a tile, or cut by every tile it meets) is
counted as `lost` in report.json. `keep_empty` keeps that share of the tiles without boxes (a
fixed draw per image and seed, so reruns give the same tiles). Boxes are float pixel xyxy, in the
tile's own frame inside a tile.
"""
from __future__ import annotations

import io
import random
import zlib
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..core.deep_images import to_8bit
from ..core.annotations import ImageRecord, Object
from ..core.boxes import Box
from ..core.errors import UserError
from ..core.tiles import Window, check_overlap, check_size, tile_windows

MIN_VISIBLE = 0.5


@dataclass(frozen=True)
class TileOptions:
    """`convert --tile SIZE --tile-overlap F --tile-keep-empty F`."""

    size: int
    overlap: float = 0.2
    keep_empty: float = 1.0

    def __post_init__(self):
        check_size(self.size)
        check_overlap(self.overlap)
        if isinstance(self.keep_empty, bool) or not isinstance(self.keep_empty, (int, float)) \
                or not 0 <= self.keep_empty <= 1:
            raise UserError(f"--tile-keep-empty {self.keep_empty!r}: give the share of tiles without boxes to "
                            "keep, from 0 to 1")


def tiled_split(split: str) -> bool:
    """Whether convert tiles `split`: the splits a model trains on (train, the folds of --folds)."""
    return split == "train" or split.startswith("fold")


def tile_prefix(split: str) -> str:
    """The tile shards' name before '-NNNNN-of-MMMMM' (no match for the whole images' `<split>.record-*`)."""
    return f"{split}-tiles.record"


class Tile(NamedTuple):
    """One training tile: its record (boxes in the tile's frame) and where it came from."""

    record: ImageRecord
    window: Window
    image: str


class TileCounts(NamedTuple):
    """What tiling one image gave: tiles kept, of them without boxes, boxes in tiles, boxes in no tile
    (and those boxes: `lost_entry` dicts)."""

    tiles: int
    empty: int
    boxes: int
    lost: int
    lost_boxes: Tuple[Dict[str, object], ...] = ()


def lost_entry(record: ImageRecord, index: int) -> Dict[str, object]:
    """A box in no tile, as report.json lists it: image, source ('file:line' of its row, when known),
    label, box (corners in the image's pixels)."""
    o = record.objects[index]
    return {"image": record.image_id, "source": o.source or None, "label": o.label,
            "box": [o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymax]}


def tile_name(image_id: str, window: Window) -> str:
    """A tile's name: the image's, '@x,y' (its origin in the image)."""
    return f"{image_id}@{window.x},{window.y}"


def _objects_in(record: ImageRecord, window: Window) -> List[Tuple[int, Object]]:
    """(index, object) of the record's objects with at least MIN_VISIBLE of their area inside
    `window`, each clipped and shifted into the window's frame."""
    kept = []
    for i, o in enumerate(record.objects):
        b = o.box
        inside = Box(max(b.xmin, window.x), max(b.ymin, window.y),
                     min(b.xmax, window.x + window.width), min(b.ymax, window.y + window.height))
        if inside.xmax <= inside.xmin or inside.ymax <= inside.ymin or inside.area < MIN_VISIBLE * b.area:
            continue
        kept.append((i, Object(o.label, Box(inside.xmin - window.x, inside.ymin - window.y,
                                            inside.xmax - window.x, inside.ymax - window.y), o.source)))
    return kept


def cut(record: ImageRecord, encoded: bytes, opts: TileOptions, seed: int) -> Tuple[List[Tuple[Tile, bytes]],
                                                                                      TileCounts]:
    """The tiles of one image (its record and file bytes as convert read them) and their counts.

    Returns:
      [(tile, PNG bytes)] in window order (row by row), and the `TileCounts`.

    Raises:
      UserError: the image has instance masks (tiling masks is not supported).
    """
    from PIL import Image

    if record.has_masks:
        raise UserError(f"{record.image_id}: --tile does not cut instance masks yet; convert without --tile "
                        "(or from a source without masks) to train Mask R-CNN")
    draw = random.Random(zlib.crc32(f"{seed}:{record.image_id}".encode("utf-8")))
    placed = [(w, _objects_in(record, w)) for w in tile_windows(record.width, record.height, opts.size, opts.overlap)]
    covered = {i for _, found in placed for i, _ in found}
    lost = tuple(lost_entry(record, i) for i in range(len(record.objects)) if i not in covered)
    kept = [(w, [o for _, o in found]) for w, found in placed if found or draw.random() < opts.keep_empty]
    if not kept:
        return [], TileCounts(0, 0, 0, len(lost), lost)
    with Image.open(io.BytesIO(encoded)) as image:
        image.load()
        image = to_8bit(image)  # 16-bit grey: its high byte, as TensorFlow decodes the whole image's record
        if image.mode not in ("L", "RGB", "RGBA", "P"):  # e.g. a CMYK JPEG: PNG holds grey or RGB
            image = image.convert("RGB")
        tiles = []
        for w, objects in kept:
            buffer = io.BytesIO()
            image.crop((w.x, w.y, w.x + w.width, w.y + w.height)).save(buffer, format="PNG")
            tile = ImageRecord(tile_name(record.image_id, w), record.path, w.width, w.height, record.channels,
                               "png", record.patient_id, objects)
            tiles.append((Tile(tile, w, record.image_id), buffer.getvalue()))
    counts = TileCounts(len(tiles), sum(1 for t, _ in tiles if not t.record.objects),
                        sum(len(t.record.objects) for t, _ in tiles), len(lost), lost)
    return tiles, counts


def tile_shards(split: str, count: int) -> List[str]:
    """The file names of a tiled split's `count` tile shards (tile shard j: whole-image shard j's tiles)."""
    return [_shard_name(split, f"{j:05d}", count) for j in range(count)]


def tile_pattern(split: str, count: int) -> str:
    """The glob of `tile_shards(split, count)`, as a pipeline config's input_path takes it."""
    return _shard_name(split, "?????", count)


def _shard_name(split: str, index: str, count: int) -> str:
    return f"{tile_prefix(split)}-{index}-of-{count:05d}"


def tiles_json(opts: TileOptions, tiles: Dict[str, list]) -> bytes:
    """tiles.json: the options and, per tiled split, its tiles' `tile_entry` dicts sorted by name."""
    import json
    return (json.dumps({"size": opts.size, "overlap": opts.overlap, "keep_empty": opts.keep_empty,
                        "min_visible": MIN_VISIBLE, "splits": tiles}, indent=1) + "\n").encode("utf-8")


def tile_entry(tile: Tile) -> Dict[str, object]:
    """A tile's entry in tiles.json: name, image, patient, x, y, width, height, boxes."""
    r, w = tile.record, tile.window
    return {"name": r.image_id, "image": tile.image, "patient": r.patient_id, "x": w.x, "y": w.y,
            "width": w.width, "height": w.height,
            "boxes": [[o.label, o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymax] for o in r.objects]}


def report_entry(counts: List[TileCounts], opts: TileOptions, pattern: str) -> Dict[str, object]:
    """The 'tiles' entry of a tiled split in report.json."""
    return {"size": opts.size, "overlap": opts.overlap, "keep_empty": opts.keep_empty,
            "tiles": sum(c.tiles for c in counts), "without_boxes": sum(c.empty for c in counts),
            "boxes": sum(c.boxes for c in counts), "lost_boxes": sum(c.lost for c in counts),
            "lost": [entry for c in counts for entry in c.lost_boxes], "tfrecords": pattern}


def check_tiled_split(split: str, entry: Dict[str, object], boxes: int) -> None:
    """Refuse a tiled split that gives training nothing: no tiles, or none of its boxes in a tile
    (the OD API would wait forever on an empty shard, or learn that every lesion is background)."""
    size = entry["size"]
    if boxes and not entry["boxes"]:
        raise UserError(f"--tile {size}: none of the {boxes} boxes of split {split} is at least half inside a "
                        f"{size} px tile (boxes larger than a tile, or cut by the tiles' edges): give a larger --tile "
                        "or a larger --tile-overlap")
    if not entry["tiles"]:
        raise UserError(f"--tile {size}: split {split} has no boxes and --tile-keep-empty {entry['keep_empty']:g} "
                        "kept no tile, so training would have nothing to read")


def load_tiles(data_dir: str) -> Optional[Dict[str, object]]:
    """The dataset's tiles.json (see `tiles_json` in convert), or None when it was not tiled."""
    import json
    import os
    path = os.path.join(data_dir, "tiles.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_options(tile: Optional[TileOptions], with_masks: bool, runner: str = "local") -> None:
    """Refuse what --tile cannot do yet: instance masks, Beam."""
    if tile is None:
        return
    if with_masks:
        raise UserError("--tile does not cut instance masks yet: this source has masks; convert without --tile "
                        "to train Mask R-CNN")
    if runner != "local":
        raise UserError("--tile runs with the local runner only (not on Beam yet); drop --runner or --tile")
