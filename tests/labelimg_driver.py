"""Drive labelImg 1.8.6 through one scenario, headless, in this process (run by
tests/test_annotate.py, one subprocess per scenario; not a test module).

    QT_QPA_PLATFORM=offscreen python labelimg_driver.py SCENARIO WORKDIR [--patch]

Input is synthetic Qt events (wheel, mouse, keys) sent to labelImg's real widgets. The default
sys.excepthook stays, so an exception inside a Qt virtual aborts the process as it does for a
user (exit status -6). Exit 0 prints 'RESULT {json}'; exit 3 means a check failed.
"""
import json
import os
import sys
import time

SCENARIO, WORK = sys.argv[1], sys.argv[2]
PATCH = "--patch" in sys.argv
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HOME"] = os.path.join(WORK, "home")  # labelImg keeps ~/.labelImgSettings.pkl
os.environ["XDG_RUNTIME_DIR"] = os.path.join(WORK, "xdg")
os.makedirs(os.environ["HOME"], exist_ok=True)
os.makedirs(os.environ["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)

from PyQt5.QtCore import QEvent, QPoint, QPointF, Qt, QTimer  # noqa: E402
from PyQt5.QtGui import QColor, QCursor, QImage, QMouseEvent, QWheelEvent  # noqa: E402
from PyQt5.QtTest import QTest  # noqa: E402
from PyQt5.QtWidgets import QApplication  # noqa: E402

from medtfod.review import labelimg  # noqa: E402

if PATCH:
    labelimg.apply()
    labelimg.apply()  # idempotent
from labelImg import labelImg as L  # noqa: E402

IMAGES = {"img_1.png": ((117, 112, 179), (240, 320)), "img_2.png": ((27, 158, 119), (400, 300)),
          "img_10.png": ((231, 41, 138), (320, 240))}
IMG_DIR, SAVE_DIR, PREDICTED = (os.path.join(WORK, d) for d in ("images", "corrected", "predicted"))
CLASSES = os.path.join(WORK, "classes.txt")
result = {"scenario": SCENARIO, "patch": PATCH}


def setup():
    for folder in (IMG_DIR, SAVE_DIR, PREDICTED):
        os.makedirs(folder, exist_ok=True)
    for name, (colour, (w, h)) in IMAGES.items():
        image = QImage(w, h, QImage.Format_RGB32)
        image.fill(QColor(*colour))
        assert image.save(os.path.join(IMG_DIR, name))
    with open(CLASSES, "w") as f:
        f.write("Nodule\nMass\n")


def fail(message):
    result["check_failed"] = message
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(3)


def pump(ms=50):
    QTest.qWait(ms)


def wait_until(predicate, timeout=5.0):
    start = time.time()
    while time.time() - start < timeout:
        QApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.01)
    return False


def start():
    app, win = L.get_main_app(["labelImg", IMG_DIR, CLASSES, SAVE_DIR])
    win.resize(1000, 700)
    if not wait_until(lambda: win.file_path and win.file_path.endswith("img_1.png") and win.canvas.pixmap is not None
                      and not win.canvas.pixmap.isNull()):
        fail(f"first image not loaded: {win.file_path!r}")
    pump(100)
    return app, win


def to_widget(canvas, x, y):
    offset = canvas.offset_to_center()
    return QPointF((x + offset.x()) * canvas.scale, (y + offset.y()) * canvas.scale)


def centre(win):
    return to_widget(win.canvas, win.canvas.pixmap.width() / 2, win.canvas.pixmap.height() / 2)


def mouse(widget, kind, pos, button, buttons=None):
    if buttons is None:
        buttons = button if kind != QEvent.MouseButtonRelease else Qt.NoButton
    QApplication.sendEvent(widget, QMouseEvent(kind, pos, widget.mapToGlobal(pos.toPoint()), button, buttons,
                                               Qt.NoModifier))


def wheel(widget, pos, dy=0, dx=0, modifiers=Qt.NoModifier):
    QApplication.sendEvent(widget, QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0),
                                               QPoint(dx, dy), Qt.NoButton, modifiers, Qt.NoScrollPhase, False))


def drag(canvas, p0, p1, hover=True, steps=5):
    a, b = to_widget(canvas, *p0), to_widget(canvas, *p1)
    if hover:  # a person moves over the canvas before pressing: the crosshair is painted
        mouse(canvas, QEvent.MouseMove, a, Qt.NoButton, Qt.NoButton)
    mouse(canvas, QEvent.MouseButtonPress, a, Qt.LeftButton)
    canvas.repaint()
    for i in range(1, steps + 1):
        mouse(canvas, QEvent.MouseMove, a + (b - a) * (i / steps), Qt.NoButton, Qt.LeftButton)
    mouse(canvas, QEvent.MouseButtonRelease, b, Qt.LeftButton, Qt.NoButton)


def draw_box(win, label="Mass", hover=True):
    win.use_default_label_checkbox.setChecked(True)  # no modal label dialog
    win.default_label_text_line.setText(label)
    win.actions.create.trigger()
    pump()
    drag(win.canvas, (20, 30), (150, 120), hover=hover)
    pump(200)


def s_wheel_scroll():
    _, win = start()
    win.set_zoom(300)
    pump()
    before = win.scroll_bars[Qt.Vertical].value()
    wheel(win.canvas, centre(win), dy=-120)
    wheel(win.canvas, centre(win), dx=-120)
    pump()
    result["scrolled"] = [before, win.scroll_bars[Qt.Vertical].value()]
    if result["scrolled"][1] <= before:
        fail("did not scroll")


def s_ctrl_wheel_zoom():
    _, win = start()
    QCursor.setPos(win.canvas.mapToGlobal(centre(win).toPoint()))  # zoom_request reads the cursor
    z0 = win.zoom_widget.value()
    wheel(win.canvas, centre(win), dy=120, modifiers=Qt.ControlModifier)
    pump()
    z1 = win.zoom_widget.value()
    wheel(win.canvas, centre(win), dy=-240, modifiers=Qt.ControlModifier)
    pump()
    result["zoom"] = [z0, z1, win.zoom_widget.value()]
    if not (z1 == z0 + 10 and win.zoom_widget.value() == z1 - 20):
        fail("zoom values")


def s_pan_drag():
    _, win = start()
    win.set_zoom(300)
    pump()
    a = centre(win)
    b = a - QPointF(37.5, 21.25)
    mouse(win.canvas, QEvent.MouseButtonPress, a, Qt.LeftButton)
    mouse(win.canvas, QEvent.MouseMove, b, Qt.NoButton, Qt.LeftButton)
    mouse(win.canvas, QEvent.MouseButtonRelease, b, Qt.LeftButton, Qt.NoButton)
    pump()
    result["scroll"] = [win.scroll_bars[Qt.Horizontal].value(), win.scroll_bars[Qt.Vertical].value()]
    if max(result["scroll"]) > 50:  # a float emitted on the int signal jumps the view to the end
        fail(f"pan jumped: {result['scroll']}")


def s_draw_and_save():
    _, win = start()
    draw_box(win)
    win.display_label_option.setChecked(True)
    win.display_label_option.triggered.emit(True)  # View > Display Labels: Shape.paint draws the text
    win.canvas.repaint()
    pump()
    win.save_file()
    pump()
    path = os.path.join(SAVE_DIR, "img_1.xml")
    if not os.path.isfile(path):
        fail("no xml saved")
    from xml.etree import ElementTree as ET
    root = ET.parse(path).getroot()
    result["saved"] = [(o.findtext("name"), [int(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
                       for o in root.iter("object")]


def s_loop():
    """medtfod's additions: images in the caller's order, pre-annotations shown from the
    predicted folder (never written to), saved to the save folder only when verified."""
    from medtfod.core.boxes import Box
    from medtfod.core.annotations import ImageRecord, Object
    from medtfod.data.writers.voc import voc_xml
    record = ImageRecord("img_2.png", os.path.join(IMG_DIR, "img_2.png"), 400, 300, 3, "png", "",
                         [Object("Nodule", Box(10, 10, 100, 120)), Object("Mass", Box(120, 150, 200, 290))])
    with open(os.path.join(PREDICTED, "img_2.xml"), "wb") as f:
        f.write(voc_xml(record))
    predicted_before = sorted(os.listdir(PREDICTED))
    app, win = L.get_main_app(["labelImg", "", CLASSES, SAVE_DIR])
    labelimg._show_preannotations(win, PREDICTED)
    labelimg._show_in_order(win, [os.path.join(IMG_DIR, n) for n in ("img_2.png", "img_10.png", "img_1.png")])
    pump(100)
    result["first"] = os.path.basename(win.file_path)
    result["shapes"] = [s.label for s in win.canvas.shapes]
    result["files"] = [os.path.basename(win.file_list_widget.item(i).text()) for i in range(win.file_list_widget.count())]
    result["saved_before_verify"] = sorted(os.listdir(SAVE_DIR))
    win.verify_image()  # the space bar: accept the image as it is
    pump()
    result["saved_after_verify"] = sorted(os.listdir(SAVE_DIR))
    win.open_next_image()
    pump()
    result["second"] = os.path.basename(win.file_path)
    result["second_shapes"] = len(win.canvas.shapes)
    result["predicted_unchanged"] = sorted(os.listdir(PREDICTED)) == predicted_before
    with open(os.path.join(SAVE_DIR, "img_2.xml")) as f:
        result["verified_xml"] = f.read()


setup()
scenarios = {k[2:]: v for k, v in dict(globals()).items() if k.startswith("s_")}
if SCENARIO not in scenarios:
    sys.exit(f"unknown scenario {SCENARIO}; known: {', '.join(scenarios)}")
QTimer.singleShot(30000, lambda: os._exit(4))  # never hang a test run
scenarios[SCENARIO]()
print("RESULT " + json.dumps(result), flush=True)
os._exit(0)  # no closeEvent (settings) and no Qt teardown noise
