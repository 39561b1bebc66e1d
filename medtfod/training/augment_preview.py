"""`medtfod augment-preview`: a grid of augmented training samples with their boxes, so a person
can see that the boxes still sit on the lesions after the config's augmentation.

The samples come from the OD API's own decoder and preprocessor (`odapi.augment`); this module
only lays them out and draws them (Pillow).
"""
from __future__ import annotations

import io
import math
import os
from typing import Mapping, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..core import atomic
from ..core.errors import UserError
from ..core.fence import check_outputs
from ..core.labelmap import read_label_map
from ..inference.draw import colour
from ..odapi import protos
from ..odapi.augment import AugmentedSample, augmented_samples
from .augment import step_names
from .config import data_inputs

BACKGROUND = (24, 24, 24)
CAPTION = (220, 220, 220)
MAX_COLUMNS = 8


def _tile(sample: AugmentedSample, names: Mapping[int, str], size: int, font, font_size: int) -> Image.Image:
    """`sample` fitted into a `size` x `size` tile (aspect kept, centred), its boxes drawn in
    their class's colour and named, its source file written underneath."""
    image = Image.fromarray(sample.image[..., 0] if sample.image.shape[-1] == 1 else sample.image).convert("RGB")
    scale = size / max(image.size)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    caption_height = font_size + 6
    tile = Image.new("RGB", (size, size + caption_height), BACKGROUND)
    left, top = (size - width) // 2, (size - height) // 2
    tile.paste(image.resize((width, height), Image.BILINEAR), (left, top))
    draw = ImageDraw.Draw(tile)
    line = max(1, size // 128)
    for box, class_id in zip(sample.boxes, sample.classes):
        x0, y0 = left + box.xmin * scale, top + box.ymin * scale
        x1, y1 = left + box.xmax * scale, top + box.ymax * scale
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour(class_id), width=line)
        label = names.get(class_id, str(class_id))
        text_top = y0 - font_size - 2 if y0 - font_size - 2 >= 0 else y1 + 1
        draw.text((x0, text_top), label, fill=colour(class_id), font=font)
    draw.text((4, size + 3), sample.source, fill=CAPTION, font=font)
    return tile


def _wrap(text: str, font, width: int) -> list:
    """`text` broken at spaces into lines at most `width` pixels wide (a longer word stays whole)."""
    lines = []
    for word in text.split(" "):
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def draw_grid(samples: Sequence[AugmentedSample], names: Mapping[int, str], title: str = "",
              tile_size: int = 256) -> Image.Image:
    """The samples as a grid of `tile_size` tiles (up to 8 columns, as square as possible), under
    a `title` line; boxes (pixel xyxy on each sample's image) in their class's colour.

    Args:
      names: label map id -> class name, for the box labels.
    """
    font_size = max(10, tile_size // 20)
    font = ImageFont.load_default(size=font_size)
    columns = min(MAX_COLUMNS, math.ceil(math.sqrt(len(samples))))
    rows = math.ceil(len(samples) / columns)
    tiles = [_tile(s, names, tile_size, font, font_size) for s in samples]
    gap = 4
    tile_w, tile_h = tiles[0].size
    width = columns * (tile_w + gap) + gap
    lines = _wrap(title, font, width - 2 * gap) if title else []
    header = len(lines) * (font_size + 4) + (6 if lines else 0)
    grid = Image.new("RGB", (width, header + rows * (tile_h + gap) + gap), BACKGROUND)
    for k, text in enumerate(lines):
        ImageDraw.Draw(grid).text((gap + 2, 5 + k * (font_size + 4)), text, fill=CAPTION, font=font)
    for i, tile in enumerate(tiles):
        row, column = divmod(i, columns)
        grid.paste(tile, (gap + column * (tile_w + gap), header + gap + row * (tile_h + gap)))
    return grid


def augment_preview(config_path: str, out: str, n: int = 16, seed: Optional[int] = 0,
                    tile_size: int = 256) -> str:
    """`medtfod augment-preview` as a function: draw `n` augmented training samples of the
    pipeline config at `config_path` (its `data_augmentation_options`, through the OD API's own
    preprocessor) with their boxes into a PNG grid, written atomically to `out`.

    Args:
      n: how many samples (the first training images with a box, repeated when fewer).
      seed: TensorFlow's seed, so the same call draws the same picture; None draws anew.
      tile_size: each sample's square tile, in pixels.

    Returns:
      `out`.

    Raises:
      UserError: `out` among the config's inputs, a missing config, or no training image with a box.
    """
    if not os.path.isfile(config_path):
        raise UserError(f"--config {config_path}: no such file")
    if not out.lower().endswith(".png"):
        raise UserError(f"--out {out}: the preview is a PNG; give a path ending in .png")
    check_outputs({"--out": out}, dict(data_inputs(config_path), **{"--config": config_path}))
    config = protos.read_pipeline_config(config_path)
    label_map = read_label_map(config.train_input_reader.label_map_path)
    names = {class_id: name for name, class_id in label_map.ids.items()}
    samples = augmented_samples(config, n=n, seed=seed)
    steps = step_names(config.train_config) or ["none"]
    grid = draw_grid(samples, names, title="augmentation: " + ", ".join(steps), tile_size=tile_size)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic.write_file(out, buffer.getvalue())
    return out
