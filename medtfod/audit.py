"""`medtfod audit`: check an existing split for leaks.

A split leaks when one patient has images in two splits, or when the same image (same
bytes) appears in two splits under different names, which inflates every metric measured
on the held-out split. Split lists are text files with one image name per line: a
converted dataset's `splits/` folder, or a VOC `ImageSets/Main/` folder (names without
extension are matched by stem).
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from typing import Dict, List, Optional

from .errors import UserError
from .images import index_images


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


def audit(splits_dir: str, images_dir: str, patients: Optional[Dict[str, str]] = None) -> dict:
    """Find patients and identical images shared between splits.

    Args:
      patients: image name -> patient id (e.g. from Data_Entry); by default the NIH naming
        `<patient>_<follow-up>.png`, else the image's own name (no patient grouping).

    Returns:
      {'splits': {name: n}, 'patient_leaks': [...], 'duplicate_images': [...],
       'missing_images': [...], 'leaks': n}
    """
    from .readers.nih import patient_from_name

    splits = read_split_lists(splits_dir)
    index, _ = index_images(images_dir)
    by_stem = {os.path.splitext(n)[0]: n for n in index}
    patient_splits: Dict[str, Dict[str, List[str]]] = defaultdict(lambda: defaultdict(list))
    digests: Dict[str, List[tuple]] = defaultdict(list)
    missing = []
    for split, names in splits.items():
        for listed in names:
            name = listed if listed in index else by_stem.get(listed)
            patient = (patients or {}).get(name or listed) or patient_from_name(name or listed) or listed
            patient_splits[patient][split].append(listed)
            if name is None:
                missing.append({"split": split, "image": listed})
                continue
            with open(index[name], "rb") as f:
                digests[hashlib.sha256(f.read()).hexdigest()].append((split, name))
    patient_leaks = [{"patient": p, "splits": {s: sorted(v) for s, v in sorted(by.items())}}
                     for p, by in sorted(patient_splits.items()) if len(by) > 1]
    duplicates = []
    for digest, where in sorted(digests.items()):
        names = sorted(set(where))
        if len(names) > 1:
            duplicates.append({"sha256": digest, "images": [{"split": s, "image": n} for s, n in names],
                               "across_splits": len({s for s, _ in names}) > 1})
    leaks = len(patient_leaks) + sum(1 for d in duplicates if d["across_splits"])
    return {"splits": {s: len(v) for s, v in splits.items()}, "patient_leaks": patient_leaks,
            "duplicate_images": duplicates, "missing_images": missing, "leaks": leaks}


def summary(result: dict) -> str:
    lines = ["splits: " + ", ".join(f"{s} {n}" for s, n in result["splits"].items())]
    for leak in result["patient_leaks"][:10]:
        where = "; ".join(f"{s}: {', '.join(v)}" for s, v in leak["splits"].items())
        lines.append(f"  LEAK patient {leak['patient']} is in several splits ({where})")
    for dup in result["duplicate_images"][:10]:
        kind = "LEAK identical image in several splits" if dup["across_splits"] else "identical images"
        lines.append(f"  {kind}: " + ", ".join(f"{d['image']} ({d['split']})" for d in dup["images"]))
    if result["missing_images"]:
        lines.append(f"  {len(result['missing_images'])} listed images not found under the image folder")
    lines.append(f"{result['leaks']} leak(s) found" if result["leaks"] else "no leaks found")
    return "\n".join(lines)
