"""Outputs that appear complete or not at all: assemble aside, then move into place.

An interrupted or failed run leaves the previous output untouched and no partial files.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator, Union

from .errors import UserError

_UMASK = os.umask(0)  # read once, at import (umask is process-wide; resetting it later could race threads)
os.umask(_UMASK)

MARKER = ".medtfod"  # present in every directory medtfod writes, so it may replace it later


@contextlib.contextmanager
def staged_directory(final: str) -> Iterator[str]:
    """Yield a fresh directory beside `final`; on success it replaces `final`.

    Refuses to replace an existing non-empty directory that medtfod did not write, so a
    mistyped `--out` cannot delete a user's folder.
    """
    final = os.path.abspath(final)
    if os.path.exists(final):
        if not os.path.isdir(final):
            raise UserError(f"output {final} exists and is not a directory")
        if os.listdir(final) and not os.path.exists(os.path.join(final, MARKER)):
            raise UserError(f"output folder {final} is not empty and was not written by medtfod; "
                            "choose a new --out folder (medtfod replaces only its own outputs)")
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.partial-", dir=parent)
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700 would hide the output from the user's group
    try:
        yield tmp
        with open(os.path.join(tmp, MARKER), "w") as f:
            f.write("written by medtfod; safe for medtfod to replace\n")
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
