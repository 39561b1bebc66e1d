"""Which strata to report: lesion-size bins and image-field values (`medtfod metrics --size-bins`,
`--size-unit`, `--by`). The numbers of each are `medtfod.evaluation.strata.measure`'s.

Size is a box's longer side: in pixels, or in mm from the image's `pixel_spacing` field
("row,col" mm per pixel, which convert keeps from DICOM and NIH's Data_Entry). Default bins are
the tertiles of the split's GT sizes. A field's values come from the dataset manifest; a field
given with bins (`age:0,40,60,120`) is read as numbers (a DICOM age such as '045Y' as years)
and binned [low, high); without bins each value is a stratum, and an image without the value
is in '(empty)'.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..core.boxes import Box
from ..core.errors import UserError, did_you_mean
from .strata import Matched, Stratum

EMPTY = "(empty)"
OUTSIDE = "outside the bins"
NO_SPACING = "(no pixel spacing)"
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([YMWD]?)\s*$", re.IGNORECASE)
_PER_YEAR = {"": 1.0, "Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}


def parse_bins(text, what: str, sizes: bool = False) -> List[float]:
    """'0,16,32,inf' (or a sequence of numbers) -> [0, 16, 32, inf]: at least two increasing
    numbers; `sizes`: none below 0."""
    example = "e.g. 0,16,32,inf"
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        edges = [float(v) for v in items]
    except (TypeError, ValueError):
        raise UserError(f"{what} {text!r}: expected numbers separated by commas, {example}") from None
    if len(edges) < 2 or any(math.isnan(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise UserError(f"{what} {text!r}: expected at least two increasing numbers, {example}")
    if sizes and edges[0] < 0:
        raise UserError(f"{what} {text!r}: a size is not below 0; start at 0, {example}")
    return edges


def parse_by(spec: str) -> Tuple[str, Optional[List[float]]]:
    """'sex' -> ('sex', None); 'age:0,40,60,120' -> ('age', [0, 40, 60, 120])."""
    name, _, bins = spec.partition(":")
    if not name.strip():
        raise UserError(f"--by {spec!r}: expected a field name, e.g. --by sex or --by age:0,40,60,120")
    return name.strip().lower(), parse_bins(bins, f"--by {spec}") if bins else None


def edges_json(edges: Optional[Sequence[float]]) -> Optional[list]:
    """Bin edges for strict JSON: an infinite edge is null (an open end)."""
    return None if edges is None else [e if math.isfinite(e) else None for e in edges]


def natural(value: str):
    """A sort key that puts '4a' after '3' and before '5', and '10' after '9'."""
    return [(0, float(part), "") if part[:1].isdigit() else (1, 0.0, part.lower())
            for part in re.findall(r"\d+(?:\.\d+)?|\D+", value)]


def number(value: str) -> Optional[float]:
    """A field value as a number: '58' -> 58.0, DICOM ages '045Y' -> 45.0, '006M' -> 0.5; else None."""
    found = _AGE.match(value)
    return float(found.group(1)) / _PER_YEAR[found.group(2).upper()] if found else None


def _label(low: float, high: float, unit: str = "") -> str:
    text = f"{low:g}-{high:g}" if math.isfinite(high) else f">= {low:g}"
    return f"{text} {unit}".strip()


def spacing(meta: Mapping[str, str]) -> Optional[Tuple[float, float]]:
    """(row, col) mm per pixel from a 'pixel_spacing' field, or None."""
    parts = [number(v) for v in meta.get("pixel_spacing", "").split(",")] if meta.get("pixel_spacing") else []
    if len(parts) == 1:
        parts = parts * 2
    return (parts[0], parts[1]) if len(parts) == 2 and all(p and p > 0 for p in parts) else None


def size(box: Box, unit: str, pixel: Optional[Tuple[float, float]]) -> float:
    """The longer side of `box` in 'px', or 'mm' (NaN without the image's pixel spacing)."""
    if unit == "px":
        return max(box.width, box.height)
    return max(box.width * pixel[1], box.height * pixel[0]) if pixel else math.nan


def size_strata(m: Matched, lesion_sizes: np.ndarray, det_sizes: np.ndarray, edges: Optional[Sequence[float]],
                unit: str) -> Tuple[List[float], List[Stratum]]:
    """Strata of lesion size; `edges` None: tertiles of the known lesion sizes (rounded to 0.1).
    Lesions outside the given edges, and lesions without a size in mm, get a stratum of their own."""
    known = lesion_sizes[~np.isnan(lesion_sizes)]
    if edges is None:
        if not len(known):
            return [], []
        cuts = sorted({round(float(q), 1) for q in np.quantile(known, [1 / 3, 2 / 3])} - {0.0})
        edges = [0.0] + cuts + [math.inf]
    every = np.ones(len(m.images), bool)

    def stratum(name, lesions, unmatched):
        shown = np.zeros(len(m.images), bool)
        shown[m.lesion_image[lesions]] = True
        return Stratum(name, every, lesions, unmatched, every, shown)
    strata = [stratum(_label(low, high, unit), (lesion_sizes >= low) & (lesion_sizes < high),
                      (det_sizes >= low) & (det_sizes < high)) for low, high in zip(edges, edges[1:])]
    outside = (lesion_sizes < edges[0]) | (lesion_sizes >= edges[-1])
    if outside.any():
        strata.append(stratum(OUTSIDE, outside, (det_sizes < edges[0]) | (det_sizes >= edges[-1])))
    if np.isnan(lesion_sizes).any():
        strata.append(stratum(NO_SPACING, np.isnan(lesion_sizes), np.isnan(det_sizes)))
    return list(edges), strata


def field_strata(m: Matched, meta: Mapping[str, Mapping[str, str]], field: str,
                 bins: Optional[Sequence[float]]) -> List[Stratum]:
    """Strata of the images by their value of `field` (binned when `bins`)."""
    known = sorted({k for fields in meta.values() for k in fields})
    if field not in known:
        raise UserError(f"--by {field}: no image of the split has that field; the dataset's fields: "
                        f"{', '.join(known) or 'none (convert kept no metadata)'}" + did_you_mean(field, known))
    values = [meta.get(image, {}).get(field, "") for image in m.images]
    if bins is not None:
        names = []
        for image, value in zip(m.images, values):
            x = number(value) if value else None
            if value and x is None:
                raise UserError(f"--by {field}:{','.join(f'{b:g}' for b in bins)}: image {image} has {field} "
                                f"{value!r}, not a number")
            inside = [k for k in range(len(bins) - 1) if x is not None and bins[k] <= x < bins[k + 1]]
            names.append(_label(bins[inside[0]], bins[inside[0] + 1]) if inside else (EMPTY if x is None else
                                                                                      OUTSIDE))
        order = [_label(a, b) for a, b in zip(bins, bins[1:])] + [EMPTY, OUTSIDE]
        always = set(order[:-2])   # every bin is shown, empty or not
    else:
        names = [value or EMPTY for value in values]
        order, always = sorted(set(names) - {EMPTY}, key=natural) + [EMPTY], set()
    names_arr = np.array(names, object)
    strata = []
    for name in order:
        images = names_arr == name
        if images.any() or name in always:
            strata.append(Stratum(name, images, images[m.lesion_image], images[m.det_image], images))
    return strata


def all_images(m: Matched) -> Stratum:
    every = np.ones(len(m.images), bool)
    return Stratum("all", every, np.ones(len(m.lesion_image), bool), np.ones(len(m.det_image), bool), every)


def sizes(m: Matched, lesion_boxes: Sequence[Box], det_boxes: Sequence[Box], meta: Mapping[str, Mapping[str, str]],
          unit: str) -> Tuple[np.ndarray, np.ndarray]:
    """The sizes of the lesions and detections of `m` in `unit` ('px' or 'mm')."""
    if unit not in ("px", "mm"):
        raise UserError(f"--size-unit {unit!r}: expected px or mm")
    pixel = [spacing(meta.get(image, {})) for image in m.images]
    if unit == "mm" and len(m.lesion_image) and not any(pixel[r] for r in set(m.lesion_image.tolist())):
        raise UserError("--size-unit mm: no image with a lesion has a pixel_spacing field (convert keeps it from "
                        "DICOM and NIH's Data_Entry; `medtfod audit` lists the fields); use --size-unit px")
    return (np.array([size(b, unit, pixel[r]) for b, r in zip(lesion_boxes, m.lesion_image)], float),
            np.array([size(b, unit, pixel[r]) for b, r in zip(det_boxes, m.det_image)], float))


def by_fields(specs: Sequence[str]) -> Dict[str, Optional[List[float]]]:
    """--by values -> {field: bins or None}; a field given twice is refused."""
    fields: Dict[str, Optional[List[float]]] = {}
    for spec in [specs] if isinstance(specs, str) else specs:
        name, bins = parse_by(spec)
        if name in fields:
            raise UserError(f"--by {spec}: the field {name!r} is given twice; give it once (with bins or without)")
        fields[name] = bins
    return fields
