"""Patient-level train/val/test splits: deterministic, stratified by class, and no patient
in two splits."""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set

from ..core.errors import UserError

DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.2}


def parse_fractions(text: str, total: Optional[float] = 1.0) -> Dict[str, float]:
    """'train=0.8,val=0.1,test=0.1' -> {'train': 0.8, ...}; fractions must sum to `total`
    (None: to less than 1, the part left for folds)."""
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
    if total is None:
        if sum(fractions.values()) >= 1 - 1e-6:
            raise UserError(f"--split {text!r} with --folds: the held-out fractions add up to "
                            f"{sum(fractions.values()):g}, leaving nothing for the folds")
    elif abs(sum(fractions.values()) - total) > 1e-6:
        raise UserError(f"--split {text!r}: fractions add up to {sum(fractions.values()):g}, expected 1")
    return fractions


def fold_names(k: int) -> List[str]:
    return [f"fold{i}" for i in range(1, k + 1)]


def fold_fractions(k: int, held_out: Optional[str] = None) -> Dict[str, float]:
    """The splits of `convert --folds K`: 'fold1'..'foldK' sharing equally what the held-out
    splits of `held_out` (e.g. 'test=0.1'; None: none) leave."""
    if k < 2:
        raise UserError(f"--folds {k}: cross-validation needs at least 2 folds")
    held = parse_fractions(held_out, total=None) if held_out else {}
    clash = sorted(set(held) & set(fold_names(k)))
    if clash:
        raise UserError(f"--split names {clash[0]!r}, which --folds {k} uses for a fold; name the held-out split "
                        "otherwise (e.g. test=0.1)")
    rest = 1 - sum(held.values())
    return {**{name: rest / k for name in fold_names(k)}, **held}


def assign_folds(patients: Iterable[str], folds: Sequence[str], held_out: Mapping[str, float], seed: int = 0,
                 classes: Optional[Mapping[str, Set[str]]] = None) -> Dict[str, str]:
    """Map each patient id to a fold (or a held-out split): stratified K-fold by patient.

    The held-out splits are cut first, as `assign_patients` cuts splits; the remaining patients
    are grouped into the same strata (their rarest label), each stratum sorted and shuffled with
    `seed`, and dealt to the folds in turn, the turn carried from one stratum to the next, so
    fold sizes differ by at most one patient and every class is spread over the folds.
    """
    unique = sorted(set(patients))
    rest = 1 - sum(held_out.values())
    first = assign_patients(unique, {**held_out, "": rest}, seed, classes) if held_out else {p: "" for p in unique}
    out = {p: split for p, split in first.items() if split}
    turn = 0
    for members in _strata([p for p in unique if first[p] == ""], classes).values():
        random.Random(seed).shuffle(members)
        for p in members:
            out[p] = folds[turn % len(folds)]
            turn += 1
    return out


def assign_patients(patients: Iterable[str], fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                    seed: int = 0, classes: Optional[Mapping[str, Set[str]]] = None) -> Dict[str, str]:
    """Map each patient id to a split name.

    With `classes` (patient -> the labels of its boxes), patients are stratified by their
    rarest label (patients without findings form their own stratum) and each stratum is
    cut by the fractions, so every class is spread over the splits in proportion.
    Within a stratum, patients are sorted, shuffled with `seed` and cut by largest-remainder
    rounding. The same inputs always give the same assignment.
    """
    out: Dict[str, str] = {}
    for members in _strata(sorted(set(patients)), classes).values():
        out.update(_cut(members, fractions, seed))
    return _fill_empty(out, fractions)


def _strata(patients: Sequence[str], classes: Optional[Mapping[str, Set[str]]]) -> Dict[str, List[str]]:
    """`patients` grouped by their rarest label (over these patients; ties by name), '' for those
    without findings, in key order; each group keeps the order of `patients`."""
    frequency = Counter(label for p in patients for label in (classes or {}).get(p, ()))
    strata: Dict[str, List[str]] = {}
    for p in patients:
        labels = (classes or {}).get(p, ())
        strata.setdefault(min(labels, key=lambda lab: (frequency[lab], lab)) if labels else "", []).append(p)
    return dict(sorted(strata.items()))


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


def check_splits(splits: dict, opts, patients: int, problems, joined: str = "") -> None:
    """Every split asked for must have images (an empty val/test split is an error, not a quiet 0);
    `joined` says how duplicate groups joined patients, when they did."""
    total = sum(s["images"] for s in splits.values())
    if not total:
        first = "\n  ".join(str(p) for p in problems.items[:5]) or "(none)"
        raise UserError("no image could be converted (every image was missing, unreadable or had a bad box); "
                        f"nothing was written. First problems:\n  {first}")
    empty = [name for name, s in splits.items() if not s["images"] and opts.fractions.get(name, 0) > 0]
    if empty:
        asked = ",".join(f"{k}={v:g}" for k, v in opts.fractions.items())
        raise UserError(f"split {empty[0]!r} would have 0 images (--split {asked}, {patients} patients in all{joined}, "
                        f"{total} images kept): a split is made of whole patients, so it needs more patients, "
                        "a larger fraction, or dropping the split (e.g. --split train=1); nothing was written")
