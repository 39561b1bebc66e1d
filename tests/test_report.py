"""`medtfod report`: the page's numbers equal metrics.json, the gallery is worst first, nothing
loads from outside the file, and it renders in a real browser (headless Chromium)."""
import csv
import json
import os
import re
import shutil
import subprocess

import pytest

from medtfod.cli import main

from support.cli import medtfod


def cells(page):
    """{data-key: text} of every metric cell of a report."""
    return dict(re.findall(r'<td data-key="([^"]+)">([^<]*)</td>', page))


def expected_cells(metrics):
    """metrics.json flattened to the report's keys, formatted as the page prints them: the
    threshold-free tables, the IoBB and image-level tables, the numbers at the threshold and
    every stratum."""
    from medtfod.evaluation.report_plots import strata_rows
    out = {}

    def text(value):
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                if prefix.startswith("coco") and k == "per_class":
                    continue
                walk(f"{prefix}/{k}" if prefix else k, v)
        elif isinstance(value, list) and prefix.startswith("ci95/"):
            for i, v in enumerate(value):
                walk(f"{prefix}/{i}", v)
        elif isinstance(value, float) or value is None:
            out[prefix] = text(value)
    walk("", {k: metrics[k] for k in ("ap", "froc", "iobb", "image_level", "coco", "ci95")})
    for k in ("lesions", "hits", "false_positives", "sensitivity", "fp_per_image", "mean_iou", "median_iou",
              "mean_iobb"):
        out[f"at_threshold/{k}"] = text(metrics["at_threshold"][k])
    for _, key, stratum in strata_rows(metrics["strata"]):   # keys are metrics.json paths
        for k in ("lesions", "images", "patients", "ap50", "sensitivity", "fp_per_image", "mean_iou"):
            out[f"{key}/{k}"] = text(stratum[k])
        for r, v in stratum["froc"].items():
            out[f"{key}/froc/{r}"] = text(v)
    return out


def fake_export(root, dataset):
    """An export folder as far as a report with --detections needs one (label map; the
    SavedModel itself is not loaded when the detections are given)."""
    export = root / "export"
    (export / "saved_model").mkdir(parents=True)
    (export / "saved_model" / "saved_model.pb").write_bytes(b"")
    shutil.copyfile(os.path.join(dataset, "label_map.pbtxt"), export / "label_map.pbtxt")
    return export


def detections_from_ground_truth(dataset, path, drop_every=3):
    """A detections.csv of the val split: every ground-truth box found (score 0.9) except each
    third, which is missed, plus one false positive (score 0.95) on the first image that has
    nothing missed."""
    coco = json.load(open(os.path.join(dataset, "coco", "val.json")))
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    labels = {c["id"]: c["name"] for c in coco["categories"]}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "score", "xmin", "ymin", "xmax", "ymax"])
        missed = set()
        for k, ann in enumerate(coco["annotations"]):
            if k % drop_every == drop_every - 1:
                missed.add(names[ann["image_id"]])
                continue
            x, y, bw, bh = ann["bbox"]
            w.writerow([names[ann["image_id"]], labels[ann["category_id"]], 0.9, x, y, x + bw, y + bh])
        first = sorted(set(names.values()) - missed)[0]
        w.writerow([first, labels[1], 0.95, 0, 0, 3, 3])
    return path


def test_report_numbers_equal_metrics_json_and_gallery_is_worst_first(tiny_dataset, tmp_path, capsys):
    export = fake_export(tmp_path, tiny_dataset)
    dets = detections_from_ground_truth(tiny_dataset, tmp_path / "detections.csv")
    out = tmp_path / "report.html"
    assert main(["report", "--model", str(export), "--dataset", tiny_dataset, "--split", "val",
                 "--detections", str(dets), "--min-score", "0.5", "--out", str(out), "--bootstrap", "20",
                 "--model-dir", str(tmp_path / "no-such-run")]) == 0
    assert main(["metrics", "--detections", str(dets), "--ground-truth", tiny_dataset, "--split", "val",
                 "--out", str(tmp_path / "metrics.json"), "--bootstrap", "20"]) == 0
    page = out.read_text()
    expected = expected_cells(json.loads((tmp_path / "metrics.json").read_text()))
    shown = cells(page)
    assert expected and shown == expected
    # worst first: images with missed lesions, then the false positive, then the rest
    order = re.findall(r'data-image="([^"]+)" data-outcomes="([^"]+)"', page)
    ranks = [0 if "missed" in o else 1 if "fp" in o else 2 for _, o in order]
    assert ranks == sorted(ranks) and 0 in ranks and 1 in ranks
    # self-contained: nothing is loaded from anywhere
    assert not re.search(r'(src|href)="(?!data:|#)', page) and "http://" not in page and "https://" not in page
    assert "report of" in capsys.readouterr().out
    assert "no-such-run was not found: no training history" in page  # a note, not a crash


def test_a_split_without_boxes_gets_counts_and_a_note(tiny_dataset, tmp_path):
    """Only the negatives of the split: no metric is possible, the page says so and still shows them."""
    import json as json_mod
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    coco_path = data / "coco" / "val.json"
    coco = json_mod.loads(coco_path.read_text())
    coco["annotations"] = []
    coco_path.write_text(json_mod.dumps(coco))
    export = fake_export(tmp_path, str(data))
    (tmp_path / "d.csv").write_text("image,label,score,xmin,ymin,xmax,ymax\n")
    assert main(["report", "--model", str(export), "--dataset", str(data), "--detections", str(tmp_path / "d.csv"),
                 "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "no metrics are possible" in page and not cells(page) and page.count('class="card"') == len(coco["images"])


def test_a_label_map_mismatch_names_both(tiny_dataset, tmp_path, capsys):
    export = fake_export(tmp_path, tiny_dataset)
    (export / "label_map.pbtxt").write_text("item { id: 1 name: 'Tumor' }\n")
    dets = detections_from_ground_truth(tiny_dataset, tmp_path / "d.csv")
    assert main(["report", "--model", str(export), "--dataset", tiny_dataset, "--detections", str(dets),
                 "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert "label maps disagree" in err and "Tumor" in err and str(export) in err
    assert not (tmp_path / "r.html").exists()


def ensure_chromium():
    """Debian's chromium, installed here when missing (as root with apt-get), else a skip."""
    found = shutil.which("chromium")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("headless Chromium is not installed and cannot be installed here (needs apt-get as root)")
    result = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=900)
    if result.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"could not install Debian's chromium: {result.stderr.strip()[-300:]}")
    return shutil.which("chromium")


def page_requests(netlog):
    """URLs a page asked for, from a Chromium net log: requests with an initiator (the page's
    origin, "null" for a file) as opposed to the browser's own ("not an origin")."""
    text = netlog.read_text()
    try:
        events = json.loads(text)["events"]
    except ValueError:  # a log cut off at exit lacks its closing brackets
        events = json.loads(text.rstrip().rstrip(",") + "]}")["events"]
    return {e["params"]["url"] for e in events
            if "url" in e.get("params", {}) and e["params"].get("initiator", "not an origin") != "not an origin"}


def chromium(browser, profile, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1300,7000", "--hide-scrollbars"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.slow
@pytest.mark.tf
def test_report_in_headless_chromium(trained, tmp_path):
    """The trained fixture's report opened in Chromium: no network request leaves the file, the
    metric cells equal metrics.json, and the plots and gallery regions of a screenshot are drawn."""
    import numpy as np
    from PIL import Image
    browser = ensure_chromium()
    det = tmp_path / "det"
    medtfod("detect", "--model", trained["exported"], "--dataset", trained["dataset"], "--split", "val",
            "--out", det, "--min-score", "0", "--no-draw", "-q")
    out = tmp_path / "report.html"
    result = medtfod("report", "--model", trained["exported"], "--dataset", trained["dataset"], "--split", "val",
                     "--model-dir", trained["model"], "--detections", det / "detections.csv", "--out", out,
                     "--bootstrap", "50", "-q")
    assert "built in" in result.stdout
    medtfod("metrics", "--detections", det / "detections.csv", "--ground-truth", trained["dataset"], "--split", "val",
            "--out", tmp_path / "metrics.json", "--bootstrap", "50")
    # the net-log check can fail: a page that does load from outside is caught
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    chromium(browser, tmp_path / "profile0", f"--log-net-log={tmp_path / 'control.json'}", "--dump-dom",
             control.as_uri())
    assert "http://127.0.0.1:9/x.png" in page_requests(tmp_path / "control.json")
    netlog = tmp_path / "net.json"
    dom = chromium(browser, tmp_path / "profile", f"--log-net-log={netlog}", "--dump-dom", out.as_uri())
    assert dom.returncode == 0 and "<table" in dom.stdout, dom.stderr[-2000:]
    requested = page_requests(netlog)
    assert not [u for u in requested if u.startswith(("http:", "https:", "ws:", "wss:"))], requested
    assert cells(dom.stdout) == expected_cells(json.loads((tmp_path / "metrics.json").read_text()))
    assert "training losses" in dom.stdout and 'id="shown">' in dom.stdout  # history plots, the filter ran
    assert "checkpoint step 100" in dom.stdout  # from the export's export.json
    shot = tmp_path / "shot.png"
    taken = chromium(browser, tmp_path / "profile2", f"--screenshot={shot}", out.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    for region in ("plots", "review", "strata"):  # strata: its table and the forest plot
        x, y, w, h = (int(v) for v in re.search(rf'id="{region}" data-rect="([\d,]+)"', dom.stdout).group(1).split(","))
        assert w > 100 and h > 100, (region, x, y, w, h)
        crop = pixels[y:y + h, x:x + w]
        drawn = (crop < 245).mean()  # share of pixels that are not page background
        assert crop.size and crop.std() > 10 and drawn > 0.02, (region, crop.std(), drawn)


@pytest.mark.slow
@pytest.mark.tf
def test_history_equals_tensorboards_event_accumulator(trained):
    """The report's history reader (TensorBoard's pure-Python record reader, no TensorFlow import)
    gives the series TensorBoard's EventAccumulator gives on the trained fixture's runs."""
    import sys
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray
    code = ("import json, sys; from medtfod.training.history import read_history; "
            "h = read_history(sys.argv[1]); print(json.dumps({'tf': 'tensorflow' in sys.modules, 'runs': h}))")
    done = subprocess.run([sys.executable, "-c", code, trained["model"]], capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    assert found["tf"] is False  # TensorFlow's ~3 s import is not paid for the history
    expected = {}
    for folder, _, files in sorted(os.walk(trained["model"])):
        if not any(f.startswith("events.out.tfevents.") for f in files):
            continue
        accumulator = EventAccumulator(folder, size_guidance={"tensors": 0})
        accumulator.Reload()
        series = expected.setdefault(os.path.relpath(folder, trained["model"]).split(os.sep)[0], {})
        for tag in accumulator.Tags()["tensors"]:
            values = [(e.step, make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
            points = dict((int(s), float(v.reshape(()))) for s, v in values if v.size == 1 and v.dtype.kind in "fiu")
            if points:
                series.setdefault(tag, {}).update(points)
    expected = {run: {tag: [list(p) for p in sorted(points.items())] for tag, points in series.items()}
                for run, series in expected.items() if series}
    assert json.dumps(found["runs"], sort_keys=True) == json.dumps(expected, sort_keys=True)  # NaN == NaN here
    assert {"train", "eval"} <= set(expected) and "Loss/total_loss" in expected["train"]


def test_report_refuses_to_replace_a_file_it_did_not_write(tiny_dataset, tmp_path, capsys):
    export = fake_export(tmp_path, tiny_dataset)
    dets = detections_from_ground_truth(tiny_dataset, tmp_path / "detections.csv")
    mine = tmp_path / "mine.html"
    mine.write_text("<html>mine</html>")
    args = ["report", "--model", str(export), "--dataset", tiny_dataset, "--split", "val", "--detections", str(dets),
            "--bootstrap", "0", "-q"]
    assert main(args + ["--out", str(mine)]) == 1
    assert "is not a report medtfod wrote" in capsys.readouterr().err and mine.read_text() == "<html>mine</html>"
    ours = tmp_path / "report.html"
    assert main(args + ["--out", str(ours), "--size-bins", "0,12,inf"]) == 0
    assert main(args + ["--out", str(ours)]) == 0   # over its own report
