"""Where the shipped config templates and label maps are.

They live at the top of the repository (`pipeline_configs/`, `label_maps/`); an editable
install finds them there, a regular install under `<prefix>/share/medtfod/` (setup.cfg's
data_files).
"""
from __future__ import annotations

import os
import sys

from .errors import UserError

_CANDIDATE_ROOTS = (
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    os.path.join(sys.prefix, "share", "medtfod"),
)


def resource_path(folder: str, name: str) -> str:
    """Absolute path of `folder/name` among the shipped resources."""
    for root in _CANDIDATE_ROOTS:
        path = os.path.join(root, folder, name)
        if os.path.exists(path):
            return path
    available = sorted(set(resource_names(folder)))
    raise UserError(f"{folder}/{name} is not shipped with medtfod; available: {', '.join(available) or 'none'}")


def resource_names(folder: str):
    for root in _CANDIDATE_ROOTS:
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            yield from os.listdir(path)
