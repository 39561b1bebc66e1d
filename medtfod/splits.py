"""Patient-level train/val/test splits: deterministic, stratified by class, and no patient
in two splits."""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Dict, Iterable, Mapping, Optional, Set

from .errors import UserError

DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.2}


def parse_fractions(text: str) -> Dict[str, float]:
    """'train=0.8,val=0.1,test=0.1' -> {'train': 0.8, ...}; fractions must sum to 1."""
    fractions: Dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if sep and not re.fullmatch(r"[A-Za-z0-9_-]+", name.strip()):
            raise UserError(f"--split {text!r}: split name {name.strip()!r} may hold only letters, digits, '_' and "
                            "'-' (it names files: splits/<name>.txt, tfrecords/<name>.record-...)")
        if name.strip() in fractions:
            raise UserError(f"--split {text!r}: split {name.strip()!r} is named twice")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--split {text!r}: {part!r} is not NAME=FRACTION "
                            "(e.g. train=0.8,val=0.2)") from None
        if not sep or not name.strip() or not 0 < fractions[name.strip()] <= 1:
            raise UserError(f"--split {text!r}: {part!r} must be NAME=FRACTION with 0 < FRACTION <= 1 "
                            "(leave out a split you do not want)")
    if abs(sum(fractions.values()) - 1) > 1e-6:
        raise UserError(f"--split {text!r}: fractions add up to {sum(fractions.values()):g}, expected 1")
    return fractions


def assign_patients(patients: Iterable[str], fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                    seed: int = 0, classes: Optional[Mapping[str, Set[str]]] = None) -> Dict[str, str]:
    """Map each patient id to a split name.

    With `classes` (patient -> the labels of its boxes), patients are stratified by their
    rarest label (patients without findings form their own stratum) and each stratum is
    cut by the fractions, so every class is spread over the splits in proportion.
    Within a stratum, patients are sorted, shuffled with `seed` and cut by largest-remainder
    rounding. The same inputs always give the same assignment.
    """
    unique = sorted(set(patients))
    if not classes:
        return _fill_empty(_cut(unique, fractions, seed), fractions)
    frequency = Counter(label for p in unique for label in classes.get(p, ()))
    strata: Dict[str, list] = {}
    for p in unique:
        labels = classes.get(p, ())
        key = min(labels, key=lambda lab: (frequency[lab], lab)) if labels else ""
        strata.setdefault(key, []).append(p)
    out: Dict[str, str] = {}
    for key in sorted(strata):
        out.update(_cut(strata[key], fractions, seed))
    return _fill_empty(out, fractions)


def _fill_empty(assignment: Dict[str, str], fractions: Mapping[str, float]) -> Dict[str, str]:
    """Give a requested (non-zero) split that came out empty one patient from the largest."""
    for name, f in fractions.items():
        sizes = Counter(assignment.values())
        if f > 0 and not sizes[name] and sizes and max(sizes.values()) > 1:
            donor = max(sizes, key=lambda k: (sizes[k], k))
            patient = max(p for p, s in assignment.items() if s == donor)
            assignment[patient] = name
    return assignment


def _cut(unique: list, fractions: Mapping[str, float], seed: int) -> Dict[str, str]:
    """Shuffle sorted `unique` with `seed` and cut it by the fractions (largest remainder)."""
    unique = list(unique)
    random.Random(seed).shuffle(unique)
    n = len(unique)
    exact = {name: f * n for name, f in fractions.items()}
    counts = {name: int(v) for name, v in exact.items()}
    for name in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[name] += 1
    out: Dict[str, str] = {}
    start = 0
    for name in fractions:
        for patient in unique[start:start + counts[name]]:
            out[patient] = name
        start += counts[name]
    return out
