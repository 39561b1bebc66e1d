"""A command that writes into an existing folder file by file (`detect --out`) and is run again
over its own output: the files the earlier run wrote and this one did not (the drawn copy of an
image no longer in the input, the DICOM result of a run with --dicom-sr, now without) would stay
beside the new results and be taken for them.

`Rerun(folder, marker)` snapshots the folder before the run; `finish()` after a successful run
deletes the files the earlier run listed in `folder/marker` that this run left untouched, and
lists what this run wrote. Only files a run of the same command listed are ever deleted (a
user's own files, and other commands' outputs in the same folder, are left alone), and only
after the new run succeeded, so a failed run loses nothing.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

from .atomic import files_in, write_file

HEADER = "# written by the last medtfod {command} run into this folder (the next one removes those it does not rewrite):"


def _stats(folder: str) -> Dict[str, Tuple[int, int, int]]:
    found = {}
    for name in files_in(folder) if os.path.isdir(folder) else []:
        try:
            s = os.stat(os.path.join(folder, *name.split("/")))
        except OSError:
            continue
        found[name] = (s.st_ino, s.st_mtime_ns, s.st_size)
    return found


class Rerun:
    """See the module docstring. `keep`: names never deleted (e.g. the log file open during the run)."""

    def __init__(self, folder: str, marker: str, command: str, keep: Sequence[str] = ()):
        self.folder, self.marker, self.command, self.keep = folder, marker, command, set(keep) | {marker}
        self.before = _stats(folder)
        self.listed = self._listed()

    def _listed(self) -> List[str]:
        path = os.path.join(self.folder, self.marker)
        if not os.path.isfile(path):
            return []
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        return [line for line in lines[1:] if line and not line.startswith("#")]

    def finish(self) -> List[str]:
        """Delete the earlier run's untouched files, record this run's; returns the deleted names."""
        after = _stats(self.folder)
        written = sorted(n for n, s in after.items() if self.before.get(n) != s and n not in self.keep)
        stale = [n for n in self.listed
                 if n not in self.keep and n in after and after[n] == self.before.get(n) and n not in written]
        for name in stale:
            os.remove(os.path.join(self.folder, *name.split("/")))
        for name in sorted({os.path.dirname(n) for n in stale}, key=len, reverse=True):
            path = os.path.join(self.folder, *name.split("/")) if name else None
            if path and os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
        write_file(os.path.join(self.folder, self.marker),
                   HEADER.format(command=self.command) + "\n" + "".join(n + "\n" for n in written))
        return stale
