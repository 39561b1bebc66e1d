"""The one exception type for mistakes a user can fix (bad input, bad flags, missing files).

The CLI prints its message and exits with status 1, without a traceback; anything else that
escapes is a bug in medtfod and keeps its traceback. `did_you_mean` ends a message about an
unknown name with the nearest valid one.
"""
from __future__ import annotations

from typing import Iterable, Optional


class UserError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


def nearest(value: str, choices: Iterable[str], *, ignore_case: bool = False) -> Optional[str]:
    """The valid name closest to `value` (difflib's best match, similarity >= 0.6), or None.

    With `ignore_case`, names are compared in lower case, and one that differs from `value` only
    in case is the answer. For messages only: never applied silently."""
    import difflib  # here, not at import: every module imports this one, the CLI at each start

    if not ignore_case:
        match = difflib.get_close_matches(value, list(choices), n=1)
        return match[0] if match else None
    lowered = {name.lower(): name for name in choices}
    if value.lower() in lowered:
        return lowered[value.lower()]
    match = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def did_you_mean(value: str, choices: Iterable[str], *, ignore_case: bool = False) -> str:
    """The end of an error message about an unknown `value`: "; did you mean 'NAME'?" with the
    name `nearest` finds, or "" when none is close."""
    hint = nearest(value, choices, ignore_case=ignore_case)
    return f"; did you mean {hint!r}?" if hint is not None else ""
