"""Label maps: class names <-> 1-based ids, read with the OD API's own proto and written as pbtxt.

Reading goes through `string_int_label_map_pb2`, so every syntax the OD API accepts
(single or double quotes, `item {` or `item: {`, display_name, keypoints) is accepted here.
Without the OD API (the light ONNX install) `labelmap_proto` reads the same text format.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .errors import UserError, did_you_mean, nearest

def shipped_path(name: str) -> str:
    """Path of a label map shipped in `label_maps/` (e.g. 'nih_chestxray14')."""
    from .resources import resource_path
    return resource_path("label_maps", f"{name}.pbtxt")


@dataclass(frozen=True)
class LabelMap:
    """Class names in id order; ids are 1-based and need not be contiguous."""

    ids: Dict[str, int]

    @classmethod
    def from_names(cls, names: Sequence[str]) -> "LabelMap":
        return cls({name: i for i, name in enumerate(names, start=1)})

    @property
    def names(self) -> List[str]:
        return sorted(self.ids, key=self.ids.__getitem__)

    @property
    def num_classes(self) -> int:
        """What the OD API's `num_classes` must be: the largest id."""
        return max(self.ids.values()) if self.ids else 0

    def name_of(self, class_id: int) -> str:
        for name, i in self.ids.items():
            if i == class_id:
                return name
        return f"class_{class_id}"

    def suggest(self, name: str) -> Optional[str]:
        """The nearest valid name, for 'did you mean' messages (never applied silently)."""
        return nearest(name, self.ids, ignore_case=True)

    def unknown_message(self, name: str) -> str:
        hint = did_you_mean(name, self.ids, ignore_case=True)
        return f"label {name!r} is not in the label map ({', '.join(self.names)}){hint}"

    def to_pbtxt(self) -> str:
        """The label map in the OD API's text format (single-quoted names, id first)."""
        lines = []
        for name in self.names:
            escaped = name.replace("\\", "\\\\").replace("'", "\\'")
            lines.append(f"item {{\n  id: {self.ids[name]}\n  name: '{escaped}'\n}}\n")
        return "\n".join(lines)


def read_label_map(path: str) -> LabelMap:
    """Read a label map file (`.pbtxt`) into a `LabelMap`.

    Raises:
      UserError: file missing, not valid label-map text, id < 1 (except a 'background' 0),
        or a duplicate name or id.
    """
    if not os.path.isfile(path):
        raise UserError(f"label map not found: {path}")
    try:
        from ..odapi.protos import read_label_map_proto
    except ImportError:  # the light ONNX install: no OD API, the same text format read without it
        from .labelmap_proto import read_label_map_proto
    proto = read_label_map_proto(path)
    ids: Dict[str, int] = {}
    for item in proto.item:
        if item.id == 0 and item.name == "background":
            continue
        name = item.display_name or item.name
        if item.id < 1:
            raise UserError(f"{path}: item {name!r} has id {item.id}; ids start at 1")
        if name in ids:
            raise UserError(f"{path}: name {name!r} appears twice (ids {ids[name]} and {item.id})")
        if item.id in ids.values():
            raise UserError(f"{path}: id {item.id} is used twice ({name!r})")
        ids[name] = item.id
    if not ids:
        raise UserError(f"{path}: the label map has no items (a dataset converted from a table without boxes has "
                        "no classes: convert a table with boxes, or give convert --label-map)")
    return LabelMap(ids)
