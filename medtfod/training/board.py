"""`medtfod tensorboard`: TensorBoard on a model folder, served from this process.

Served in-process (`tensorboard.program`), not as a child process, so stopping medtfod stops
the server too. TensorBoard 2.20 imports `pkg_resources`, which setuptools 81 removed: the locks
pin `setuptools<81` for it, and `import_tensorboard` names that fix when the import fails.
"""
from __future__ import annotations

import os
import warnings

from ..core.errors import UserError

FIX = ("TensorBoard 2.20 needs `pkg_resources`, which setuptools >= 81 no longer ships; reinstall "
       "from the locks (python3 scripts/bootstrap.py install) or run: pip install \"setuptools<81\"")


def import_tensorboard():
    """Import TensorBoard's program and default plugins; a `UserError` with the fix when that fails.

    Returns:
      (tensorboard.program, tensorboard.default) modules.
    """
    try:
        with warnings.catch_warnings():  # setuptools 80 warns that pkg_resources is deprecated
            warnings.filterwarnings("ignore", message=".*pkg_resources", category=UserWarning)
            from tensorboard import default, program
    except ImportError as e:
        hint = FIX if "pkg_resources" in str(e) else "reinstall with python3 scripts/bootstrap.py install"
        raise UserError(f"TensorBoard does not import ({type(e).__name__}: {e}); {hint}") from e
    return program, default


def serve(model_dir: str, port: int = 6006, host: str = "localhost") -> int:
    """Serve TensorBoard on `model_dir` at http://host:port/ until interrupted; returns 0."""
    if not os.path.isdir(model_dir):
        raise UserError(f"model folder not found: {model_dir}")
    program, default = import_tensorboard()
    board = program.TensorBoard(plugins=default.get_plugins())
    board.configure(logdir=os.path.abspath(model_dir), port=port, host=host)
    try:
        return board.main() or 0
    except KeyboardInterrupt:
        return 0
