"""Helpers the tests share (fixtures stay in conftest.py): the repository's paths and small
file writers here; running the `medtfod` command in `support.cli`, synthetic data sets in
`support.data`, training runs in `support.training`.

Imported as `support` (pytest puts tests/ on `sys.path`, as for conftest).
"""
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(REPO), "shared")


def write(path, text):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return str(path)
