import numpy as np
from PIL import Image

from medtfod.core.annotations import Detection
from medtfod.core.boxes import Box
from medtfod.inference.draw import colour, draw_boxes

IDS = {"Mass": 1, "Nodule": 2}


def test_boxes_and_captions_are_drawn_in_class_colours():
    gray = Image.fromarray(np.full((100, 120), 128, np.uint8), mode="L")
    out = draw_boxes(gray, [Detection("x.png", "Mass", 0.9, Box(20, 40, 60, 80))], IDS)
    px = np.asarray(out)
    assert out.mode == "RGB" and out.size == (120, 100)
    assert tuple(px[60, 20]) == colour(1)          # left edge of the box
    assert tuple(px[90, 100]) == (128, 128, 128)    # untouched background
    caption = px[20:40, 20:60]                      # caption above the box: filled, with dark text
    assert (caption == colour(1)).all(axis=-1).any() and (caption.sum(axis=-1) < 100).any()


def test_most_confident_box_is_on_top():
    gray = Image.new("L", (100, 100), 128)
    same = Box(20, 40, 60, 80)
    out = np.asarray(draw_boxes(gray, [Detection("x.png", "Mass", 0.9, same), Detection("x.png", "Nodule", 0.2, same)], IDS))
    assert tuple(out[60, 20]) == colour(1)


def test_boxes_under_a_pixel_wide_are_drawn():
    gray = Image.new("L", (100, 100), 128)
    thin = Box(10.3, 20.2, 10.8, 20.6)   # an untrained model's: xmax - 1 < xmin
    out = np.asarray(draw_boxes(gray, [Detection("x.png", "Mass", 0.9, thin)], IDS, [("Nodule", thin)]))
    assert tuple(out[20, 10]) == colour(1)


def test_box_mask_pasted_onto_the_image():
    import numpy as np
    from medtfod.core.boxes import Box
    from medtfod.core.masks import paste_box_mask
    mask = np.zeros((4, 4), np.float32)
    mask[:, :2] = 1.0  # the box's left half
    bitmap = paste_box_mask(mask, Box(10, 20, 30, 60), 50, 80)
    ys, xs = np.nonzero(bitmap)
    assert bitmap.shape == (80, 50)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 19, 20, 59)
    # a box reaching past the image is cut at its edge
    assert paste_box_mask(np.ones((4, 4)), Box(40, 70, 60, 90), 50, 80).sum() == 10 * 10
