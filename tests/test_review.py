"""The review logic behind `medtfod report`: confusion-matrix counts and the gallery's order,
on hand-made detections."""
from medtfod.core.annotations import Detection as Det
from medtfod.core.boxes import Box
from medtfod.evaluation.gallery import BACKGROUND, confusion_matrix, gallery_order, review

A, B, FAR = Box(0, 0, 10, 10), Box(20, 20, 30, 30), Box(50, 50, 60, 60)
GT = {
    "hit.png": [("Mass", A)],                       # found, right label
    "wrong.png": [("Mass", A)],                     # found with the wrong label
    "miss.png": [("Mass", A), ("Nodule", B)],       # the nodule is missed
    "fp.png": [],                                   # a negative with a false positive
    "neg.png": [],                                  # a clean negative
}
DETS = [Det("hit.png", "Mass", 0.9, A), Det("hit.png", "Mass", 0.2, FAR),   # 0.2 is under the threshold
        Det("wrong.png", "Nodule", 0.8, A),
        Det("miss.png", "Mass", 0.7, A),
        Det("fp.png", "Nodule", 0.95, FAR), Det("fp.png", "Mass", 0.6, FAR)]


def test_confusion_matrix_counts():
    reviews = review(GT, DETS, iou=0.5, min_score=0.5)
    m = confusion_matrix(reviews, ["Mass", "Nodule"])
    assert m["Mass"] == {"Mass": 2, "Nodule": 1, BACKGROUND: 0}      # hit + miss.png's mass; wrong.png
    assert m["Nodule"] == {"Mass": 0, "Nodule": 0, BACKGROUND: 1}    # miss.png's nodule
    assert m[BACKGROUND] == {"Mass": 1, "Nodule": 1, BACKGROUND: 0}  # fp.png's two false positives
    # every ground-truth box is counted once, in its own row
    assert sum(m["Mass"].values()) == 3 and sum(m["Nodule"].values()) == 1


def test_matching_prefers_the_detections_own_class():
    gt = {"x.png": [("Nodule", A), ("Mass", Box(0, 0, 10, 9))]}  # the Nodule box overlaps best
    r = review(gt, [Det("x.png", "Mass", 0.9, A)], iou=0.5, min_score=0.0)["x.png"]
    assert r.true_positives and not r.confused and r.missed == [("Nodule", A)]


def test_gallery_is_worst_first_and_capped():
    reviews = review(GT, DETS, iou=0.5, min_score=0.5)
    order, left_out = gallery_order(reviews)
    assert [r.image for r in order] == ["miss.png", "fp.png", "wrong.png", "hit.png", "neg.png"]
    assert left_out == 0
    assert reviews["miss.png"].outcomes == ["missed", "tp"] and reviews["neg.png"].outcomes == ["negative"]
    order, left_out = gallery_order(reviews, limit=2)
    assert [r.image for r in order] == ["miss.png", "fp.png"] and left_out == 3
