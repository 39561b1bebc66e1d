"""The one exception type for mistakes a user can fix (bad input, bad flags, missing files).

The CLI prints its message and exits with status 1, without a traceback; anything else that
escapes is a bug in medtfod and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""
