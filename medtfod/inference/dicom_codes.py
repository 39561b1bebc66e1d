"""The codes a DICOM SR gives each class of the label map (`detect --dicom-sr`, `--dicom-codes`).

Default: a code of medtfod's own local coding scheme `99MEDTFOD` (DICOM's form for a private
scheme: '99' + a name) whose value and meaning are the class name, so a viewer shows the class
name as the finding. A codes file maps classes to standard codes instead, one row per class:

    label,scheme,code,meaning
    Nodule,SCT,27925004,Nodule
    Mass,SCT,4147007,Mass

Classes the file leaves out keep the default. The score is a NUM 'Certainty of Finding'
(DCM 111012, the CAD templates' concept for an algorithm's confidence) in UCUM '1' (no units),
in [0, 1] as detections.csv holds it. An image without detections at the threshold gets one
image-level group (TID 1501) whose finding is SCT 373572006 'Clinical finding absent'.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional

from ..core.errors import UserError, did_you_mean

LOCAL_SCHEME = "99MEDTFOD"
COLUMNS = ("label", "scheme", "code", "meaning")


@dataclass(frozen=True)
class Concept:
    """A coded concept: (code value, coding scheme designator, code meaning)."""

    code: str
    scheme: str
    meaning: str


SCORE = Concept("111012", "DCM", "Certainty of Finding")
NO_UNITS = Concept("1", "UCUM", "no units")
FINDING_CATEGORY = Concept("404684003", "SCT", "Clinical finding")  # each ROI's finding category
NO_FINDING = Concept("373572006", "SCT", "Clinical finding absent")  # an image without kept detections
PROCEDURE = Concept("363679005", "SCT", "Imaging procedure")  # TID 1500's 'Procedure reported'


def default_code(label: str) -> Concept:
    """The local code of a class without a mapped one: value and meaning are the class name."""
    return Concept(label, LOCAL_SCHEME, label)


@dataclass(frozen=True)
class FindingCodes:
    """label -> Concept for the SR's findings; classes not in `mapped` get `default_code`."""

    mapped: Mapping[str, Concept]

    def code(self, label: str) -> Concept:
        return self.mapped.get(label) or default_code(label)

    def label(self, code: str, scheme: str, meaning: str) -> str:
        """The class a finding code stands for (its meaning for a local code), for reading back."""
        for label, concept in self.mapped.items():
            if (concept.code, concept.scheme) == (code, scheme):
                return label
        return meaning if scheme == LOCAL_SCHEME else f"{scheme} {code} {meaning}"


def read_codes(path: Optional[str], labels: Iterable[str]) -> FindingCodes:
    """The codes file `path` (columns label,scheme,code,meaning; see the module docstring) checked
    against the label map's class names `labels`; no file: every class gets its default code.

    Raises:
      UserError: missing columns, an empty cell, a class not in the label map (with the nearest
        name), a class given twice, or a code longer than DICOM allows (meaning: 64 characters).
    """
    if not path:
        return FindingCodes({})
    labels = list(labels)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [name.strip() for name in reader.fieldnames or []]
            rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except OSError as e:
        raise UserError(f"--dicom-codes {path}: cannot be read ({e.strerror})") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise UserError(f"--dicom-codes {path}: missing column(s) {', '.join(missing)}; expected the header "
                        f"{','.join(COLUMNS)}")
    mapped: Dict[str, Concept] = {}
    for line, row in enumerate(rows, start=2):
        values = {c: (row.get(c) or "").strip() for c in COLUMNS}
        empty = [c for c in COLUMNS if not values[c]]
        if empty:
            raise UserError(f"--dicom-codes {path}, line {line}: empty {', '.join(empty)}; every row needs "
                            f"{','.join(COLUMNS)}")
        label = values["label"]
        if label not in labels:
            raise UserError(f"--dicom-codes {path}, line {line}: {label!r} is not a class of the label map "
                            f"({', '.join(labels)}){did_you_mean(label, labels)}")
        if label in mapped:
            raise UserError(f"--dicom-codes {path}, line {line}: {label!r} is given a second time")
        if len(values["meaning"]) > 64:
            raise UserError(f"--dicom-codes {path}, line {line}: the meaning {values['meaning']!r} is "
                            f"{len(values['meaning'])} characters; DICOM's Code Meaning holds at most 64")
        mapped[label] = Concept(values["code"], values["scheme"], values["meaning"])
    return FindingCodes(mapped)
