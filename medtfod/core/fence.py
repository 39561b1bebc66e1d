"""Outputs fenced off from inputs: no command writes to, into or beside a user's input folders.

`check_outputs` refuses to start a command whose output folder or file is an input, contains
an input, or lies inside an input folder (a folder of images is searched recursively, so
outputs inside it would become inputs of the next run). `safe_names` maps the images of a
list file to relative output names that cannot leave the output folder, and `inside` joins
a relative name onto an output folder and checks that the result stays inside it.
"""
from __future__ import annotations

import os
import re
from typing import Callable, List, Mapping, Optional, Sequence

from .errors import UserError


def _norm(path: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(path)))


def _within(child: str, parent: str) -> bool:
    return child != parent and child.startswith(parent.rstrip(os.sep) + os.sep)


def check_outputs(outputs: Mapping[str, Optional[str]], inputs: Mapping[str, Optional[str]]) -> None:
    """Refuse (a `UserError`) when an output is an input, contains one, or lies in an input folder.

    Args:
      outputs: option name -> output folder or file, e.g. {'--out': 'detections'}.
      inputs: option name -> input folder or file the command reads, e.g. {'--images': 'scans'};
        None values are skipped.
    """
    for out_name, out in outputs.items():
        if not out:
            continue
        o = _norm(out)
        for in_name, given in inputs.items():
            if not given:
                continue
            i = _norm(given)
            if o == i:
                raise UserError(f"{out_name} {out} is the input {in_name} {given}; write to a folder of its own "
                                "(medtfod never writes over its inputs)")
            if _within(i, o):
                raise UserError(f"{out_name} {out} contains the input {in_name} {given}; choose an output "
                                "folder that holds none of the inputs")
            if os.path.isdir(given) and _within(o, i):
                raise UserError(f"{out_name} {out} is inside the input folder {in_name} {given}; choose a folder "
                                "outside it (medtfod never writes beside its inputs)")


_DRIVE = re.compile(r"^[A-Za-z]:")


def _parts(path: str) -> List[str]:
    """Path components that are safe as output names: no '', '.', '..', drive letters or ':'."""
    parts = []
    for part in re.split(r"[\\/]+", _DRIVE.sub("", path)):
        if part in ("", ".", ".."):
            continue
        parts.append(part.replace(":", "_"))
    return parts


def safe_names(paths: Sequence[str]) -> List[str]:
    """Relative output names (forward slashes) for input image paths.

    The folder all the paths share is stripped, so `/data/in/a.png` alone becomes `a.png` and
    `/data/in/x/a.png` + `/data/in/y/a.png` become `x/a.png` and `y/a.png`; no name starts with
    a drive or a separator or holds a '..' component; names that still collide (also when
    they differ only in case, as on Windows) get '-2', '-3', ... before the extension.
    """
    absolute = [os.path.abspath(p) for p in paths]
    try:
        root = os.path.commonpath([os.path.dirname(p) for p in absolute]) if absolute else ""
    except ValueError:  # different drives (Windows): keep the drive as a folder name
        root = ""
    names, seen = [], set()
    for path in absolute:
        rel = os.path.relpath(path, root) if root else path
        parts = _parts(rel) or ["image"]
        if root == "" and _DRIVE.match(path):
            parts = [path[0].upper()] + parts
        name = "/".join(parts)
        stem, ext = os.path.splitext(name)
        n = 1
        while name.lower() in seen:
            n += 1
            name = f"{stem}-{n}{ext}"
        seen.add(name.lower())
        names.append(name)
    return names


def inside(folder: str, name: str) -> str:
    """`folder/name` for a relative output name, refusing one that would resolve outside `folder`."""
    target = os.path.join(folder, *_parts(name))
    if not _within(_norm(target), _norm(folder)):
        raise UserError(f"output name {name!r} would leave the output folder {folder}")
    return target


def need_ours(option: str, path: str, what: str, ours: Callable[[str], bool]) -> None:
    """Refuse to replace an existing file at `path` unless `ours(path)` says medtfod wrote it
    (`what`: 'a metrics file', 'a report'); an unreadable file is not ours."""
    if not os.path.exists(path):
        return
    try:
        mine = ours(path)
    except (OSError, ValueError, UnicodeDecodeError):
        mine = False
    if not mine:
        raise UserError(f"{option} {path} exists and is not {what} medtfod wrote; it is left as it is: give "
                        f"another {option} or move that file")


def need_folder(option: str, path: Optional[str]) -> None:
    """Refuse an output folder that is an existing file."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{option} {path} is a file; give a folder")


def need_file(option: str, path: Optional[str]) -> None:
    """Refuse an output file that is an existing folder."""
    if path and os.path.isdir(path):
        raise UserError(f"{option} {path} is a folder; give a file name")
