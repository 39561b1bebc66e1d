"""Tiny synthetic data sets made in code."""

MASKED_SIZE = 64  # pixels, square


def masked_coco(root, num_images=16, seed=0):
    """A COCO JSON with polygon segmentations and its grey PNGs: 1-2 bright quadrilaterals
    per image, class 'nodule' or 'cyst' (polygon = mask, its bounds = box)."""
    import json

    import numpy as np
    from PIL import Image

    size = MASKED_SIZE
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for i in range(1, num_images + 1):
        pixels = rng.normal(60, 8, (size, size))
        for _ in range(rng.integers(1, 3)):
            x0, y0 = (int(v) for v in rng.integers(4, size - 28, 2))
            w, h = (int(v) for v in rng.integers(10, 24, 2))
            polygon = [x0, y0 + h / 2, x0 + w / 2, y0, x0 + w, y0 + h / 2, x0 + w / 2, y0 + h]  # a diamond
            yy, xx = np.mgrid[:size, :size]
            inside = np.abs(xx - (x0 + w / 2)) / (w / 2) + np.abs(yy - (y0 + h / 2)) / (h / 2) <= 1
            pixels[inside] += 120
            category = int(rng.integers(1, 3))
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": category,
                                "bbox": [x0, y0, w, h], "iscrowd": 0, "segmentation": [polygon]})
        name = f"img{i:03d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images_dir / name)
        images.append({"id": i, "file_name": name, "width": size, "height": size})
    path = root / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "nodule"}, {"id": 2, "name": "cyst"}]}))
    return str(path), str(images_dir)
