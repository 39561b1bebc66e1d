"""Bad-input bookkeeping: every problem names the file, the line, the value and what was expected.

Readers report problems here instead of raising or silently skipping. In strict mode the
first problem stops the run (as a `UserError`); otherwise problems are counted, kept for
`report.json`, and the run fails only when too large a share of the input is bad.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import List, Optional

from .errors import UserError


@dataclass(frozen=True)
class Problem:
    """One bad row, file or value.

    Attributes:
      file: the file the problem is in (as the user named it).
      line: 1-based line number in that file, or None when the problem is not about a line.
      kind: a short machine-readable category, e.g. 'bad_number', 'missing_image'.
      value: the offending value, as found.
      message: what is wrong and what was expected.
      image: the image a bad row belongs to; convert drops that image whole (keeping it
        with a finding missing would teach the finding as background). None when the
        problem does not cost an image its place (a duplicate row kept once, a bad header).
    """

    file: str
    line: Optional[int]
    kind: str
    value: str
    message: str
    image: Optional[str] = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message} (value: {self.value!r})"

    def to_dict(self) -> dict:
        return asdict(self)


# Annotations that a source legitimately contains but that are not objects to train on
# (DDTI arrows pointing at a nodule, COCO crowd regions, NIH images whose Data_Entry findings
# have no box: most of ChestX-ray14). They are counted and listed in the
# report, but they are not errors: --strict does not stop on them and --max-bad ignores them.
EXPECTED_SKIPS = frozenset({"skipped_arrow", "skipped_crowd", "skipped_unlocalized"})


class Problems:
    """Collects problems; raises at once in strict mode. Expected skips go to `notes`."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.items: List[Problem] = []
        self.notes: List[Problem] = []

    def add(self, file: str, line: Optional[int], kind: str, value, message: str,
            image: Optional[str] = None) -> None:
        problem = Problem(str(file), line, kind, str(value), message, image)
        if kind in EXPECTED_SKIPS:
            self.notes.append(problem)
            return
        if self.strict:
            raise UserError(f"{problem}\n(stopped by --strict; nothing was written)")
        self.items.append(problem)

    def bad_images(self) -> set:
        """Every image a bad row was reported for: the images convert drops whole."""
        return {p.image for p in self.items if p.image is not None}

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> dict:
        return dict(sorted(Counter(p.kind for p in self.items).items()))

    def check_share(self, bad: int, total: int, max_bad_fraction: float, what: str) -> None:
        """Fail when more than `max_bad_fraction` of `total` items were bad."""
        if total and bad / total > max_bad_fraction:
            first = "\n  ".join(str(p) for p in self.items[:5])
            raise UserError(
                f"{bad} of {total} {what} are bad ({bad / total:.0%}), more than the allowed "
                f"{max_bad_fraction:.0%} (--max-bad); nothing was written. First problems:\n  {first}")

    def to_dict(self, limit: int = 1000) -> dict:
        return {"count": len(self.items), "by_kind": self.counts(),
                "items": [p.to_dict() for p in self.items[:limit]],
                "truncated": max(0, len(self.items) - limit),
                "expected_skips": {"count": len(self.notes),
                                   "by_kind": dict(sorted(Counter(p.kind for p in self.notes).items())),
                                   "items": [p.to_dict() for p in self.notes[:limit]]}}
