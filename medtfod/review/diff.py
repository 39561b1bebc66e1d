"""What a reader changed: pre-annotations (`detect --annotations voc`) against the corrected files.

Both folders hold Pascal VOC XML (labelImg); files are paired by their image (`<filename>`).
Per image, predicted and corrected boxes are matched one-to-one, greedily by IoU (highest
first, ties in file order), at IoU >= `iou`, whatever their labels. A matched pair is:

    kept        same label, every corner within 1 px (VOC corners are whole pixels)
    moved       same label, some corner moved by more than 1 px (moved or resized)
    relabelled  another label (whether or not it moved too)

An unmatched predicted box was deleted (a false positive removed); an unmatched corrected box
was added (a missed lesion). A relabelled box is counted under its predicted class, as
relabelled even when it also moved. Files are paired by name, as labelImg pairs an image with
its `<stem>.xml`. An image with no corrected file was not reviewed (its boxes are counted nowhere
else); one with every box kept and nothing added was accepted as it was; a corrected file for
an image that was never pre-annotated is listed apart and not compared.
labelImg's `verified` mark is listed as it is found. Corrected files labelImg cannot have
written (not well-formed XML, a box outside the image, a label the label map does not know)
are reported with file, line and value, and their images left out as unreadable.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..core.boxes import Box, iou as box_iou
from ..core.errors import UserError, did_you_mean
from ..inference.preannotate import annotation_stem, read_classes
from ..core.problems import Problems
from ..data.readers.voc import VocFile, xml_files, read_voc_file

OUTCOMES = ("kept", "moved", "relabelled", "deleted", "added")
MOVE_PX = 1.0


def _read_folder(folder: str, what: str, problems: Problems, labels: Optional[Sequence[str]]):
    """({image: VocFile, or None when unusable}, stems of the files that did not parse)."""
    if not os.path.isdir(folder):
        raise UserError(f"{what} folder not found: {folder}")
    files: Dict[str, Optional[VocFile]] = {}  # by file stem: labelImg names each file after its image
    broken = set()
    for path in xml_files(os.path.abspath(folder)):
        found = read_voc_file(path, problems)
        key = annotation_stem(path).lower()
        if found is None:
            broken.add(key)
            continue
        bad = False
        for label, box, line in found.objects:
            if labels is not None and label not in labels:
                problems.add(path, line, "unknown_label", label, f"{found.image}: label {label!r} is not among the "
                             f"classes ({', '.join(labels)})" + did_you_mean(label, labels),
                             image=found.image)
                bad = True
            outside = box.xmin < 0 or box.ymin < 0 or (found.width and found.height and (
                box.xmax > found.width or box.ymax > found.height))
            if outside:  # labelImg keeps boxes inside the image (its corners are at least 1)
                corners = f"{box.xmin + 1:g},{box.ymin + 1:g},{box.xmax:g},{box.ymax:g}"
                problems.add(path, line, "box_outside_image", corners,
                             f"{found.image}: a {label!r} box at xmin,ymin,xmax,ymax = {corners} (VOC, 1-based) lies "
                             f"outside the {found.width}x{found.height} image", image=found.image)
                bad = True
        if found.dropped:
            bad = True
        if key in files:
            problems.add(path, None, "duplicate_image", found.image,
                         f"{annotation_stem(path)} is annotated twice "
                         f"({files[key].path if files[key] else 'another file'}); "
                         "both left out")
            bad = True
        if bad:
            files[key] = None
        else:
            files.setdefault(key, found)
    return files, broken


def _corners(box: Box) -> List[float]:
    return [round(v, 2) for v in (box.xmin, box.ymin, box.xmax, box.ymax)]


def match(predicted: List[Tuple[str, Box]], corrected: List[Tuple[str, Box]], threshold: float):
    """One-to-one (i, j) pairs at IoU >= threshold, greedy by IoU (highest first, ties in order)."""
    pairs = sorted(((box_iou(p, c), i, j) for i, (_, p) in enumerate(predicted) for j, (_, c) in enumerate(corrected)),
                   key=lambda t: (-t[0], t[1], t[2]))
    used_p, used_c, out = set(), set(), []
    for value, i, j in pairs:
        if value >= threshold and i not in used_p and j not in used_c:
            used_p.add(i)
            used_c.add(j)
            out.append((i, j))
    return out


def compare_image(predicted: List[Tuple[str, Box]], corrected: List[Tuple[str, Box]], threshold: float) -> List[dict]:
    """Every box's outcome: [{'outcome', 'label', 'box' or 'from'/'to', ...}] (see the module docstring)."""
    changes = []
    pairs = match(predicted, corrected, threshold)
    for i, j in pairs:
        (p_label, p), (c_label, c) = predicted[i], corrected[j]
        shift = max(abs(p.xmin - c.xmin), abs(p.ymin - c.ymin), abs(p.xmax - c.xmax), abs(p.ymax - c.ymax))
        outcome = "relabelled" if p_label != c_label else ("moved" if shift > MOVE_PX else "kept")
        change = {"outcome": outcome, "label": p_label, "from": _corners(p), "to": _corners(c), "iou": round(box_iou(p, c), 4)}
        if outcome == "relabelled":
            change["new_label"] = c_label
        changes.append(change)
    matched_p, matched_c = {i for i, _ in pairs}, {j for _, j in pairs}
    changes += [{"outcome": "deleted", "label": label, "from": _corners(box)}
                for i, (label, box) in enumerate(predicted) if i not in matched_p]
    changes += [{"outcome": "added", "label": label, "to": _corners(box)}
                for j, (label, box) in enumerate(corrected) if j not in matched_c]
    return changes


def review_diff(predicted_dir: str, corrected_dir: str, threshold: float = 0.5,
                labels: Optional[Sequence[str]] = None) -> dict:
    """The comparison as the diff.json dict: "images" and "boxes" totals, "per_class",
    "per_image", "not_reviewed", "verified" and "problems"."""
    if labels is None:
        labels = read_classes(predicted_dir)
    problems = Problems()
    if os.path.abspath(predicted_dir) == os.path.abspath(corrected_dir):
        raise UserError(f"--predicted and --corrected are the same folder ({predicted_dir}): the corrections are "
                        "saved apart from the pre-annotations (medtfod annotate --annotations CORRECTED)")
    predicted, _ = _read_folder(predicted_dir, "--predicted", problems, None)
    corrected, broken = _read_folder(corrected_dir, "--corrected", problems, labels)
    if not predicted and not corrected:
        raise UserError(f"no VOC .xml files in {predicted_dir} or {corrected_dir}")
    totals = {k: 0 for k in OUTCOMES}
    per_class: Dict[str, Dict[str, int]] = {}
    per_image, not_reviewed, verified, unreadable, new = {}, [], [], [], []
    for key in sorted(set(predicted) | set(corrected)):
        pred, corr = predicted.get(key, ()), corrected.get(key, ())
        image = (pred or corr).image if (pred or corr) else key
        if pred is None or corr is None or (key not in corrected and key in broken):
            unreadable.append(image)
            continue
        if key not in predicted:  # a file for an image the model never saw: not part of the comparison
            new.append(image)
            per_image[image] = {"status": "not pre-annotated", "verified": corr.verified, "boxes": len(corr.objects)}
            continue
        if key not in corrected:
            not_reviewed.append(image)
            per_image[image] = {"status": "not reviewed", "predicted": len(pred.objects)}
            continue
        if corr.image != pred.image:
            problems.add(corr.path, None, "filename_mismatch", corr.image,
                         f"{os.path.basename(corr.path)} names <filename> {corr.image}, its pre-annotation "
                         f"{pred.image}; compared as {pred.image} (labelImg pairs files by name)")
        if corr.verified:
            verified.append(image)
        boxes = [(label, box) for label, box, _ in pred.objects]
        changes = compare_image(boxes, [(label, box) for label, box, _ in corr.objects], threshold)
        counts = {k: sum(1 for c in changes if c["outcome"] == k) for k in OUTCOMES}
        for change in changes:
            totals[change["outcome"]] += 1
            row = per_class.setdefault(change["label"], {k: 0 for k in OUTCOMES})
            row[change["outcome"]] += 1
        accepted = counts["kept"] == len(boxes) and not counts["added"]
        per_image[image] = {"status": "reviewed", "verified": corr.verified, "accepted_as_is": accepted, **counts,
                            "changes": changes}
    reviewed = [i for i, v in per_image.items() if v["status"] == "reviewed"]
    accepted = [i for i in reviewed if per_image[i]["accepted_as_is"]]
    predicted_boxes = totals["kept"] + totals["moved"] + totals["relabelled"] + totals["deleted"]
    return {
        "predicted": os.path.abspath(predicted_dir), "corrected": os.path.abspath(corrected_dir), "iou": threshold,
        "labels_checked": list(labels) if labels is not None else None,
        "images": {"predicted": sum(1 for v in predicted.values() if v is not None), "reviewed": len(reviewed),
                   "not_reviewed": len(not_reviewed), "accepted_as_is": len(accepted),
                   "accepted_share": len(accepted) / len(reviewed) if reviewed else None,
                   "verified": len(verified), "unreadable": len(unreadable), "not_pre_annotated": len(new)},
        "boxes": {"predicted_in_reviewed": predicted_boxes, **totals,
                  "kept_share": totals["kept"] / predicted_boxes if predicted_boxes else None},
        "per_class": dict(sorted(per_class.items())),
        "per_image": per_image, "not_reviewed": not_reviewed, "verified": verified, "unreadable": unreadable,
        "not_pre_annotated": new, "problems": problems.to_dict()["items"] if len(problems) else [],
    }


def format_diff(diff: dict) -> str:
    """A short plain-text summary of `review_diff`'s result."""
    images, boxes = diff["images"], diff["boxes"]
    share = (lambda v: "n/a" if v is None else f"{100 * v:.0f}%")  # noqa: E731
    lines = [f"images: {images['reviewed']} reviewed, {images['not_reviewed']} not reviewed, "
             f"{images['accepted_as_is']} accepted as they were ({share(images['accepted_share'])} of reviewed), "
             f"{images['verified']} marked verified" + (f", {images['unreadable']} unreadable" if images['unreadable']
                                                         else "")
             + (f", {images['not_pre_annotated']} corrected files for images never pre-annotated (not compared)"
                if images['not_pre_annotated'] else ""),
             f"boxes: {boxes['kept']} of {boxes['predicted_in_reviewed']} predicted kept unchanged "
             f"({share(boxes['kept_share'])})",
             f"{'class':<20}" + "".join(f"{k:>11}" for k in OUTCOMES)]
    for label, row in diff["per_class"].items():
        lines.append(f"{label:<20}" + "".join(f"{row[k]:>11}" for k in OUTCOMES))
    lines.append(f"{'all':<20}" + "".join(f"{boxes[k]:>11}" for k in OUTCOMES))
    if diff.get("labels_checked") is None:
        lines.append("note: labels were not checked (no --label-map, and --predicted has no classes.txt)")
    return "\n".join(lines)
