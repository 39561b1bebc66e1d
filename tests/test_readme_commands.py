"""Every command the README shows runs for real, in a fresh process, through the installed
`medtfod` console script (support.cli.medtfod), not only through the in-process `main()`.

README command -> the test that runs it (test_every_readme_command_is_listed keeps this list
complete: a README command missing here, or a test named here that does not exist, fails it):

    python3 scripts/bootstrap.py test      .ci/run is exactly this command    test_cli.py::test_readme_test_command_is_ci
    python3 scripts/bootstrap.py install   run by every `bootstrap.py test`   test_end_to_end.py::test_demo_command; --beam: beam.txt's packages (the part not in cpu.txt) test_beam_convert.py::beam_path
    python3 scripts/bootstrap.py demo      test_end_to_end.py::test_demo_command
    medtfod convert nih                    conftest.py::trained, --runner direct: test_beam_convert.py::test_beam_direct_equals_local
    medtfod convert thyroid-csv            test_readme_commands.py::test_convert_every_source
    medtfod convert ddti                   test_readme_commands.py::test_convert_every_source
    medtfod convert siim                   test_readme_commands.py::test_convert_every_source
    medtfod convert csv                    test_readme_commands.py::test_convert_every_source
    medtfod convert voc                    test_readme_commands.py::test_convert_every_source
    medtfod convert coco                   test_readme_commands.py::test_convert_every_source
    medtfod audit                          test_readme_commands.py::test_audit_metrics_calibrate
    medtfod config                         conftest.py::trained
    medtfod anchors                        test_anchors.py::test_cli_anchors_writes_the_patched_config_and_refuses_bad_input
    medtfod augment-preview                test_augment.py::test_augment_preview_command_writes_only_its_grid
    medtfod pretrained get                 test_readme_commands.py::test_pretrained_get_and_import
    medtfod pretrained import              test_readme_commands.py::test_pretrained_get_and_import
    medtfod train                          conftest.py::trained, --cluster: test_multiworker.py::test_two_workers_train_in_lockstep_and_the_chiefs_checkpoint_evaluates
    medtfod eval                           conftest.py::trained
    medtfod tensorboard                    test_readme_commands.py::test_tensorboard_serves_the_trained_runs
    medtfod export                         conftest.py::trained
    medtfod calibrate                      test_readme_commands.py::test_audit_metrics_calibrate
    medtfod detect                         conftest.py::trained (--images), test_readme_commands.py::test_audit_metrics_calibrate (--dataset), test_annotation_loop.py::test_detect_preannotations_read_back_and_review_diff (--annotations), test_dicom_sr.py::test_detect_dicom_sr_end_to_end (--dicom-sr)
    medtfod metrics                        test_readme_commands.py::test_audit_metrics_calibrate
    medtfod report                         test_report.py::test_report_in_headless_chromium
    medtfod cv                             test_cv.py::test_cv_is_killed_in_the_second_fold_and_resumes_without_retraining_the_first
    medtfod annotate                       test_annotate.py::test_annotate_opens_labelimg_on_the_first_queued_image_under_xvfb
    medtfod review-diff                    test_annotation_loop.py::test_detect_preannotations_read_back_and_review_diff
    medtfod demo                           test_end_to_end.py::test_demo_command
    medtfod doctor                         test_readme_commands.py::test_doctor

Not run by the tests, on purpose: `python requirements/lock.py [--check-windows]` (a maintainer's
tool that rewrites the locks with uv and downloads every Windows wheel, ~700 MB), the
`benchmarks/*.py` scripts (benchmarks, not tests) and `pytest -m "not slow"` (a subset of this run).
"""
import csv
import json
import os
import re
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from support import REPO, write
from support.cli import fenced, medtfod, medtfod_script

THIS = os.path.abspath(__file__)
TESTS = os.path.dirname(THIS)


def listed_commands():
    """{README command: [test references]} parsed from this module's docstring."""
    listed = {}
    for line in __doc__.splitlines():
        match = re.match(r"\s+((?:medtfod|python3 scripts/bootstrap\.py) [a-z-]+(?: [a-z-]+)?)\s{2,}(.*)", line)
        if match:
            listed[match.group(1)] = re.findall(r"([\w.]+\.py)::(\w+)", match.group(2))
    return listed


def readme_commands():
    """Every `medtfod <sub> [<source|action>]` and `bootstrap.py <verb>` the README shows."""
    from medtfod.cli import build_parser
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001
    found = set()
    for match in re.finditer(r"medtfod ([a-z-]+)(?: ([a-z-]+))?", readme):
        sub, second = match.groups()
        if sub not in subs:
            continue
        nested = [a for a in subs[sub]._actions if getattr(a, "choices", None)  # noqa: SLF001
                  and a.dest in ("source", "action")]
        if nested and second in nested[0].choices:
            found.add(f"medtfod {sub} {second}")
        elif not nested:
            found.add(f"medtfod {sub}")
    for verb in re.findall(r"scripts[/\\]bootstrap\.py (demo|test|install)", readme):
        found.add(f"python3 scripts/bootstrap.py {verb}")
    return found


def test_every_readme_command_is_listed():
    listed = listed_commands()
    missing = sorted(readme_commands() - set(listed))
    assert not missing, f"README commands with no test listed in {os.path.basename(THIS)}: {missing}"
    for command, refs in listed.items():
        assert refs, command
        for module, name in refs:
            text = open(os.path.join(TESTS, module), encoding="utf-8").read()
            assert re.search(rf"^def {name}\(", text, re.M), f"{command}: {module}::{name} does not exist"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


@pytest.mark.slow
@pytest.mark.tf
def test_tensorboard_serves_the_trained_runs(trained, tmp_path):
    """`medtfod tensorboard` on the trained fixture's model folder answers TensorBoard's HTTP API
    with the train and eval runs, their loss and COCO tags, and the steps that were trained."""
    port = free_port()
    log = open(tmp_path / "tensorboard.log", "w+")
    proc = subprocess.Popen([medtfod_script(), "tensorboard", "--model-dir", trained["model"], "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://localhost:{port}"
    try:
        deadline, runs = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            try:
                runs = get_json(f"{base}/data/runs")
                break
            except OSError:
                time.sleep(0.5)
        if runs is None:
            log.seek(0)
            why = "did not answer within 120 s" if proc.poll() is None else f"exited ({proc.poll()}) before answering"
            pytest.fail(f"TensorBoard {why}:\n{log.read()[-3000:]}")
        assert {"train", "eval"} <= set(runs), runs
        tags = get_json(f"{base}/data/plugin/scalars/tags")
        assert "Loss/total_loss" in tags["train"], sorted(tags["train"])
        assert any(t.startswith("DetectionBoxes_Precision/mAP") for t in tags["eval"]), sorted(tags["eval"])
        series = get_json(f"{base}/data/plugin/scalars/scalars?run=train&tag=Loss%2Ftotal_loss")
        steps = [step for _, step, _ in series]
        assert steps and max(steps) == 100, series  # the fixture trains 100 steps
        assert all(np.isfinite(value) for _, _, value in series)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode is not None


def sources(tiny_nih, tiny_dataset, root):
    """{source: command-line arguments} with a small input of each source's own format."""
    from test_siim import reference_encode, shapes
    from test_ddti import LEFT, RIGHT, case, mark, region

    images = tiny_nih["images"]
    with open(tiny_nih["bbox_csv"], newline="") as f:
        rows = list(csv.reader(f))[1:]
    table = write(root / "boxes.csv", "name,finding,x,y,w,h\n" + "".join(",".join(r[:6]) + "\n" for r in rows))
    thyroid = write(root / "thyroid.csv", "Image ID,Directory Path,BBox X,BBox Y,BBox Width,BBox Height\n" +
                    "".join(f"{r[0]},{r[0]},{','.join(r[2:6])}\n" for r in rows))
    ddti_xml, ddti_images = root / "ddti" / "xml", root / "ddti" / "images"
    ddti_xml.mkdir(parents=True)
    ddti_images.mkdir()
    for n in (1, 2, 3):
        write(ddti_xml / f"{n}.xml", case(n, mark(1, [region(LEFT)]), mark(2, [region(LEFT), region(RIGHT)])))
        for i in (1, 2):
            noise = np.random.default_rng(10 * n + i).integers(0, 255, (40, 64), dtype=np.uint8)  # distinct pictures:
            Image.fromarray(noise).save(ddti_images / f"{n}_{i}.jpg")   # convert groups identical ones
    siim_images = root / "siim"
    siim_images.mkdir()
    a, b = shapes()
    for k, name in enumerate(("a", "b", "c")):
        noise = np.random.default_rng(k).integers(0, 255, (30, 40), dtype=np.uint8)   # three distinct pictures
        Image.fromarray(noise).save(siim_images / f"{name}.png")
    rle = write(root / "rle.csv", f"ImageId,EncodedPixels\na,{reference_encode(a)}\nb,-1\nc,{reference_encode(b)}\n")
    return {
        "thyroid-csv": ["--table", thyroid, "--images", images],
        "csv": ["--table", table, "--columns", "filename=name,label=finding,x=x,y=y,w=w,h=h", "--images", images],
        "voc": ["--xml-dir", os.path.join(tiny_dataset, "voc"), "--images", images],
        "coco": ["--json", os.path.join(tiny_dataset, "coco", "train.json"), "--images", images],
        "ddti": ["--xml-dir", str(ddti_xml), "--images", str(ddti_images), "--split", "train=0.67,val=0.33"],
        "siim": ["--rle-csv", rle, "--images", str(siim_images), "--width", "40", "--height", "30",
                 "--split", "train=0.67,val=0.33"],
    }


def test_convert_every_source(tiny_nih, tiny_dataset, tmp_path):
    for source, args in sources(tiny_nih, tiny_dataset, tmp_path).items():
        out = tmp_path / f"out-{source}"
        result = medtfod("convert", source, *args, "--out", out, "-q")
        report = json.loads((out / "report.json").read_text())
        assert report["images"] > 0 and report["boxes"] > 0, (source, report)
        assert str(out) in result.stdout, (source, result.stdout)
        assert (out / "label_map.pbtxt").is_file() and list((out / "tfrecords").iterdir()), source


@pytest.mark.tf
def test_doctor():
    result = medtfod("doctor", timeout=300)
    assert "ok: built SSDMetaArch" in result.stdout and "tensorboard" in result.stdout


def test_pretrained_get_and_import(tmp_path):
    """`get` against a zoo mirror on localhost ($MEDTFOD_ZOO_URL), with the sha256 checked, and
    `import` of the same archive; a wrong --sha256 is refused with nothing installed."""
    import hashlib

    from test_pretrained import zoo_server, zoo_tarball
    body = zoo_tarball()
    digest = hashlib.sha256(body).hexdigest()
    with zoo_server(body) as url:
        env = dict(os.environ, MEDTFOD_ZOO_URL=url)
        bad = medtfod("pretrained", "get", "ssd_mobilenet_v2_fpnlite_320", "--workspace", tmp_path / "w1",
                      "--sha256", "0" * 64, env=env, check=False)
        assert bad.returncode == 1 and f"sha256 is {digest}" in bad.stderr
        assert not (tmp_path / "w1" / "pre-trained-models").exists()  # nothing left behind
        got = medtfod("pretrained", "get", "ssd_mobilenet_v2_fpnlite_320", "--workspace", tmp_path / "w1",
                      "--sha256", digest, "-q", env=env)
    assert f"sha256 {digest}" in got.stdout and "--checkpoint" in got.stdout
    archive = tmp_path / "w1" / "pre-trained-models" / "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.tar.gz"
    imported = medtfod("pretrained", "import", archive, "--workspace", tmp_path / "w2")
    assert f"sha256 {digest}" in imported.stdout
    assert (tmp_path / "w2" / "pre-trained-models" / "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8" /
            "checkpoint" / "ckpt-0.index").is_file()


@pytest.mark.slow
@pytest.mark.tf
def test_audit_metrics_calibrate(trained, tmp_path):
    """detect --dataset at score 0, then metrics and calibrate on its table, and audit of the split;
    each writes only its declared outputs and changes no input (support.cli.fenced)."""
    import shutil
    root = tmp_path / "root"
    for name in ("dataset", "exported", "images"):
        shutil.copytree(trained[name], root / name)
    fenced(root, ["audit.json"], "audit", "--splits", root / "dataset", "--out", root / "audit.json")
    assert not json.loads((root / "audit.json").read_text())["leaks"]  # exit status 0 said so too
    tmp_path = root
    det = tmp_path / "det"
    fenced(root, ["det"], "detect", "--model", root / "exported", "--dataset", root / "dataset", "--split", "val",
           "--out", det, "--min-score", "0", "-q")
    assert (det / "detections.csv").is_file() and any(f.endswith(".png") for f in os.listdir(det))
    result = fenced(root, ["metrics.json", "plots"], "metrics", "--detections", det / "detections.csv",
                    "--ground-truth", root / "dataset", "--split", "val", "--out", tmp_path / "metrics.json",
                    "--plots", tmp_path / "plots", "--bootstrap", "20")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"ap", "froc", "iobb", "image_level", "coco", "ci95"} <= set(metrics) and "FROC" in result.stdout
    assert (tmp_path / "plots" / "froc.png").is_file()
    exported = root / "exported"
    fenced(root, ["exported/operating_point.json"], "calibrate", "--model", exported, "--dataset", root / "dataset",
           "--split", "val", "--fp-per-image", "100", "--detections", det / "detections.csv")
    # 100 FP/image is within reach of any model (detect keeps at most 100 boxes per image), so
    # the check does not depend on how much the 100-step fixture learned
    point = json.loads((exported / "operating_point.json").read_text())
    assert point["avg_fp"] <= 100 and 0 <= point["min_score"] <= 1
