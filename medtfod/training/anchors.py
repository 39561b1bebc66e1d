"""Anchors fitted to a dataset's boxes (`medtfod anchors`, `config --fit-anchors`).

A detector can only learn a box that some anchor matches well: SSD's matcher takes an anchor as
positive at IoU >= 0.5 with a ground-truth box, Faster R-CNN's first stage at 0.7. The zoo's
anchors were made for COCO objects in 320-640 px inputs; a 20 px nodule on a 2048 px film is 3 px
after the resize, and no anchor reaches it.

The measure (`coverage`): the share of the training split's ground-truth boxes whose best anchor
reaches the IoU threshold, with both in the model's input frame (the config's image_resizer
applied to each image's size: fixed_shape_resizer stretches, keep_aspect_ratio_resizer scales and
pads) and the anchors where the OD API's own generator puts them on its grids
(`odapi.anchors.anchor_boxes`), not only their shapes.

The fit searches, for
  ssd          (multiscale_anchor_generator) min_level (the template's, or one finer for
               feature extractors that have it, the FPN's too), anchor_scale, scales_per_octave
               and aspect_ratios (the template's, or k-means of the boxes' log aspect ratio
               with k = 1 or 3);
  faster_rcnn  (grid_anchor_generator) scales (the template's, or k-means of the boxes' log
               size over the base anchor, k = 3, 4 or 5) and aspect_ratios (as for ssd, k = 3),
(SSD covers RetinaNet, an SSD with a ResNet50 FPN; CenterNet has no anchors and is refused)
the candidate with the highest coverage at the model's own matcher threshold. Among those within
1 percentage point of it, the template wins when it is one of them (a config that already covers
the boxes is left alone), else the one with the fewest anchors per image (each anchor costs
compute and adds negatives). The template is a candidate, so the fit is never worse on this
measure. Boxes: float pixel corners (xmin, ymin, xmax, ymax), as `medtfod.Box`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import UserError

SEARCH_BOXES = 2000      # boxes the search scores (a fixed sample); the report uses all of them
TOLERANCE = 0.01         # coverage within this of the best counts as the best; fewest anchors win
SSD_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
SSD_SCALES_PER_OCTAVE = (1, 2, 3)
# extractors whose FPN can start a level finer. Not ssd_resnet50_v1_fpn_keras (RetinaNet): at
# min_level 2 its model does not build ("Number of feature maps is expected to equal the length of
# `num_anchors_per_location`"), so its fit keeps the template's level 3.
FINER_LEVEL = {"ssd_mobilenet_v2_fpn_keras": 2}
RCNN_SCALE_COUNTS = (3, 4, 5)
RCNN_PROPOSAL_MATCH = 0.7  # the first stage's matched_threshold (see matcher_threshold)


@dataclass(frozen=True)
class Coverage:
    """How well one anchor setting covers the boxes.

    Attributes:
      params: the generator's fields ('min_level', 'anchor_scale', ... or 'scales', ...).
      threshold: the model's matcher threshold (ssd 0.5, faster_rcnn's first stage 0.7).
      at_05: share of boxes whose best anchor has IoU >= 0.5.
      at_threshold: the same at `threshold`.
      small_at_threshold: the same over the smallest third of the boxes (by input-frame size).
      mean_best_iou: mean over boxes of the best anchor IoU.
      anchors: anchors per image (of the most common input canvas).
    """
    params: Dict[str, object]
    threshold: float
    at_05: float
    at_threshold: float
    small_at_threshold: float
    mean_best_iou: float
    anchors: int


@dataclass
class InputBoxes:
    """The boxes of a split in the model's input frame, grouped by input canvas (height, width)."""
    by_canvas: Dict[Tuple[int, int], np.ndarray] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.by_canvas.values())

    def sizes(self) -> np.ndarray:
        boxes = np.concatenate(list(self.by_canvas.values()))
        return np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))

    def ratios(self) -> np.ndarray:
        boxes = np.concatenate(list(self.by_canvas.values()))
        return (boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])

    def sample(self, n: int, seed: int = 0) -> "InputBoxes":
        if self.count <= n:
            return self
        rng = np.random.default_rng(seed)
        keep = {}
        for canvas, boxes in self.by_canvas.items():
            take = max(1, round(n * len(boxes) / self.count))
            keep[canvas] = boxes[np.sort(rng.choice(len(boxes), min(take, len(boxes)), replace=False))]
        return InputBoxes(keep)


def resize_frame(resizer, width: int, height: int) -> Tuple[float, float, int, int]:
    """(x scale, y scale, canvas height, canvas width) of the OD API's `image_resizer` on an image
    of width x height pixels (`preprocessor.resize_to_range` for keep_aspect_ratio_resizer)."""
    kind = resizer.WhichOneof("image_resizer_oneof")
    if kind == "fixed_shape_resizer":
        r = resizer.fixed_shape_resizer
        return r.width / width, r.height / height, r.height, r.width
    if kind == "keep_aspect_ratio_resizer":
        r = resizer.keep_aspect_ratio_resizer
        scale = r.min_dimension / min(width, height)
        if round(max(width, height) * scale) > r.max_dimension:
            scale = r.max_dimension / max(width, height)
        new_h, new_w = round(height * scale), round(width * scale)
        if r.pad_to_max_dimension:
            return scale, scale, r.max_dimension, r.max_dimension
        return scale, scale, new_h, new_w
    raise UserError(f"cannot fit anchors for an {kind or 'unset'} image_resizer; "
                    "fixed_shape_resizer and keep_aspect_ratio_resizer are supported")


def input_boxes(dataset, splits: Union[str, Sequence[str]], config) -> InputBoxes:
    """The ground-truth boxes of `splits` (one name or several) of `dataset` (a `Dataset`) in
    `config`'s input frame; for a split `convert --tile` cut, its tiles' boxes (what training sees).

    Raises:
      UserError: the splits have no boxes.
    """
    from ..odapi.anchors import anchor_generator
    arch, _ = anchor_generator(config)
    resizer = getattr(config.model, arch).image_resizer
    splits = [splits] if isinstance(splits, str) else list(dict.fromkeys(splits))  # a split named twice counts once
    groups: Dict[Tuple[int, int], List[List[float]]] = {}
    from ..data.tiles import load_tiles
    tiles = (load_tiles(dataset.path) or {}).get("splits", {})
    for split in splits:
        if split not in dataset.splits:
            raise UserError(f"{dataset.path} has no split {split!r}; it has {', '.join(dataset.splits)}")
        if split in tiles:  # a split convert --tile cut: the model trains on its tiles
            for tile in tiles[split]:
                sx, sy, ch, cw = resize_frame(resizer, tile["width"], tile["height"])
                for _, x0, y0, x1, y1 in tile["boxes"]:
                    groups.setdefault((ch, cw), []).append([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
            continue
        sizes = {e.name: (e.width, e.height) for e in dataset.images(split)}
        for name, objects in dataset.ground_truth(split).items():
            if not objects or name not in sizes:
                continue
            sx, sy, ch, cw = resize_frame(resizer, *sizes[name])
            for _, box in objects:
                groups.setdefault((ch, cw), []).append(
                    [box.xmin * sx, box.ymin * sy, box.xmax * sx, box.ymax * sy])
    if not groups:
        raise UserError(f"{dataset.path}: split {' + '.join(splits)} has no ground-truth boxes to fit anchors to")
    return InputBoxes({canvas: np.array(b, dtype=np.float64) for canvas, b in sorted(groups.items())})


def best_ious(boxes: np.ndarray, anchors: np.ndarray, chunk: int = 256) -> np.ndarray:
    """For each box [n, 4] the highest IoU with any anchor [m, 4] (both xyxy pixels)."""
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    best = np.zeros(len(boxes))
    for start in range(0, len(boxes), chunk):
        b = boxes[start:start + chunk, None, :]
        w = np.clip(np.minimum(b[..., 2], anchors[:, 2]) - np.maximum(b[..., 0], anchors[:, 0]), 0, None)
        h = np.clip(np.minimum(b[..., 3], anchors[:, 3]) - np.maximum(b[..., 1], anchors[:, 1]), 0, None)
        inter = w * h
        area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
        best[start:start + chunk] = (inter / (area_b + area_a - inter)).max(axis=1)
    return best


def matcher_threshold(config) -> float:
    """The IoU at which the model's matcher takes an anchor as positive."""
    if config.model.WhichOneof("model") == "ssd":
        matcher = config.model.ssd.matcher
        return matcher.argmax_matcher.matched_threshold if matcher.HasField("argmax_matcher") else 0.5
    # Fixed in the OD API: target_assigner.create_target_assigner('FasterRCNN', 'proposal') builds
    # ArgMaxMatcher(matched_threshold=0.7, unmatched_threshold=0.3); the config has no field for it.
    return RCNN_PROPOSAL_MATCH


def coverage(config, boxes: InputBoxes, cache: Optional[dict] = None) -> Coverage:
    """`Coverage` of `config`'s anchors over `boxes` (see the module docstring)."""
    from ..odapi.anchors import anchor_boxes, anchor_generator
    _, proto = anchor_generator(config)
    key = proto.SerializeToString()
    best, counts = [], {}
    for canvas, b in boxes.by_canvas.items():
        anchors = (cache or {}).get((key, canvas))
        if anchors is None:
            anchors = anchor_boxes(config, *canvas)
            if cache is not None:
                cache[(key, canvas)] = anchors
        best.append(best_ious(b, anchors))
        counts[canvas] = len(anchors)
    best = np.concatenate(best)
    threshold = matcher_threshold(config)
    small = boxes.sizes() <= np.quantile(boxes.sizes(), 1 / 3)
    common = max(boxes.by_canvas, key=lambda c: len(boxes.by_canvas[c]))
    return Coverage(params=generator_params(config), threshold=threshold,
                    at_05=float(np.mean(best >= 0.5)), at_threshold=float(np.mean(best >= threshold)),
                    small_at_threshold=float(np.mean(best[small] >= threshold)),
                    mean_best_iou=float(best.mean()), anchors=counts[common])


def generator_params(config) -> Dict[str, object]:
    from ..odapi.anchors import anchor_generator
    arch, proto = anchor_generator(config)
    if arch == "ssd":
        g = proto.multiscale_anchor_generator
        return {"min_level": g.min_level, "max_level": g.max_level, "anchor_scale": round(g.anchor_scale, 4),
                "scales_per_octave": g.scales_per_octave, "aspect_ratios": [round(a, 4) for a in g.aspect_ratios]}
    g = proto.grid_anchor_generator
    return {"scales": [round(s, 4) for s in g.scales], "aspect_ratios": [round(a, 4) for a in g.aspect_ratios],
            "base": [g.height, g.width], "stride": [g.height_stride, g.width_stride]}


def smallest_anchor_area(config) -> float:
    """The area, in input pixels, of the smallest anchor `config`'s generator makes: SSD's
    multiscale generator (anchor_scale * 2**min_level)**2 (its other scales are larger, aspect
    ratios keep the area); the grid generator min(scales)**2 * height * width."""
    from ..odapi.anchors import anchor_generator
    arch, proto = anchor_generator(config)
    if arch == "ssd":
        g = proto.multiscale_anchor_generator
        return float((g.anchor_scale * 2 ** g.min_level) ** 2)
    g = proto.grid_anchor_generator
    return float(min(g.scales) ** 2 * g.height * g.width)


POOR_REACH = 0.9  # config warns when at least this share of the training boxes no anchor can match


def forced_match(config) -> bool:
    """Whether the matcher gives every box its best anchor even below the threshold (SSD's
    argmax_matcher force_match_for_each_row; the OD API's Faster R-CNN first stage always does)."""
    if config.model.WhichOneof("model") != "ssd":
        return True
    matcher = config.model.ssd.matcher
    return matcher.HasField("argmax_matcher") and matcher.argmax_matcher.force_match_for_each_row


def reach_warning(config, dataset, splits: Union[str, Sequence[str]]) -> Optional[str]:
    """A warning when nearly all training boxes are too small for any anchor of `config` to match
    them at the matcher's threshold, else None (also for families without anchors, and splits
    without boxes).

    A box of area A and an anchor of area a have IoU <= min(A, a) / max(A, a), so the threshold t
    needs A >= t * a: a smaller box is never matched on its own merit, whatever its place. With
    force_match_for_each_row its best anchor is still made its one positive (a poor fit the
    regression must stretch); without it, the box has none. Exact and cheap (no TensorFlow,
    unlike `coverage`)."""
    try:
        boxes = input_boxes(dataset, splits, config)
    except UserError:
        return None
    threshold, area = matcher_threshold(config), smallest_anchor_area(config)
    sizes = boxes.sizes()
    share = float(np.mean(sizes ** 2 < threshold * area))
    if share < POOR_REACH:
        return None
    then = ("each gets only its one forced best anchor as a positive" if forced_match(config)
            else "they get no positive anchor, and the model cannot learn them")
    return (f"warning: {share:.0%} of the {boxes.count} training boxes are too small for any anchor to match at IoU >= "
            f"{threshold:g} (that needs a box of at least {threshold:g} x the smallest anchor's area, "
            f"{area ** 0.5:.0f} px square in the model's input; median box {np.median(sizes):.0f} px): {then}. "
            "--fit-anchors (or `medtfod anchors`) fits the anchors to the boxes")


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 50) -> List[float]:
    """k cluster centres of 1-D `values` (Lloyd's algorithm from the quantiles), sorted."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        new = np.array([values[labels == i].mean() if np.any(labels == i) else centres[i] for i in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return sorted(float(c) for c in centres)


def _fitted_ratios(boxes: InputBoxes, k: int) -> List[float]:
    return sorted({round(float(np.exp(c)), 2) for c in kmeans_1d(np.log(boxes.ratios()), k)})


def candidates(config, boxes: InputBoxes) -> List[Dict[str, object]]:
    """The generator settings the fit tries (see the module docstring); the template's first."""
    from ..odapi.anchors import anchor_generator
    arch, proto = anchor_generator(config)
    template = generator_params(config)
    ratio_sets = [template["aspect_ratios"]] + [_fitted_ratios(boxes, k) for k in (1, 3)]
    found = [template]
    if arch == "ssd":
        extractor = config.model.ssd.feature_extractor.type
        levels = [template["min_level"]]
        if FINER_LEVEL.get(extractor, template["min_level"]) < template["min_level"]:
            levels.append(template["min_level"] - 1)
        for level, scale, octave, ratios in itertools.product(levels, SSD_SCALES, SSD_SCALES_PER_OCTAVE, ratio_sets):
            found.append(dict(template, min_level=level, anchor_scale=scale, scales_per_octave=octave,
                              aspect_ratios=list(ratios)))
    else:
        base = float(np.sqrt(proto.grid_anchor_generator.height * proto.grid_anchor_generator.width))
        scale_sets = [template["scales"]] + [
            sorted({round(float(np.exp(c)), 3) for c in kmeans_1d(np.log(boxes.sizes() / base), k)})
            for k in RCNN_SCALE_COUNTS]
        for scales, ratios in itertools.product(scale_sets, ratio_sets):
            found.append(dict(template, scales=list(scales), aspect_ratios=list(ratios)))
    unique = []
    for c in found:
        if c not in unique:
            unique.append(c)
    return unique


def apply_params(config, params: Dict[str, object]) -> None:
    """Set the anchor generator (and, for ssd, the FPN's levels) of `config` to `params`."""
    from ..odapi.anchors import anchor_generator
    arch, proto = anchor_generator(config)
    if arch == "ssd":
        g = proto.multiscale_anchor_generator
        g.min_level, g.max_level = int(params["min_level"]), int(params["max_level"])
        g.anchor_scale, g.scales_per_octave = float(params["anchor_scale"]), int(params["scales_per_octave"])
        del g.aspect_ratios[:]
        g.aspect_ratios.extend(float(a) for a in params["aspect_ratios"])
        fpn = config.model.ssd.feature_extractor.fpn
        if config.model.ssd.feature_extractor.HasField("fpn"):
            fpn.min_level, fpn.max_level = g.min_level, g.max_level
    else:
        g = proto.grid_anchor_generator
        del g.scales[:]
        g.scales.extend(float(s) for s in params["scales"])
        del g.aspect_ratios[:]
        g.aspect_ratios.extend(float(a) for a in params["aspect_ratios"])


def fittable_models() -> List[str]:
    """The names of `config --model` whose templates have anchors `fit` can patch."""
    from ..core.resources import resource_path
    from ..odapi import protos
    from ..odapi.anchors import anchor_generator
    from .models import MODELS
    found = []
    for name, spec in MODELS.items():
        try:
            anchor_generator(protos.read_pipeline_config(resource_path("pipeline_configs", spec.template)))
        except UserError:
            continue
        found.append(name)
    return found


def fit(config, dataset, splits: Union[str, Sequence[str]] = "train") -> Tuple[Coverage, Coverage, int]:
    """Fit `config`'s anchors (in place) to the boxes of `splits` of `dataset` (a `Dataset`);
    returns (before, after, number of boxes), both measured on every box.

    Raises:
      UserError: a family that cannot be fitted, an unsupported resizer, or no boxes.
    """
    from ..odapi import protos
    from ..odapi.anchors import anchor_generator
    try:
        anchor_generator(config)
    except UserError as e:
        raise UserError(f"{e} (as in `config --model` {', '.join(fittable_models())})") from None
    boxes = input_boxes(dataset, splits, config)
    search = boxes.sample(SEARCH_BOXES)
    cache: dict = {}
    scored = []
    for params in candidates(config, boxes):
        trial = protos.TrainEvalPipelineConfig()
        trial.CopyFrom(config)
        apply_params(trial, params)
        scored.append((coverage(trial, search, cache), params))
    top = max(c.at_threshold for c, _ in scored)
    good = [item for item in scored if item[0].at_threshold >= top - TOLERANCE]
    template = scored[0]  # candidates() lists the template first
    chosen = template[1] if template in good else min(
        good, key=lambda item: (item[0].anchors, -item[0].at_threshold, -item[0].mean_best_iou))[1]
    before = coverage(config, boxes, cache)
    apply_params(config, chosen)
    return before, coverage(config, boxes, cache), boxes.count


FEW_BOXES = 30  # fewer training boxes than this: describe() says the fit rests on little


def describe(before: Coverage, after: Coverage, boxes: int, splits: Sequence[str] = ("train",)) -> str:
    """The before/after table `anchors` prints (`boxes` of `splits`)."""
    lines = [f"{'':8} {'anchors/image':>13} {'IoU>=0.5':>9} {f'IoU>={after.threshold:g}':>9} "
             f"{'smallest third':>14} {'mean best IoU':>13}  setting"]
    for name, c in (("before", before), ("after", after)):
        setting = ", ".join(f"{k} {v}" for k, v in c.params.items() if k not in ("base", "stride", "max_level"))
        lines.append(f"{name:8} {c.anchors:>13} {c.at_05:>9.3f} {c.at_threshold:>9.3f} "
                     f"{c.small_at_threshold:>14.3f} {c.mean_best_iou:>13.3f}  {setting}")
    lines.append(f"share of the {boxes} boxes of split {' + '.join(dict.fromkeys(splits))} whose best anchor reaches "
                 "the IoU, in the model's input frame; 'smallest third' at the model's matcher threshold")
    if boxes < FEW_BOXES:
        lines.append(f"note: only {boxes} boxes: a fit to so few may not hold for new images; with more data, fit "
                     "again (or keep the template's anchors: drop --fit-anchors)")
    return "\n".join(lines)
