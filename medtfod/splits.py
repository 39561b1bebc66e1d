"""Patient-level train/val/test splits: deterministic, and no patient in two splits."""
from __future__ import annotations

import random
from typing import Dict, Iterable, Mapping

from .errors import UserError

DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.2}


def parse_fractions(text: str) -> Dict[str, float]:
    """'train=0.8,val=0.1,test=0.1' -> {'train': 0.8, ...}; fractions must sum to 1."""
    fractions: Dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--split {text!r}: {part!r} is not NAME=FRACTION "
                            "(e.g. train=0.8,val=0.2)") from None
        if not sep or not name.strip() or not 0 <= fractions[name.strip()] <= 1:
            raise UserError(f"--split {text!r}: {part!r} must be NAME=FRACTION with 0 <= FRACTION <= 1")
    if abs(sum(fractions.values()) - 1) > 1e-6:
        raise UserError(f"--split {text!r}: fractions add up to {sum(fractions.values()):g}, expected 1")
    return fractions


def assign_patients(patients: Iterable[str], fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                    seed: int = 0) -> Dict[str, str]:
    """Map each patient id to a split name.

    Patients are sorted, shuffled with `seed`, and cut by the fractions (largest-remainder
    rounding); every split with a non-zero fraction gets at least one patient when there
    are enough patients. The same inputs always give the same assignment.
    """
    unique = sorted(set(patients))
    random.Random(seed).shuffle(unique)
    n = len(unique)
    exact = {name: f * n for name, f in fractions.items()}
    counts = {name: int(v) for name, v in exact.items()}
    for name in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[name] += 1
    for name, f in fractions.items():  # a requested split should not come out empty
        if f > 0 and counts[name] == 0:
            donor = max(counts, key=counts.get)
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[name] += 1
    out: Dict[str, str] = {}
    start = 0
    for name in fractions:
        for patient in unique[start:start + counts[name]]:
            out[patient] = name
        start += counts[name]
    return out
