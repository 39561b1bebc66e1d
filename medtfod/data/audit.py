"""`medtfod audit`: check an existing split for leaks.

A split leaks when one patient has images in two splits, or when the same image (same
bytes) appears in two splits under different names, which inflates every metric measured
on the held-out split. Near-identical images in two splits leak too: the same picture with
other bytes (identical decoded pixels) or within `--duplicate-distance` bits of 64-bit
perceptual hash (a re-encoded copy, a caption added; `medtfod.data.duplicates`, which convert
uses to keep such copies in one split).

A converted dataset is audited from its manifest (`dataset.json`): the splits and patients
convert recorded, and each image's bytes from the dataset's own TFRecords (no image folder
needed). Any other folder of split lists (text files with one image name per line, such as
VOC's `ImageSets/Main/`; names without extension are matched by stem) is audited against
`--images`, with patients from Data_Entry when given; without them each image is its own
patient (nothing is guessed from file names) and only identical images are found.

A dataset's per-image fields (`ImageEntry.meta`: age, sex, tirads, ...) are counted per value
and split, so a split that holds all of one value shows; an image without the field counts as
'(empty)'.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from typing import Dict, List, Optional

from ..core.errors import UserError
from ..core.images import index_images, read_and_probe
from .duplicates import DEFAULT_DISTANCE, find_groups, hash_bytes


def read_split_lists(folder: str) -> Dict[str, List[str]]:
    """{split name: image names} from the `*.txt` files in `folder` (or `folder/splits`)."""
    if os.path.isdir(os.path.join(folder, "splits")):
        folder = os.path.join(folder, "splits")
    if not os.path.isdir(folder):
        raise UserError(f"split folder not found: {folder}")
    splits = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".txt"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                splits[name[:-4]] = [line.split()[0] for line in f if line.strip()]
    if not splits:
        raise UserError(f"no <split>.txt files in {folder}")
    return splits


def audit(splits_dir: str, images_dir: Optional[str] = None, patients: Optional[Dict[str, str]] = None,
          max_distance: int = DEFAULT_DISTANCE) -> dict:
    """Find patients and identical or near-identical images shared between splits.

    Args:
      splits_dir: a converted dataset (read through its manifest) or a folder of `<split>.txt`.
      images_dir: the image folder, for a folder of split lists (a dataset has its bytes).
      patients: image name -> patient id (e.g. from Data_Entry), for a folder of split lists.
      max_distance: pHash bits within which two images are near-identical (negative: only
        identical pixels).

    Returns:
      {'splits': {name: n}, 'patients_from': where the patient ids came from,
       'patient_leaks': [...], 'duplicate_images': [...] (same bytes),
       'near_duplicates': [...] (same picture, other bytes; with the pHash distance),
       'missing_images': [...], 'leaks': n,
       'fields': {field: {value: {split: images}}} (a dataset's per-image fields; {} otherwise)}
    """
    from . import manifest as manifest_mod
    if os.path.isfile(os.path.join(splits_dir, manifest_mod.MANIFEST)):
        dataset = manifest_mod.load(splits_dir)
        listed = {}
        for entry in dataset.images:
            listed.setdefault(entry.split, []).append(entry)
        patient_splits: Dict[str, Dict[str, List[str]]] = defaultdict(lambda: defaultdict(list))
        digests = _Digests()
        for split, entries in listed.items():
            for entry in entries:
                patient_splits[entry.patient][split].append(entry.name)
                digests.add(split, entry.name, dataset.image_bytes(entry))
        result = _result({s: len(v) for s, v in listed.items()}, f"{manifest_mod.MANIFEST} ({dataset.source})",
                         patient_splits, digests, [])
        result["near_duplicates"] = digests.near(max_distance)
        result["leaks"] += sum(1 for g in result["near_duplicates"] if g["across_splits"])
        result["fields"] = field_counts(dataset.images)
        return result
    if not images_dir:
        raise UserError(f"{splits_dir} is not a converted dataset (no {manifest_mod.MANIFEST}); give --images "
                        "to audit its split lists against the image files")
    splits = read_split_lists(splits_dir)
    index, _ = index_images(images_dir)
    by_stem = {os.path.splitext(n)[0]: n for n in index}
    patient_splits: Dict[str, Dict[str, List[str]]] = defaultdict(lambda: defaultdict(list))
    digests = _Digests()
    missing = []
    for split, names in splits.items():
        for listed in names:
            base = re.split(r"[\\/]", listed)[-1]  # 'JPEGImages/a.jpg', 'C:\\data\\a.jpg' -> 'a.jpg'
            name = base if base in index else by_stem.get(base)
            patient = (patients or {}).get(name or base) or name or base
            patient_splits[patient][split].append(listed)
            if name is None:
                missing.append({"split": split, "image": listed})
                continue
            with open(index[name], "rb") as f:
                data = f.read()
            decoded = read_and_probe(index[name])[0] if name.lower().endswith(".dcm") else None  # DICOM: as convert
            digests.add(split, name, data, decoded)
    source = "Data_Entry" if patients else "none given: each image is its own patient"
    result = _result({s: len(v) for s, v in splits.items()}, source, patient_splits, digests, missing)
    result["near_duplicates"] = digests.near(max_distance)
    result["leaks"] += sum(1 for g in result["near_duplicates"] if g["across_splits"])
    result["fields"] = {}
    return result


class _Digests(dict):
    """sha256 of the bytes -> [(split, image)], and each image's pixel hashes for `near`."""

    def __init__(self):
        super().__init__()
        self.pixels = {}

    def add(self, split: str, name: str, data: bytes, decoded: Optional[bytes] = None) -> None:
        """`data`: the file's bytes; `decoded`: PNG/JPEG bytes of its pixels when the file is
        not one (a DICOM file's, as convert makes them)."""
        self.setdefault(hashlib.sha256(data).hexdigest(), []).append((split, name))
        try:
            self.pixels[(split, name)] = hash_bytes(decoded or data)
        except Exception:  # noqa: BLE001 - undecodable bytes: compared by their sha256 only
            pass

    def near(self, max_distance: int) -> List[dict]:
        """Groups of images identical in pixels or within `max_distance` pHash bits that are not
        simply copies of the same bytes (those are 'duplicate_images')."""
        same_bytes = {key: digest for digest, keys in self.items() for key in keys}
        out = []
        for group in find_groups(self.pixels, max_distance):
            if len({same_bytes[key] for key in group.images}) < 2:
                continue
            out.append({"images": [{"split": s, "image": n} for s, n in group.images],
                        "exact_pixels": group.exact, "distance": group.distance,
                        "across_splits": len({s for s, _ in group.images}) > 1})
        return out


EMPTY = "(empty)"


def _natural(text: str):
    """Sort key: numbers by value ('9' before '10'), '(empty)' last."""
    return [text == EMPTY] + [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t]


def field_counts(entries) -> Dict[str, Dict[str, Dict[str, int]]]:
    """{field: {value: {split: images}}} over manifest `entries`, every field some image has;
    an image without it counts under '(empty)'. Values in natural order, splits sorted."""
    names = sorted({key for e in entries for key in e.meta})
    out: Dict[str, Dict[str, Dict[str, int]]] = {}
    for name in names:
        counts: Dict[str, Dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for e in entries:
            counts[e.meta.get(name, EMPTY)][e.split] += 1
        out[name] = {value: dict(sorted(counts[value].items())) for value in sorted(counts, key=_natural)}
    return out


def fields_summary(fields: dict, most: int = 12) -> List[str]:
    """One line per field: each value with its images per split ('tirads: 2 (train 3, val 1)
    4a (train 5) ... (empty) (...)'); past `most` values, the most frequent and how many more."""
    lines = []
    for name, values in fields.items():
        shown = list(values)
        if len(shown) > most:
            top = sorted(shown, key=lambda v: -sum(values[v].values()))[:most]
            shown = [v for v in shown if v in top]
        parts = [f"{v} ({', '.join(f'{s} {n}' for s, n in values[v].items())})" for v in shown]
        more = f"  ... {len(values) - len(shown)} more values (all in the --out JSON)" if len(shown) < len(values) else ""
        lines.append(f"  {name}: " + "  ".join(parts) + more)
    return lines


def _result(counts, patients_from, patient_splits, digests, missing) -> dict:
    patient_leaks = [{"patient": p, "splits": {s: sorted(v) for s, v in sorted(by.items())}}
                     for p, by in sorted(patient_splits.items()) if len(by) > 1]
    duplicates = []
    for digest, where in sorted(digests.items()):
        names = sorted(set(where))
        if len(names) > 1:
            duplicates.append({"sha256": digest, "images": [{"split": s, "image": n} for s, n in names],
                               "across_splits": len({s for s, _ in names}) > 1})
    # an image that cannot be found cannot be checked: the audit is incomplete, which fails it too
    leaks = len(patient_leaks) + sum(1 for d in duplicates if d["across_splits"]) + len(missing)
    return {"splits": counts, "patients_from": patients_from, "patient_leaks": patient_leaks,
            "duplicate_images": duplicates, "missing_images": missing, "leaks": leaks}


def summary(result: dict) -> str:
    lines = ["splits: " + ", ".join(f"{s} {n}" for s, n in result["splits"].items()),
             f"patients from: {result['patients_from']}"]
    for leak in result["patient_leaks"][:10]:
        where = "; ".join(f"{s}: {', '.join(v)}" for s, v in leak["splits"].items())
        lines.append(f"  LEAK patient {leak['patient']} is in several splits ({where})")
    for dup in result["duplicate_images"][:10]:
        kind = "LEAK identical image in several splits" if dup["across_splits"] else "identical images"
        lines.append(f"  {kind}: " + ", ".join(f"{d['image']} ({d['split']})" for d in dup["images"]))
    for near in result.get("near_duplicates", [])[:10]:
        how = "identical pixels" if near["exact_pixels"] else f"pHash distance {near['distance']}"
        kind = "LEAK near-identical images in several splits" if near["across_splits"] else "near-identical images"
        lines.append(f"  {kind} ({how}): " + ", ".join(f"{d['image']} ({d['split']})" for d in near["images"]))
    if result["missing_images"]:
        lines.append(f"  INCOMPLETE: {len(result['missing_images'])} listed images not found under the image folder "
                     f"(e.g. {result['missing_images'][0]['image']!r}), so they could not be checked")
    if result.get("fields"):
        lines.append("per-image fields, images per value and split:")
        lines.extend(fields_summary(result["fields"]))
    lines.append(f"{result['leaks']} leak(s) or unchecked image(s) found" if result["leaks"] else "no leaks found")
    return "\n".join(lines)
