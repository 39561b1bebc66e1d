"""`medtfod annotate`: labelImg 1.8.6 patched for Python 3.11 (each crash driven for real with
Qt events, with and without the patch), the correction loop's additions, the clear errors,
and the window as a person sees it under Xvfb (screenshot)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from medtfod.review import annotate as annotate_module
from medtfod.inference import preannotate
from medtfod.core.annotations import Detection
from medtfod.core.boxes import Box
from medtfod.core.labelmap import LabelMap

from support.cli import medtfod

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "labelimg_driver.py")
labelimg = pytest.importorskip("labelImg", reason="labelImg is not installed (scripts/bootstrap.py test installs it)")


QT_RUNTIME_PACKAGES = ["libgl1", "libfontconfig1", "libfreetype6", "libglib2.0-0", "libx11-6", "libxext6", "libxcb1",
                       "libxkbcommon0", "libdbus-1-3"]


def _offscreen_qt_starts():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    probe = subprocess.run([sys.executable, "-c", "from PyQt5.QtWidgets import QApplication; QApplication([])"],
                           capture_output=True, text=True, env=env, timeout=120)
    return probe.returncode == 0, probe.stderr.strip()[-300:]


@pytest.fixture(scope="module", autouse=True)
def qt_offscreen():
    """Qt's offscreen platform needs a few system libraries (libGL, fontconfig, ...): installed here
    when missing (apt-get as root), else the module skips with Qt's own message."""
    ok, why = _offscreen_qt_starts()
    if ok:
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *QT_RUNTIME_PACKAGES]
        if subprocess.run(install, capture_output=True, env=env, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=900)
            subprocess.run(install, capture_output=True, env=env, timeout=900)
        ok, why = _offscreen_qt_starts()
    if not ok:
        pytest.skip(f"Qt cannot start here even offscreen (system libraries missing?): {why}")


def drive(scenario, tmp_path, patch=True):
    work = tmp_path / f"{scenario}-{int(patch)}"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    done = subprocess.run([sys.executable, DRIVER, scenario, str(work)] + (["--patch"] if patch else []),
                          capture_output=True, text=True, env=env, timeout=120)
    found = [line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return done, (json.loads(found[-1]) if found else None)


@pytest.mark.parametrize("scenario,site", [
    ("wheel_scroll", "scroll_request"),       # the mouse wheel
    ("ctrl_wheel_zoom", "set_zoom"),          # ctrl + wheel
    ("pan_drag", "scroll_request"),           # left-drag on the canvas
    ("draw_and_save", "paintEvent"),          # drawing a box (crosshair, rubber band), labels shown, saved
])
def test_each_labelimg_crash_happens_without_the_patch_and_not_with_it(scenario, site, tmp_path):
    crashed, _ = drive(scenario, tmp_path, patch=False)
    assert crashed.returncode == -signal.SIGABRT, crashed.stderr[-1500:]
    assert "TypeError" in crashed.stderr and site in crashed.stderr
    done, result = drive(scenario, tmp_path, patch=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    if scenario == "wheel_scroll":
        assert result["scrolled"][1] > result["scrolled"][0]
    elif scenario == "ctrl_wheel_zoom":
        z0, z1, z2 = result["zoom"]
        assert (z1, z2) == (z0 + 10, z0 - 10)
    elif scenario == "pan_drag":
        assert result["scroll"] == [2, 1]  # a small drag scrolls a little, not to the end
    else:  # labelImg's own truncation: the 20..150 x 30..120 drag is saved as 19, 30, 149, 120
        assert result["saved"] == [["Mass", [19, 30, 149, 120]]]


def test_preannotations_shown_in_queue_order_and_saved_apart_when_verified(tmp_path):
    done, result = drive("loop", tmp_path, patch=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert result["files"] == ["img_2.png", "img_10.png", "img_1.png"] and result["first"] == "img_2.png"
    assert result["shapes"] == ["Nodule", "Mass"]  # from the predicted folder
    assert result["saved_before_verify"] == []  # looking is not reviewing: nothing written yet
    assert result["saved_after_verify"] == ["img_2.xml"] and result["predicted_unchanged"]
    assert 'verified="yes"' in result["verified_xml"] and result["verified_xml"].count("<object>") == 2
    assert (result["second"], result["second_shapes"]) == ("img_10.png", 0)


def test_annotate_refuses_clearly_without_display_or_libraries(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.png")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = medtfod("annotate", "--images", images, "--annotations", tmp_path / "corrected",
                     "--label-map", os.path.join(os.path.dirname(DRIVER), "..", "label_maps", "thyroid_nodule.pbtxt"),
                     env=env, check=False)
    assert result.returncode == 1 and "no display: DISPLAY is not set" in result.stderr
    assert "Aborted" not in result.stderr and not (tmp_path / "corrected").exists()
    with pytest.raises(Exception, match="--order uncertainty needs the queue.csv"):
        annotate_module.image_order(str(images), "uncertainty", None)
    with pytest.raises(Exception, match=r"has no queue.csv; it is written by `detect --annotations`"):
        annotate_module.image_order(str(images), "uncertainty", str(tmp_path))
    assert "QT_QPA_PLATFORM=offscreen shows no window" in annotate_module.display_problem({"QT_QPA_PLATFORM": "offscreen"})
    not_folder = medtfod("annotate", "--images", images / "a.png", "--annotations", tmp_path / "c", env=env, check=False)
    assert not_folder.returncode == 1 and "a.png is not a folder" in not_folder.stderr
    ldd = ("\tlibxcb-icccm.so.4 => not found\n\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x1)\n"
           "\tlibxcb-xinerama.so.0 => not found\n")
    monkeypatch.setattr(annotate_module.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=ldd, stderr=""))
    assert annotate_module.missing_qt_libraries() == (["libxcb-icccm.so.4", "libxcb-xinerama.so.0"],
                                                      ["libxcb-icccm4", "libxcb-xinerama0"])
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(annotate_module, "display_problem", lambda env=None: None)
    with pytest.raises(Exception, match="sudo apt-get install libxcb-icccm4 libxcb-xinerama0"):
        annotate_module.check_can_start()


XVFB_PACKAGES = ["xvfb", "xauth", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-xinerama0", "libxcb-image0",
                 "libxcb-randr0", "libxcb-render-util0", "libxcb-shape0", "libxkbcommon-x11-0", "libgl1"]


def ensure_xvfb():
    """Xvfb and the libraries Qt's xcb plugin needs, installed here when missing (apt-get as root), else a skip."""
    missing, _ = annotate_module.missing_qt_libraries()
    if shutil.which("Xvfb") and not missing:
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip(f"Xvfb or Qt's xcb libraries ({', '.join(missing)}) are missing and cannot be installed here "
                    "(needs apt-get as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                               *XVFB_PACKAGES]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0 and cmd[1] == "install":
            pytest.skip(f"could not install Xvfb: {done.stderr.strip()[-300:]}")
    if not shutil.which("Xvfb") or annotate_module.missing_qt_libraries()[0]:
        pytest.skip("Xvfb or Qt's xcb libraries are still missing after apt-get install")


GRAB = ("import sys\nfrom PyQt5.QtWidgets import QApplication\napp = QApplication(sys.argv[:1])\n"
        "sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1], 'PNG') else 1)\n")


def test_annotate_opens_labelimg_on_the_first_queued_image_under_xvfb(tmp_path):
    """A real X server (Xvfb): `medtfod annotate --order uncertainty` through the console script;
    a screenshot shows the window with the queue's first image (the one nearest the threshold),
    not the first by name, and none of the others."""
    import numpy as np
    ensure_xvfb()
    colours = {"a.png": (231, 41, 138), "b.png": (27, 158, 119), "c.png": (117, 112, 179)}
    images = tmp_path / "images"
    images.mkdir()
    for name, colour in colours.items():
        Image.new("RGB", (240, 200), colour).save(images / name)
    scores = {"a.png": 0.95, "b.png": 0.52, "c.png": 0.1}  # threshold 0.5: b is the least certain
    predicted = [preannotate.Predicted(n, str(images / n), 240, 200,
                                       [Detection(n, "Nodule", s, Box(20, 20, 120, 100))] if s >= 0.5 else [], s)
                 for n, s in scores.items()]
    preannotate.write("voc", str(tmp_path / "pre"), predicted, LabelMap({"Nodule": 1, "Mass": 2}), 0.5, "m")
    number = next(n for n in range(99, 300) if not os.path.exists(f"/tmp/.X11-unix/X{n}")
                  and not os.path.exists(f"/tmp/.X{n}-lock"))
    xvfb = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=f":{number}", HOME=str(home))
    app = None
    try:
        deadline = time.time() + 10
        while not os.path.exists(f"/tmp/.X11-unix/X{number}") and time.time() < deadline:
            time.sleep(0.05)
        from support.cli import medtfod_script
        app = subprocess.Popen([medtfod_script(), "annotate", "--images", str(images), "--annotations",
                                str(tmp_path / "corrected"), "--predicted", str(tmp_path / "pre"), "--order",
                                "uncertainty"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
        shot, counts = tmp_path / "shot.png", None
        deadline = time.time() + 60
        while time.time() < deadline and app.poll() is None:
            time.sleep(0.5)
            grab = subprocess.run([sys.executable, "-c", GRAB, str(shot)], env=env, capture_output=True, timeout=60)
            if grab.returncode != 0:
                continue
            pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
            counts = {n: int((pixels == c).all(axis=1).sum()) for n, c in colours.items()}
            if counts["b.png"] > 1000:
                break
        assert app.poll() is None, f"annotate exited: {app.communicate()[1][-2000:]}"
        assert counts and counts["b.png"] > 1000, counts  # the first queued image fills part of the window
        assert counts["a.png"] == counts["c.png"] == 0, counts
        shutil.copy(shot, tmp_path / "labelimg_window.png")
    finally:
        if app is not None and app.poll() is None:
            os.killpg(app.pid, signal.SIGTERM)
            app.wait(10)
        xvfb.terminate()
        xvfb.wait(10)
    assert sorted(os.listdir(tmp_path / "pre")) == [".medtfod-preannotations.json", "a.xml", "b.xml", "c.xml",
                                                   "classes.txt", "queue.csv"]  # labelImg wrote nothing there
