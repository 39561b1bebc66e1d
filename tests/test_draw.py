import numpy as np
from PIL import Image

from medtfod.boxes import Box
from medtfod.draw import colour, draw_boxes


def test_boxes_and_captions_are_drawn_in_class_colours():
    gray = Image.fromarray(np.full((100, 120), 128, np.uint8), mode="L")
    out = draw_boxes(gray, [("Mass", 1, 0.9, Box(20, 40, 60, 80))])
    px = np.asarray(out)
    assert out.mode == "RGB" and out.size == (120, 100)
    assert tuple(px[60, 20]) == colour(1)          # left edge of the box
    assert tuple(px[90, 100]) == (128, 128, 128)    # untouched background
    caption = px[20:40, 20:60]                      # caption above the box: filled, with dark text
    assert (caption == colour(1)).all(axis=-1).any() and (caption.sum(axis=-1) < 100).any()


def test_most_confident_box_is_on_top():
    gray = Image.new("L", (100, 100), 128)
    same = Box(20, 40, 60, 80)
    out = np.asarray(draw_boxes(gray, [("Mass", 1, 0.9, same), ("Nodule", 2, 0.2, same)]))
    assert tuple(out[60, 20]) == colour(1)
