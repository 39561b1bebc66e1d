"""labelImg 1.8.6 made to run on our Python, started by `medtfod annotate` in its own process.

The only module that imports PyQt5 and labelImg. labelImg 1.8.6 (2021, archived) passes
floats to Qt methods that take C++ ints; Python 3.10 removed the implicit conversion, so the
call raises TypeError, and inside a Qt virtual (paintEvent, wheelEvent) PyQt5 turns that into
an abort. Measured crashes on Python 3.11 + PyQt5 5.15.11 (tests/test_annotate.py drives each):

    labelImg.py  MainWindow.scroll_request   bar.setValue(float)          wheel scroll, pan
                 MainWindow.set_zoom         zoom_widget.setValue(float)  ctrl+wheel zoom
                 MainWindow.zoom_request     bar.setValue(float)          ctrl+wheel zoom
    canvas.py    Canvas.paintEvent           drawRect / drawLine(float)   drawing a box, crosshair
                 Canvas.mouseMoveEvent       scrollRequest.emit(float)    left-drag pan
    shape.py     Shape.paint                 drawText(float, float, s)    View > Display Labels

`apply()` patches labelImg's own objects only, not PyQt5 for the whole process: its
ZoomWidget's setValue and the main window's two scroll bars take int() of a float (what
Python <= 3.9 did implicitly), the canvas paints with a QPainter subclass that sends float
coordinates to Qt's QRectF/QLineF/QPointF overloads, and the canvas's scrollRequest signal
emits ints. Like `medtfod.odapi.compat`, each fix is idempotent and reported by `status()`.

Two behaviours are added for the correction loop (`run`): the window shows the images in
the caller's order (labelImg scans and sorts a folder itself), and an image without a file in
the save folder shows the pre-annotation from `predicted` instead; it is written to the save
folder only when the reader saves or verifies it, so the predicted folder is never written to.
"""
from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

_MARK = "_medtfod_patched"
_APPLIED = {"labelimg_float_args": False, "preannotations": False}


def _to_int(value):
    return int(value) if isinstance(value, float) else value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _float_painter():
    """A QPainter whose drawRect/drawLine/drawText accept float coordinates (sub-pixel exact)."""
    from PyQt5.QtCore import QLineF, QPointF, QRectF
    from PyQt5.QtGui import QPainter

    def floats(args, n):
        return len(args) == n and all(_is_number(a) for a in args) and any(isinstance(a, float) for a in args)

    class FloatPainter(QPainter):
        def drawRect(self, *args):
            return super().drawRect(QRectF(*args)) if floats(args, 4) else super().drawRect(*args)

        def drawLine(self, *args):
            return super().drawLine(QLineF(*args)) if floats(args, 4) else super().drawLine(*args)

        def drawText(self, *args):
            if len(args) == 3 and floats(args[:2], 2):
                return super().drawText(QPointF(args[0], args[1]), args[2])
            return super().drawText(*args)
    return FloatPainter


class _IntSignal:
    """Stands in for one canvas's bound scrollRequest signal: emit() passes ints."""

    def __init__(self, bound):
        self._bound = bound

    def emit(self, *args):
        return self._bound.emit(*[_to_int(a) for a in args])

    def __getattr__(self, name):  # connect, disconnect, ...
        return getattr(self._bound, name)


def _int_setter(bound):
    def setValue(value):
        return bound(_to_int(value))
    setattr(setValue, _MARK, True)
    return setValue


def apply() -> dict:
    """Patch labelImg 1.8.6 (before its window is created); returns `status()`."""
    if _APPLIED["labelimg_float_args"]:
        return status()
    from PyQt5.QtWidgets import QSpinBox
    from labelImg import labelImg as main_module
    from libs import canvas, zoomWidget

    painter = _float_painter()
    canvas_init = canvas.Canvas.__init__

    def init_canvas(self, *args, **kwargs):
        canvas_init(self, *args, **kwargs)
        self._painter = painter()
        self.scrollRequest = _IntSignal(self.scrollRequest)
    canvas.Canvas.__init__ = init_canvas

    zoomWidget.ZoomWidget.setValue = lambda self, value: QSpinBox.setValue(self, _to_int(value))

    window_init = main_module.MainWindow.__init__

    def init_window(self, *args, **kwargs):
        window_init(self, *args, **kwargs)
        for bar in self.scroll_bars.values():
            bar.setValue = _int_setter(bar.setValue)
    main_module.MainWindow.__init__ = init_window
    _APPLIED["labelimg_float_args"] = True
    return status()


def status() -> dict:
    return dict(_APPLIED)


def _show_preannotations(window, predicted: str) -> None:
    """An image without a file in the save folder shows `predicted`/<stem>.xml (read only)."""
    original = type(window).show_bounding_box_from_annotation_file

    def show(file_path):
        stem = os.path.splitext(os.path.basename(file_path))[0]
        saved = os.path.join(window.default_save_dir or "", stem + ".xml")
        offered = os.path.join(predicted, stem + ".xml")
        if window.default_save_dir and not os.path.isfile(saved) and os.path.isfile(offered):
            window.load_pascal_xml_by_filename(offered)
            window.canvas.verified = False  # the reader has not verified it yet
            return None
        return original(window, file_path)
    window.show_bounding_box_from_annotation_file = show
    _APPLIED["preannotations"] = True


def _show_in_order(window, images: List[str]) -> None:
    """labelImg's file list, next/previous and counter over `images`, in this order."""
    ordered = [os.path.abspath(p) for p in images]
    window.scan_all_images = lambda _folder: list(ordered)
    base = os.path.commonpath(ordered)
    window.import_dir_images(os.path.dirname(base) if os.path.isfile(base) else base)


def run(images: List[str], classes_file: str, save_dir: str, predicted: Optional[str] = None) -> int:
    """Start labelImg on `images` (in order), offering `classes_file`'s classes and saving Pascal
    VOC into `save_dir`; returns the event loop's exit status."""
    apply()
    from labelImg import labelImg as main_module
    # no image folder argument: labelImg would scan a folder itself before ours is shown
    app, window = main_module.get_main_app(["labelImg", "", classes_file, save_dir])
    window.set_format(main_module.FORMAT_PASCALVOC)  # not the last session's format (labelImg remembers it)
    if window.width() <= 600 and window.height() <= 500:  # labelImg's first-run size is too small to review in
        screen = app.primaryScreen().availableGeometry()
        window.resize(int(screen.width() * 0.9), int(screen.height() * 0.9))
    if predicted:
        _show_preannotations(window, predicted)
    if images:
        _show_in_order(window, images)
    return app.exec_()


if __name__ == "__main__":  # python -m medtfod.review.labelimg '{"images": [...], "classes_file": ..., ...}'
    sys.exit(run(**json.loads(sys.argv[1])))
