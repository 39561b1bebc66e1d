"""Shared fixtures: tiny synthetic data made in code; ../shared only when it exists."""
import importlib
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips the test when the checkout has no ../shared."""
    path = os.path.join(SHARED, "data")
    if not os.path.isdir(path):
        pytest.skip("../shared/data is not present (only in the developers' checkout)")
    return path


@pytest.fixture(scope="session")
def tiny_nih(tmp_path_factory):
    """24 synthetic 64-px images with NIH-format tables (read-only: copy before changing)."""
    from medtfod.data import demo_data
    root = tmp_path_factory.mktemp("tiny_nih")
    return demo_data.generate(str(root), num_images=24, size=64, seed=3)


def write(path, text):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return str(path)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_nih, tmp_path_factory):
    """`tiny_nih` converted by `medtfod convert nih` (read-only: tests must not change it)."""
    from medtfod.cli import main
    out = tmp_path_factory.mktemp("tiny_dataset") / "data"
    assert main(["convert", "nih", "--bbox-csv", tiny_nih["bbox_csv"], "--images", tiny_nih["images"],
                 "--data-entry", tiny_nih["data_entry"], "--label-map", tiny_nih["label_map"],
                 "--out", str(out), "-q"]) == 0
    return str(out)


MASKED_SIZE = 64  # pixels, square


def masked_coco(root, num_images=16, seed=0):
    """A COCO JSON with polygon segmentations and its grey PNGs: 1-2 bright quadrilaterals
    per image, class 'nodule' or 'cyst' (polygon = mask, its bounds = box)."""
    import json

    import numpy as np
    from PIL import Image

    size = MASKED_SIZE
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for i in range(1, num_images + 1):
        pixels = rng.normal(60, 8, (size, size))
        for _ in range(rng.integers(1, 3)):
            x0, y0 = (int(v) for v in rng.integers(4, size - 28, 2))
            w, h = (int(v) for v in rng.integers(10, 24, 2))
            polygon = [x0, y0 + h / 2, x0 + w / 2, y0, x0 + w, y0 + h / 2, x0 + w / 2, y0 + h]  # a diamond
            yy, xx = np.mgrid[:size, :size]
            inside = np.abs(xx - (x0 + w / 2)) / (w / 2) + np.abs(yy - (y0 + h / 2)) / (h / 2) <= 1
            pixels[inside] += 120
            category = int(rng.integers(1, 3))
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": category,
                                "bbox": [x0, y0, w, h], "iscrowd": 0, "segmentation": [polygon]})
        name = f"img{i:03d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images_dir / name)
        images.append({"id": i, "file_name": name, "width": size, "height": size})
    path = root / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "nodule"}, {"id": 2, "name": "cyst"}]}))
    return str(path), str(images_dir)


@pytest.fixture(scope="session")
def masked_dataset(tmp_path_factory):
    """`masked_coco` converted by `medtfod convert coco`, split 12/4, with instance masks in
    both splits (read-only: tests must not change it)."""
    import json

    from medtfod.cli import main
    root = tmp_path_factory.mktemp("masked")
    json_path, images = masked_coco(root)
    out = root / "data"
    assert main(["convert", "coco", "--json", json_path, "--images", images, "--out", str(out),
                 "--split", "train=0.75,val=0.25", "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert all(split["masks"] > 0 for split in report["splits"].values())
    return str(out)


def saved_step(model_dir):
    """Step of the latest checkpoint in model_dir, -1 when there is none (yet)."""
    from medtfod.odapi.evaluate import checkpoint_step
    from medtfod.odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    latest = tf.train.latest_checkpoint(model_dir)
    return checkpoint_step(latest) if latest else -1


def train_killed_and_resumed(config, model_dir, steps, every, log_path, timeout=600, extra=(), ready=None):
    """Run `python -m medtfod train` in a subprocess with `--checkpoint-every-n every` (and the
    `extra` arguments), SIGKILL it as soon as `ready(model_dir)` is true (default: a checkpoint
    of step >= `every` exists), then run the same command again.

    The first run's output goes to `log_path`; the test fails when that run ends (or `timeout`
    seconds pass) before it could be killed.

    Returns:
      {'killed': the first run's exit status, 'saved': the latest checkpoint's step after the
       kill, 'returncode': the second run's exit status, 'output': its stdout and stderr,
       'reported': the steps the second run reported (the OD API logs each block of 100 it
       runs), 'final': the latest checkpoint's step after it}.
    """
    import re
    import subprocess
    import sys
    import time

    from medtfod.core.errors import UserError

    command = [sys.executable, "-m", "medtfod", "train", "--config", config, "--model-dir", model_dir,
               "--steps", str(steps), "--checkpoint-every-n", str(every), "-v", *extra]  # -v: the OD API's lines
    ready = ready or (lambda folder: saved_step(folder) >= every)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout
            while time.time() < deadline and proc.poll() is None:
                try:
                    if ready(model_dir):
                        break
                except UserError:  # caught between the index and the data file: look again
                    pass
                time.sleep(0.2)
            if proc.poll() is not None or time.time() >= deadline:
                with open(log_path, errors="replace") as f:
                    pytest.fail(f"training finished, failed or timed out before it could be killed "
                                f"(exit status {proc.poll()}):\n{f.read()[-3000:]}")
            proc.kill()
        finally:
            proc.kill()
            proc.wait()
    saved = saved_step(model_dir)
    again = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
    output = again.stdout.decode(errors="replace")
    return {"killed": proc.returncode, "saved": saved, "returncode": again.returncode, "output": output,
            "reported": [int(s) for s in re.findall(r"Step (\d+) per-step time", output)],
            "first_output": open(log_path, errors="replace").read(),
            "final": saved_step(model_dir)}


def medtfod_script():
    """The installed `medtfod` console script of the Python running the tests."""
    import shutil
    import sys
    script = shutil.which("medtfod", path=os.path.dirname(sys.executable))
    if not script:
        pytest.fail(f"the medtfod console script is not installed beside {sys.executable}; "
                    "run python3 scripts/bootstrap.py install")
    return script


def medtfod(*args, check=True, timeout=900, **kwargs):
    """Run `medtfod ARGS...` through the installed console script in a fresh process.

    Returns the CompletedProcess (text stdout and stderr); with `check`, a non-zero exit fails
    the test and shows the end of its output."""
    import subprocess
    result = subprocess.run([medtfod_script(), *[str(a) for a in args]], capture_output=True, text=True,
                            timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"medtfod {' '.join(map(str, args))} exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def tree(root):
    """{relative path: sha256} of every file under `root`."""
    import hashlib
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def fenced(root, outputs, *args, keep=(), **kwargs):
    """`medtfod ARGS` (see `medtfod`) run from an empty folder under `root`; then check that
    every file it added or changed under `root` lies inside one of `outputs` (folders or files,
    relative to `root`) and that no other file changed, inputs included, nor any of `keep`
    (inputs that live inside an output folder, e.g. a model folder's pipeline.config).
    Returns the result."""
    cwd = os.path.join(root, "cwd")
    os.makedirs(cwd, exist_ok=True)
    before = tree(root)
    result = medtfod(*args, cwd=cwd, **kwargs)
    after = tree(root)
    touched = sorted(p for p in after if before.get(p) != after[p]) + sorted(set(before) - set(after))
    allowed = [os.path.normpath(o) for o in outputs]
    stray = [p for p in touched if not any(p == o or p.startswith(o + os.sep) for o in allowed)]
    stray += [p for p in touched if p in {os.path.normpath(k) for k in keep}]
    assert not stray, f"medtfod {args[0]} wrote, changed or removed outside {outputs}: {stray[:10]}"
    return result


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The README's path through the installed `medtfod` command on a tiny config, once per run:
    convert nih -> config -> train (100 steps) -> eval -> export (+ TFLite) -> detect.

    Every step runs from an empty working folder and is checked by `fenced`: it writes only
    into its declared outputs, and the source tables and images (like every other file) stay
    byte-identical. Returns a dict of paths: dataset, model, config, exported, detections,
    images (read-only: tests copy what they change)."""
    from medtfod.data import demo_data
    from medtfod.demo import DEMO_OVERRIDES

    root = str(tmp_path_factory.mktemp("e2e"))
    data = demo_data.generate(os.path.join(root, "source"), num_images=40, size=128, seed=5)
    paths = {k: os.path.join(root, k) for k in ("dataset", "model", "exported", "detections")}
    paths["config"] = os.path.join(root, "model", "pipeline.config")
    fenced(root, ["dataset"], "convert", "nih", "--bbox-csv", data["bbox_csv"], "--images", data["images"],
           "--data-entry", data["data_entry"], "--label-map", data["label_map"], "--out", paths["dataset"], "-q")
    overrides = [a for k, v in DEMO_OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    fenced(root, ["model/pipeline.config"], "config", "--model", "ssd_mobilenet_v2_fpnlite_320",
           "--data", paths["dataset"], "--out", paths["config"], "--steps", "100", "--batch-size", "4",
           "--image-size", "128", "--learning-rate", "0.04", "--warmup-steps", "20",
           "--augment", "random_horizontal_flip", *overrides)
    config = ["model/pipeline.config"]
    fenced(root, ["model"], "train", "--config", paths["config"], "--model-dir", paths["model"], "-q", keep=config)
    fenced(root, ["model"], "eval", "--config", paths["config"], "--model-dir", paths["model"], "-q", keep=config)
    fenced(root, ["exported"], "export", "--config", paths["config"], "--model-dir", paths["model"],
           "--out", paths["exported"], "--tflite", "-q")
    fenced(root, ["detections"], "detect", "--model", paths["exported"], "--images", data["images"],
           "--out", paths["detections"], "--min-score", "0.0", "-q")
    paths.update(images=data["images"], bbox_csv=data["bbox_csv"], data_entry=data["data_entry"],
                 label_map=data["label_map"], root=root)
    return paths


@pytest.fixture(scope="session")
def pascal_voc_io(tmp_path_factory):
    """labelImg's `libs.pascal_voc_io`, installed (without PyQt) into a temp folder if needed."""
    try:
        return importlib.import_module("libs.pascal_voc_io")
    except ImportError:
        pass
    target = tmp_path_factory.mktemp("labelimg")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                             "--disable-pip-version-check", "--target", str(target), "labelImg==1.8.6"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"labelImg 1.8.6 could not be installed here: {result.stderr.strip()[-300:]}")
    sys.path.insert(0, str(target))
    return importlib.import_module("libs.pascal_voc_io")
