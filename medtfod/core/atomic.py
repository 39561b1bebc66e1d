"""Outputs that appear complete or not at all: assemble aside, then move into place.

An interrupted or failed run leaves the previous output untouched and no partial files.
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
from typing import Iterator, List, Optional, Sequence, Union

from .errors import UserError

_UMASK = os.umask(0)  # read once, at import (umask is process-wide; resetting it later could race threads)
os.umask(_UMASK)

MARKER = ".medtfod"  # present in every directory medtfod writes, so it may replace it later
MARKER_TEXT = "written by medtfod; safe for medtfod to replace\n"
_LISTED = "# the files it wrote (a later run replaces these, and refuses to delete any other):"


def marker_text(files: Sequence[str]) -> str:
    """The MARKER file of an output holding `files` (relative, forward slashes)."""
    return MARKER_TEXT + _LISTED + "\n" + "".join(f + "\n" for f in sorted(files) if f != MARKER)


def files_in(folder: str) -> List[str]:
    """Every file under `folder`, relative, with forward slashes, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        found += [name if rel == "." else f"{rel}/{name}".replace(os.sep, "/") for name in files]
    return sorted(found)


def foreign_files(present: Sequence[str], marker: str, owned: Sequence[str] = ()) -> List[str]:
    """The files of an earlier output (`present`, relative) that medtfod did not write.

    `marker` is the earlier output's MARKER text: its list of written files decides. A marker
    without a list (written before medtfod listed its files) falls back to `owned`, glob
    patterns of what the command writes ('voc/*.xml', whose '*' also matches in subfolders);
    with no patterns either, every file counts as medtfod's (the old behaviour).
    """
    lines = marker.splitlines()
    if _LISTED in lines:
        written = set(lines[lines.index(_LISTED) + 1:])
    elif owned:
        written = {f for f in present if any(fnmatch.fnmatchcase(f, p) for p in owned)}
    else:
        return []
    return [f for f in present if f != MARKER and f not in written]


def refuse_foreign(final: str, foreign: Sequence[str]) -> None:
    """A `UserError` naming the files medtfod did not write in its earlier output `final`."""
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UserError(f"output folder {final} holds {len(foreign)} file(s) medtfod did not write: {shown}; "
                        "move them out (or choose a new --out folder): a rerun replaces the whole folder, and "
                        "medtfod never deletes files it did not write")


def _check_foreign(final: str, owned: Sequence[str]) -> None:
    with open(os.path.join(final, MARKER), encoding="utf-8", errors="replace") as f:
        marker = f.read()
    refuse_foreign(final, foreign_files(files_in(final), marker, owned))


@contextlib.contextmanager
def staged_directory(final: str, owned: Optional[Sequence[str]] = None) -> Iterator[str]:
    """Yield a fresh directory beside `final`; on success it replaces `final`.

    Refuses to replace an existing non-empty directory that medtfod did not write, so a
    mistyped `--out` cannot delete a user's folder. With `owned` (the command's layout, glob
    patterns, used for markers written before the list of files: see `foreign_files`), it
    also refuses one medtfod wrote that now holds files it did not write (a user's notes),
    before the work starts and again before the swap. Without it (an export folder, where
    `calibrate` adds its operating point) the earlier output is replaced whole.
    """
    final = os.path.abspath(final)
    if os.path.exists(final):
        if not os.path.isdir(final):
            raise UserError(f"output {final} exists and is not a directory")
        if os.listdir(final) and not os.path.exists(os.path.join(final, MARKER)):
            raise UserError(f"output folder {final} is not empty and was not written by medtfod; "
                            "choose a new --out folder (medtfod replaces only its own outputs)")
        if owned is not None and os.listdir(final):
            _check_foreign(final, owned)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.partial-", dir=parent)
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700 would hide the output from the user's group
    try:
        yield tmp
        with open(os.path.join(tmp, MARKER), "w") as f:
            f.write(marker_text(files_in(tmp)))
        if owned is not None and os.path.isfile(os.path.join(final, MARKER)):
            _check_foreign(final, owned)  # files added while this run worked
        _replace_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_directory(src: str, dst: str) -> None:
    if not os.path.exists(dst):
        os.replace(src, dst)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.old-", dir=os.path.dirname(dst))
    os.rmdir(old)
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_file(path: str, data: Union[str, bytes]) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide the file from the user's group
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
