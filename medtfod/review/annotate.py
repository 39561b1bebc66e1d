"""`medtfod annotate`: labelImg on a folder of images, pre-annotations shown, corrections saved apart.

    medtfod annotate --images DIR --annotations CORRECTED [--predicted PRE] [--order uncertainty]

labelImg (patched by `medtfod.review.labelimg`) runs in its own process, so a Qt failure cannot take
medtfod down with it and is reported with its message. Before starting it, annotate checks
what would otherwise end in a Qt abort: that PyQt5 and labelImg are installed (the `annotate`
extra), that there is a display (Linux: DISPLAY or WAYLAND_DISPLAY, or a QT_QPA_PLATFORM
that needs none), and that the libraries Qt's xcb plugin links are present (named with their
Debian packages). `medtfod doctor` prints the same checks.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from ..core.errors import UserError

INSTALL_HINT = ("install it with `python3 scripts/bootstrap.py install --annotate` (or pip install "
                "\"medtfod[annotate]\"), or correct the pre-annotations in CVAT or Label Studio instead "
                "(`detect --annotations coco|labelstudio`)")
HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "linuxfb", "eglfs", "minimalegl", "webgl")
# shared libraries the PyQt5 wheels' xcb plugin links, and their Debian/Ubuntu packages
DEBIAN_PACKAGES = {
    "libxcb-icccm.so.4": "libxcb-icccm4", "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-xinerama.so.0": "libxcb-xinerama0", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-randr.so.0": "libxcb-randr0", "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0", "libxcb-render.so.0": "libxcb-render0", "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1", "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-util.so.1": "libxcb-util1", "libxcb.so.1": "libxcb1", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0", "libX11-xcb.so.1": "libx11-xcb1", "libX11.so.6": "libx11-6",
    "libXext.so.6": "libxext6", "libGL.so.1": "libgl1", "libGLX.so.0": "libglx0", "libGLdispatch.so.0": "libglvnd0",
    "libEGL.so.1": "libegl1", "libfontconfig.so.1": "libfontconfig1", "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3", "libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0",
    "libXau.so.6": "libxau6", "libXdmcp.so.6": "libxdmcp6", "libpng16.so.16": "libpng16-16",
}


def labelimg_version() -> Optional[str]:
    """labelImg's installed version with PyQt5 importable, else None."""
    from importlib import metadata
    try:
        import PyQt5.QtCore  # noqa: F401
        return metadata.version("labelImg")
    except (ImportError, metadata.PackageNotFoundError):
        return None


def display_problem(env: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Why Qt could not open a window here (Linux), or None; mirrors Qt 5's platform choice."""
    if not sys.platform.startswith("linux"):
        return None
    env = os.environ if env is None else env
    platform = re.split(r"[:;]", env.get("QT_QPA_PLATFORM", ""))[0]
    if platform in HEADLESS_PLATFORMS:
        return (f"QT_QPA_PLATFORM={platform} shows no window: a reader could not see labelImg. Unset it to use "
                "the desktop")
    if platform.startswith("wayland"):
        return None if env.get("WAYLAND_DISPLAY") else f"QT_QPA_PLATFORM={platform} but WAYLAND_DISPLAY is not set"
    display = env.get("DISPLAY")
    if not display:
        return ("no display: DISPLAY is not set (no X server). Run it on the workstation's desktop, or over SSH "
                "with X forwarding (`ssh -X`)")
    local = re.match(r"^(?:unix)?:(\d+)", display)
    if local and not os.path.exists(f"/tmp/.X11-unix/X{local.group(1)}"):
        return f"no display: DISPLAY={display} but no X server is listening (/tmp/.X11-unix/X{local.group(1)})"
    return None


def missing_qt_libraries() -> Tuple[List[str], List[str]]:
    """(missing shared libraries of Qt's xcb plugin, their Debian packages); empty off Linux."""
    if not sys.platform.startswith("linux"):
        return [], []
    try:
        import PyQt5
    except ImportError:
        return [], []
    plugin = os.path.join(os.path.dirname(PyQt5.__file__), "Qt5", "plugins", "platforms", "libqxcb.so")
    if not os.path.isfile(plugin):
        return [], []
    try:
        out = subprocess.run(["ldd", plugin], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return [], []
    missing = sorted({line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line})
    return missing, sorted({DEBIAN_PACKAGES.get(name, name) for name in missing})


def check_can_start(env: Optional[Dict[str, str]] = None) -> None:
    """Raise a UserError naming the fix when labelImg could not open its window here."""
    if labelimg_version() is None:
        raise UserError(f"labelImg and PyQt5 are not installed: {INSTALL_HINT}")
    problem = display_problem(env)
    if problem:
        raise UserError(problem)
    platform = (env or os.environ).get("QT_QPA_PLATFORM", "")
    if not platform or platform.startswith("xcb"):
        missing, packages = missing_qt_libraries()
        if missing:
            raise UserError(f"Qt's xcb plugin cannot load: {', '.join(missing)} not found; install them with "
                            f"`sudo apt-get install {' '.join(packages)}`")


def image_order(images: str, order: str, predicted: Optional[str]) -> List[str]:
    """The images under `images` (relative names) in the order labelImg will show them."""
    from ..inference.inputs import list_images
    names = list_images(images)
    if not names:
        raise UserError(f"no PNG, JPEG or DICOM images under {images}")
    if order == "name":
        return names
    from ..inference.preannotate import QUEUE, read_queue, uncertainty_order
    if not predicted:
        raise UserError(f"--order uncertainty needs the {QUEUE} that `detect --annotations` writes: give --predicted "
                        "(the --annotations-out folder of that run)")
    distance = read_queue(predicted)
    if distance is None:
        raise UserError(f"--order uncertainty: {predicted} has no {QUEUE}; it is written by `detect --annotations` "
                        "(run it again, or use --order name)")
    return uncertainty_order(names, distance)


def classes(label_map: Optional[str], predicted: Optional[str]) -> List[str]:
    if label_map:
        from ..core.labelmap import read_label_map
        return read_label_map(label_map).names
    from ..inference.preannotate import read_classes
    found = read_classes(predicted) if predicted else None
    if found:
        return found
    raise UserError("give --label-map (the classes labelImg offers), or --predicted with its classes.txt")


def annotate(images: str, annotations: str, predicted: Optional[str] = None, label_map: Optional[str] = None,
             order: str = "name", check_only: bool = False) -> int:
    """Start labelImg (see the module docstring); returns its exit status (0 when closed normally)."""
    from ..core import atomic, fence
    if not os.path.isdir(images):
        raise UserError(f"--images {images} is not a folder" if os.path.exists(images)
                        else f"image folder not found: {images}")
    fence.need_folder("--annotations", annotations)
    if predicted and not os.path.isdir(predicted):
        raise UserError(f"--predicted folder not found: {predicted}")
    fence.check_outputs({"--annotations": annotations}, {"--images": images, "--predicted": predicted,
                                                          "--label-map": label_map})
    ordered = image_order(images, order, predicted)
    names = classes(label_map, predicted)
    from ..inference.preannotate import check_names
    check_names("voc", ordered, hint="rename one of them")  # labelImg keeps one XML per file stem
    check_can_start()
    if check_only:
        print(f"labelImg {labelimg_version()} can start here: {len(ordered)} images, {len(names)} classes")
        return 0
    os.makedirs(annotations, exist_ok=True)
    classes_file = os.path.join(annotations, "classes.txt")
    atomic.write_file(classes_file, "\n".join(names) + "\n")
    before = {n for n in os.listdir(annotations) if n.endswith(".xml")}
    print(f"labelImg: {len(ordered)} images ({order} order), saving Pascal VOC to {annotations}"
          + (f"; pre-annotations from {predicted}" if predicted else ""), flush=True)
    import json
    spec = {"images": [os.path.join(os.path.abspath(images), n) for n in ordered], "classes_file": classes_file,
            "save_dir": os.path.abspath(annotations), "predicted": os.path.abspath(predicted) if predicted else None}
    done = subprocess.run([sys.executable, "-m", "medtfod.review.labelimg", json.dumps(spec)], stderr=subprocess.PIPE,
                          text=True)
    saved = {n for n in os.listdir(annotations) if n.endswith(".xml")}
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise UserError(f"labelImg stopped with exit status {done.returncode}; the files it saved are kept in "
                        f"{annotations}. Its last output:\n{tail}")
    print(f"{len(saved - before)} new and {len(saved & before)} earlier annotation files in {annotations}"
          + (f"; compare them with `medtfod review-diff --predicted {predicted} --corrected {annotations} "
             "--out diff.json`" if predicted else ""))
    return 0
