"""Progress bars for long loops (tqdm on stderr), silenced by --quiet or MEDTFOD_PROGRESS=0."""
from __future__ import annotations

import os
import sys


class _Silent:
    """tqdm's interface, doing nothing but count (`n`, as tqdm does)."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def write(self, text: str) -> None:
        print(text, flush=True)


def progress(total: int, desc: str, unit: str = "it", quiet: bool = False):
    """A tqdm bar on stderr, or a silent stand-in when `quiet`. Lines printed while a bar is
    open go through `bar.write(text)` (stdout), so they do not run into the bar."""
    if quiet or os.environ.get("MEDTFOD_PROGRESS") == "0":
        return _Silent()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, leave=True)
