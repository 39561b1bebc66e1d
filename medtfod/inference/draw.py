"""Drawing labelled boxes on images (one colour per class, readable on grayscale)."""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

from ..core.annotations import Detection
from ..core.boxes import Box

# Saturated colours that stand out on gray radiographs and ultrasound.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (255, 64, 64), (64, 160, 255), (255, 200, 0), (0, 220, 120),
    (255, 64, 255), (255, 140, 0), (0, 230, 230), (160, 255, 0),
)


@lru_cache(maxsize=16)
def _font(size: int):
    return ImageFont.load_default(size=size)


def colour(class_id: int) -> Tuple[int, int, int]:
    return PALETTE[(class_id - 1) % len(PALETTE)]


GROUND_TRUTH = (255, 255, 255)  # ground truth is drawn in white, under the detections


def _outline(box: Box) -> Tuple[float, float, float, float]:
    """The corners Pillow outlines for `box` (its last pixel is xmax - 1); a box under a pixel
    wide or high (an untrained model's, or a rounded one) is drawn as one pixel, not refused."""
    return box.xmin, box.ymin, max(box.xmin, box.xmax - 1), max(box.ymin, box.ymax - 1)


def draw_boxes(image: Image.Image, detections: Sequence[Detection], class_ids: Mapping[str, int],
               ground_truth: Optional[Sequence[Tuple[str, Box]]] = None) -> Image.Image:
    """An RGB copy of `image` with each `Detection` drawn and captioned in its class's colour
    (`class_ids`: label -> 1-based id, the label map's), and, when given, the ground-truth
    (label, Box) pairs outlined in white first.

    Boxes are pixel xyxy (medtfod's convention). The caption 'label 0.93' sits above the
    box, or inside it when the box touches the top edge. Lower scores are drawn first, so
    where boxes overlap the most confident one stays visible on top.
    """
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    side = min(out.size)
    width = max(1, side // 200)
    font = _font(max(10, side // 28))
    for label, box in ground_truth or ():
        draw.rectangle(_outline(box), outline=GROUND_TRUTH, width=width)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        draw.text((box.xmin + width - left, box.ymax - (bottom - top) - 2 * width - top), label,
                  fill=GROUND_TRUTH, font=font)
    for _image, label, score, box in sorted(detections, key=lambda d: d.score):
        c = colour(class_ids[label])
        draw.rectangle(_outline(box), outline=c, width=width)
        text = f"{label} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        y = box.ymin - th - 2 * width if box.ymin - th - 2 * width >= 0 else box.ymin
        draw.rectangle([box.xmin, y, box.xmin + tw + 2 * width, y + th + 2 * width], fill=c)
        draw.text((box.xmin + width - left, y + width - top), text, fill=(0, 0, 0), font=font)
    return out
