"""The small-lesion benchmark's generator (benchmarks/lesion_images.py): its boxes are the blobs it draws."""
import csv
import importlib.util
import os
import sys

import numpy as np

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "lesion_images.py")
_spec = importlib.util.spec_from_file_location("lesion_images", _PATH)
lesion_images = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("lesion_images", lesion_images)   # dataclasses look their module up
_spec.loader.exec_module(lesion_images)


def test_boxes_match_the_drawn_blobs():
    size = 256
    rng = np.random.default_rng(3)
    lesions = lesion_images.place_lesions(rng, size, 3, (8.0, 24.0), (30.0, 40.0))
    with_lesions = lesion_images.draw(np.random.default_rng(7), size, lesions).astype(int)
    without = lesion_images.draw(np.random.default_rng(7), size, []).astype(int)
    added = with_lesions - without     # the same background: what the lesions added
    for lesion in lesions:
        x0, y0, x1, y1 = lesion.box
        assert abs(x1 - x0 - lesion.diameter) < 1e-9 and 8 <= lesion.diameter <= 24
        ys, xs = np.nonzero(added[max(0, int(y0) - 4):int(y1) + 5, max(0, int(x0) - 4):int(x1) + 5] > lesion.contrast / 2)
        xs, ys = xs + max(0, int(x0) - 4), ys + max(0, int(y0) - 4)
        # pixel k covers [k, k+1): the blob's pixels span the box within a pixel
        assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
        assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1
        centre = added[int(lesion.cy), int(lesion.cx)]
        assert abs(centre - lesion.contrast) <= 1.5 or with_lesions[int(lesion.cy), int(lesion.cx)] == 255
    outside = np.ones((size, size), bool)
    for lesion in lesions:
        x0, y0, x1, y1 = lesion.box
        outside[max(0, int(y0) - 1):int(y1) + 2, max(0, int(x0) - 1):int(x1) + 2] = False
    assert np.abs(added[outside]).max() <= 1   # nothing drawn outside the boxes (rounding and clipping only)


def test_plan_and_table(tmp_path):
    images = lesion_images.plan(6, size=96, seed=1, diameters=(8.0, 12.0))
    per_patient = {}
    for item in images:
        per_patient[item.patient] = per_patient.get(item.patient, 0) + 1
        for a in item.lesions:
            assert 0 <= a.box[0] and a.box[2] <= 96 and 0 <= a.box[1] and a.box[3] <= 96
            for b in item.lesions:
                if a is not b:   # boxes never overlap
                    assert a.box[2] <= b.box[0] or b.box[2] <= a.box[0] or a.box[3] <= b.box[1] or b.box[3] <= a.box[1]
    assert set(per_patient.values()) <= {2, 3} and len(per_patient) == 6
    assert images == lesion_images.plan(6, size=96, seed=1, diameters=(8.0, 12.0))   # seeded
    table = lesion_images.write(str(tmp_path), images, size=96, seed=1)
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(max(1, len(i.lesions)) for i in images)
    first = next(i for i in images if i.lesions)
    row = next(r for r in rows if r["image"] == first.name)
    assert abs(float(row["x"]) - first.lesions[0].box[0]) < 0.01 and abs(float(row["w"]) - first.lesions[0].diameter) < 0.01
    assert all(os.path.isfile(tmp_path / i.name) for i in images)
