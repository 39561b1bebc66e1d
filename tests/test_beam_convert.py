"""`medtfod convert --runner direct` (Apache Beam) against the local converter, on the same tables.

Beam cannot live in the test environment (apache-beam 2.77 needs protobuf<7, pillow<13,
python-dateutil<3; cpu.txt has 7, 13 and 4). So the slow tests install only the packages where
requirements/beam.txt differs from cpu.txt, hash-checked, into a folder beside the venv (kept
between runs, keyed by the two locks' sha256), and run `python -m medtfod convert ... --runner
direct` in a subprocess with that folder first on PYTHONPATH: its protobuf 6, pillow 12 and
dateutil 2 shadow the venv's, everything else is the venv's. The fast tests need no Beam.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from support import REPO
from medtfod.cli import main
from medtfod.core.errors import UserError

REQ = os.path.join(REPO, "requirements")
NETWORK = re.compile(r"NewConnectionError|Max retries|Temporary failure in name resolution|Name or service not known|"
                     r"Could not fetch URL|No matching distribution|ConnectionError|timed out", re.I)


# --- fast: no Beam needed ------------------------------------------------------------------------

def test_pipeline_options_are_checked_for_form():
    from medtfod.data.beam.options import parse_pipeline_options
    assert parse_pipeline_options(["project=p", "temp_location=gs://b/t", "--region=europe-west4", "x="]) == {
        "project": "p", "temp_location": "gs://b/t", "region": "europe-west4", "x": ""}
    assert parse_pipeline_options(None) == {}
    for bad, words in [("project", "is not KEY=VALUE"), ("a b=1", "is not a Beam option name"),
                       ("=1", "is not a Beam option name"), ("runner=DataflowRunner", "with --runner")]:
        with pytest.raises(UserError, match=words):
            parse_pipeline_options([bad])
    with pytest.raises(UserError, match="given twice"):
        parse_pipeline_options(["project=a", "project=b"])


def test_runner_names_map_to_beam_runners():
    """`direct` is the in-process FnApiRunner (Beam's DirectRunner would first try to download Prism)."""
    from medtfod.data.beam.options import RUNNERS
    assert {name: r.name for name, r in RUNNERS.items()} == {
        "direct": "FnApiRunner", "prism": "PrismRunner", "flink": "FlinkRunner", "spark": "SparkRunner",
        "dataflow": "DataflowRunner"}
    assert RUNNERS["direct"].module == "apache_beam.runners.portability.fn_api_runner"


def test_known_runner_failures_become_user_errors():
    from medtfod.data.beam.options import explain_failure
    prism = RuntimeError("Unable to fetch remote prism binary at https://github.com/apache/beam/releases/"
                         "download/v2.77.0/apache_beam-v2.77.0-prism-linux-amd64.zip: <urlopen error>")
    assert "prism_location=PATH" in str(explain_failure("prism", prism))
    jar = RuntimeError("Unable to fetch remote job server jar at https://repo.maven.apache.org/maven2/...jar")
    assert "flink_job_server_jar=PATH" in str(explain_failure("flink", jar))
    assert "spark_job_server_jar=PATH" in str(explain_failure("spark", jar))
    assert "install Java" in str(explain_failure("flink", FileNotFoundError(2, "No such file", "java")))
    strict = UserError("a.csv:7: no file named 'x.png' under the image folder (value: 'x.png')\n"
                       "(stopped by --strict; nothing was written) [while running 'convert']")
    assert str(explain_failure("direct", strict)) == ("a.csv:7: no file named 'x.png' under the image folder "
                                                      "(value: 'x.png')\n(stopped by --strict; nothing was written)")
    # with direct_running_mode=multi_processing the worker's whole traceback is in the text
    remote = RuntimeError('Traceback (most recent call last):\n  File "problems.py", line 68, in add\n'
                          '    raise UserError(f"{problem}\\n(stopped by --strict; nothing was written)")\n'
                          "medtfod.core.errors.UserError: a.csv:7: no file named 'x.png' under the image folder\n"
                          "(stopped by --strict; nothing was written) [while running 'convert/FlatMap(process)']\n")
    assert str(explain_failure("direct", remote)) == ("a.csv:7: no file named 'x.png' under the image folder\n"
                                                      "(stopped by --strict; nothing was written)")
    for runner, text, words in [
        ("prism", 'Unable to parse binary URL "/no/prism". If using a full URL...', "prism_location=/no/prism: no such"),
        ("flink", 'Unable to parse jar URL "/no/x.jar". If using...', "flink_job_server_jar=/no/x.jar: no such file"),
        ("direct", "Unable to get filesystem from specified path, please use the correct path or ensure the "
                   "required dependency is installed, e.g., pip install apache-beam[gcp]. Path specified: gs://b/o",
         "gs://b/o: Beam has no filesystem for it in this environment; pip install 'apache-beam[gcp]"),
        ("direct", "exists() operation failed with exceptions {'s3://b/o': AssertionError('Missing boto3 "
                   "requirement')}", "s3://b/o: Beam has no filesystem for it in this environment; pip install "
                                     "'apache-beam[aws]"),
        ("dataflow", "Pipeline has validations errors: \nMissing required option: project.\nMissing required "
                     "option: region.", "refused the pipeline options: Missing required option: project; Missing "
                                        "required option: region. Give them with --pipeline-option"),
    ]:
        assert words in str(explain_failure(runner, ValueError(text))), (text, explain_failure(runner, ValueError(text)))
    assert explain_failure("direct", ValueError("something else")) is None


def test_missing_beam_is_an_install_hint(tiny_nih, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # import apache_beam -> ImportError
    out = tmp_path / "out"
    assert main(["convert", "nih", "--bbox-csv", tiny_nih["bbox_csv"], "--images", tiny_nih["images"],
                 "--out", str(out), "--runner", "direct", "-q"]) == 1
    err = capsys.readouterr().err
    assert "apache-beam is not installed" in err and "bootstrap.py install --beam" in err, err
    assert not out.exists()


def test_remote_paths_need_the_beam_path_and_local_tables(tiny_nih, tmp_path, capsys):
    base = ["convert", "nih", "--images", tiny_nih["images"], "-q"]
    assert main(base + ["--bbox-csv", tiny_nih["bbox_csv"], "--out", "gs://bucket/out"]) == 1
    assert "needs the Beam path (--runner" in capsys.readouterr().err
    assert main(base + ["--bbox-csv", "gs://bucket/BBox_List_2017.csv", "--out", str(tmp_path / "o"),
                        "--runner", "direct"]) == 1
    assert "must be local files" in capsys.readouterr().err
    assert main(base + ["--bbox-csv", tiny_nih["bbox_csv"], "--out", str(tmp_path / "o"),
                        "--pipeline-option", "project=p"]) == 1
    assert "give --runner too" in capsys.readouterr().err


# --- slow: Beam installed beside the venv, run for real -------------------------------------------

def lock_entries(path):
    """{name: (version, the lock's lines for it: requirement + hashes)} of a hashed lock, for the
    pins whose marker holds on this interpreter (packaging evaluates it)."""
    from packaging.markers import Marker
    entries, current = {}, None
    for line in open(path, encoding="utf-8").read().splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            requirement, _, marker = line.rstrip(" \\").partition(";")
            current = None
            if not marker.strip() or Marker(marker.strip()).evaluate():
                name, _, version = requirement.strip().partition("==")
                current = [line]
                entries[name.lower()] = (version, current)
        elif current is not None and line.strip().startswith("--hash="):
            current.append(line)
    return entries


def beam_only_lines(beam_lock, base_lock):
    """The requirement lines of `beam_lock` (for this interpreter) that `base_lock` lacks: new
    packages and other versions."""
    base = lock_entries(base_lock)
    return [line for name, (version, lines) in lock_entries(beam_lock).items()
            if base.get(name, (None,))[0] != version for line in lines]


def test_beam_lock_differs_from_cpu_only_where_beam_needs_it():
    """beam.txt keeps every cpu.txt pin except protobuf, pillow and python-dateutil (numpy too
    on Python >= 3.12), so the folder installed below holds only Beam and those."""
    lines = [line for line in beam_only_lines(os.path.join(REQ, "beam.txt"), os.path.join(REQ, "cpu.txt"))
             if not line.strip().startswith("--hash")]
    names = {re.split(r"[=;\s]", line)[0] for line in lines}
    assert {"apache-beam", "protobuf", "pillow", "python-dateutil", "pyarrow"} <= names, names
    assert {"tensorflow", "grpcio", "google-crc32c", "pandas"}.isdisjoint(names), names
    assert ("numpy" in names) == (sys.version_info >= (3, 12)), names
    assert "protobuf==6." in "\n".join(lines) and "apache-beam==2.77.0" in "\n".join(lines)


@pytest.fixture(scope="session")
def beam_path(tmp_path_factory):
    """A folder holding the packages of requirements/beam.txt that cpu.txt lacks, installed once
    (pip --no-deps --require-hashes --target) beside the running venv and kept there, keyed by
    the sha256 of both locks ($MEDTFOD_BEAM_TEST_CACHE moves it elsewhere). Skips only when the package index cannot be reached."""
    beam_lock, cpu_lock = os.path.join(REQ, "beam.txt"), os.path.join(REQ, "cpu.txt")
    key = hashlib.sha256(open(beam_lock, "rb").read() + open(cpu_lock, "rb").read()).hexdigest()[:16]
    parent = os.environ.get("MEDTFOD_BEAM_TEST_CACHE") or sys.prefix  # default: inside the venv
    target = os.path.join(parent, f"medtfod-beam-{key}")
    if os.path.isfile(os.path.join(target, ".complete")):
        return target
    tmp = tmp_path_factory.mktemp("beam-install")
    requirements = tmp / "beam-only.txt"
    requirements.write_text("\n".join(beam_only_lines(beam_lock, cpu_lock)) + "\n")
    partial = f"{target}.partial-{os.getpid()}"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes",
                             "--disable-pip-version-check", "--no-input", "--target", partial,
                             "-r", str(requirements)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        if NETWORK.search(result.stderr):
            pytest.skip(f"the package index cannot be reached to install apache-beam: {result.stderr.strip()[-300:]}")
        pytest.fail(f"installing beam.txt's packages failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(partial, ".complete"), "w") as f:
        f.write(key + "\n")
    try:
        os.replace(partial, target)
    except OSError:  # another run got there first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def beam_medtfod(beam_path, *args, check=True):
    """`python -m medtfod ARGS` with beam.txt's packages shadowing the venv's."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([beam_path, REPO, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "medtfod", *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=900)
    if check and result.returncode != 0:
        pytest.fail(f"medtfod {' '.join(map(str, args))} --runner ... exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def records(folder):
    """{shard name: [example bytes]} of a converted dataset."""
    found = {}
    for name in sorted(os.listdir(os.path.join(folder, "tfrecords"))):
        data, pos, examples = open(os.path.join(folder, "tfrecords", name), "rb").read(), 0, []
        while pos < len(data):
            length = int.from_bytes(data[pos:pos + 8], "little")
            examples.append(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
        found[name] = examples
    return found


def files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def assert_same_dataset(local, beam):
    """Same files; byte-identical except the TFRecords (same examples as a set) and the
    manifest's shard/offset fields, which must point at each image's own record."""
    from medtfod.data.manifest import load
    from medtfod.data.readers.tfrecord import bytes_feature, read_record
    assert files(local) == files(beam)
    for name in files(local):
        if name.startswith("tfrecords") or name == "dataset.json":
            continue
        assert open(os.path.join(local, name), "rb").read() == open(os.path.join(beam, name), "rb").read(), name
    a, b = records(local), records(beam)
    assert a.keys() == b.keys()
    assert sorted(x for v in a.values() for x in v) == sorted(x for v in b.values() for x in v)
    ma, mb = load(local), load(beam)
    strip = lambda m: [dict(vars(e), tfrecord=None, offset=None) for e in m.images]  # noqa: E731
    assert strip(ma) == strip(mb)
    for entry in mb.images:
        example = read_record(os.path.join(beam, *entry.tfrecord.split("/")), entry.offset)
        assert bytes_feature(example, "image/filename") == [entry.name.encode()]
        assert mb.image_bytes(entry) == ma.image_bytes(next(e for e in ma.images if e.name == entry.name))


@pytest.fixture(scope="session")
def nih_with_problems(tmp_path_factory):
    """40 NIH demo images (negatives included) plus a bad row and a missing image."""
    from medtfod.data import demo_data
    root = tmp_path_factory.mktemp("beam_nih")
    data = demo_data.generate(str(root), num_images=40, size=64, seed=11)
    with open(data["bbox_csv"], "a", encoding="utf-8") as f:
        f.write("00000002_000.png,Mass,1,abc,3,4\n")  # a bad row: that image is dropped whole
    listed = sorted(os.listdir(data["images"]))
    os.remove(os.path.join(data["images"], listed[7]))  # a missing image
    return data


def nih_args(data, out, *extra):
    return ["convert", "nih", "--bbox-csv", data["bbox_csv"], "--images", data["images"], "--data-entry",
            data["data_entry"], "--label-map", data["label_map"], "--out", out, "-q", "--max-bad", "0.2", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("shard_size, shard_by", [(256, "split"), (6, "split"), (6, "finding")])
def test_beam_direct_equals_local(beam_path, nih_with_problems, tmp_path, shard_size, shard_by):
    """The same tables through the local pool and Beam's direct runner: same files, same report
    (problems included), same examples; one shard per split, then several (--shard-size 6), then
    several per split and part (--shard-by finding)."""
    local, beam = str(tmp_path / "local"), str(tmp_path / "beam")
    sharding = ["--shard-size", str(shard_size), "--shard-by", shard_by]
    assert main(nih_args(nih_with_problems, local, *sharding)) == 0
    beam_medtfod(beam_path, *nih_args(nih_with_problems, beam, *sharding, "--runner", "direct",
                                      "--pipeline-option", "direct_num_workers=2"))
    report = json.loads(open(os.path.join(beam, "report.json")).read())
    assert set(report["problems"]["by_kind"]) == {"bad_number", "missing_image"}, report["problems"]
    assert report["splits"]["train"]["negatives"] > 0
    shards = sorted(os.listdir(os.path.join(beam, "tfrecords")))
    if shard_size == 6:
        assert sum(s.startswith("train.") for s in shards) > 1 and sum(s.startswith("val.") for s in shards) > 1, shards
    if shard_by == "finding":
        assert {s.split("-0")[0] for s in shards} == {f"{split}.record-{part}" for split in ("train", "val")
                                                     for part in ("positive", "negative")}, shards
    assert_same_dataset(local, beam)  # the manifests' per-image fields too:
    from medtfod.data.manifest import load
    assert {k for e in load(beam).images for k in e.meta} == {"age", "pixel_spacing", "sex", "view_position"}
    assert main(["audit", "--splits", beam, "--out", str(tmp_path / "audit.json")]) == 0  # reads by offset
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]


@pytest.mark.slow
def test_beam_strict_and_options(beam_path, nih_with_problems, tmp_path):
    """--strict stops the pipeline at the first problem (a missing image, met by a Beam worker),
    with the local path's message and nothing written; a mistyped pipeline option names the
    nearest one."""
    lines = open(nih_with_problems["bbox_csv"], encoding="utf-8").read().splitlines(keepends=True)
    only_missing = dict(nih_with_problems, bbox_csv=str(tmp_path / "bbox.csv"))
    with open(only_missing["bbox_csv"], "w", encoding="utf-8") as f:
        f.writelines(lines[:-1])  # without the bad row, so the first problem is the missing image
    strict = beam_medtfod(beam_path, *nih_args(only_missing, tmp_path / "s", "--runner", "direct", "--strict"),
                          check=False)
    local = subprocess.run([sys.executable, "-m", "medtfod", *nih_args(only_missing, str(tmp_path / "l"),
                                                                       "--strict")],
                           capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert "no file named" in local.stderr, local.stderr
    assert strict.returncode == 1 and strict.stderr == local.stderr, (strict.stderr, local.stderr)
    assert not os.path.exists(tmp_path / "s")
    # The same message when the problem is met in a worker process, whose whole traceback
    # Beam passes on; the workers' own logging goes to the log, not the terminal.
    processes = beam_medtfod(beam_path, *nih_args(only_missing, tmp_path / "s", "--runner", "direct", "--strict",
                                                  "--pipeline-option", "direct_running_mode=multi_processing",
                                                  "--pipeline-option", "direct_num_workers=2"), check=False)
    assert processes.returncode == 1 and processes.stderr == local.stderr, (processes.stderr, local.stderr)
    assert not os.path.exists(tmp_path / "s")
    # Options and start-up failures Beam reports with a traceback, or with its usage and exit
    # status 2, are one line naming the option.
    for options, words in [
        (["direct_num_worker=2"], "did you mean 'direct_num_workers'"),
        (["direct_num_workers=-3"], "direct_num_workers=-3: give 1 or more"),
        (["direct_running_mode=fast"], "direct_running_mode=fast: expected one of in_memory, multi_threading"),
        (["prism_location=" + str(tmp_path / "no-prism")], "prism_location=" + str(tmp_path / "no-prism") + ": no such"),
    ]:
        runner = "prism" if options[0].startswith("prism") else "direct"
        flags = [arg for option in options for arg in ("--pipeline-option", option)]
        failed = beam_medtfod(beam_path, *nih_args(only_missing, tmp_path / "t", "--runner", runner, *flags),
                              check=False)
        assert failed.returncode == 1 and words in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr and "usage:" not in failed.stderr, failed.stderr
        assert "log is in" not in failed.stderr  # nothing in a kept log says more
    dataflow = beam_medtfod(beam_path, *nih_args(only_missing, tmp_path / "t", "--runner", "dataflow"), check=False)
    assert dataflow.returncode == 1 and "Missing required option: project" in dataflow.stderr, dataflow.stderr
    gcs = beam_medtfod(beam_path, *nih_args(only_missing, "gs://bucket/out", "--runner", "direct"), check=False)
    assert gcs.returncode == 1 and "apache-beam[gcp]" in gcs.stderr, gcs.stderr
    assert "Traceback" not in dataflow.stderr + gcs.stderr
    assert not os.path.exists(tmp_path / "t")


@pytest.mark.slow
@pytest.mark.tf
def test_detect_and_metrics_read_a_beam_dataset(beam_path, trained, tmp_path):
    """`detect --dataset` and `metrics` on the trained fixture's tables converted with Beam read
    the images by the manifest's shard and offset, and give what they give on the local dataset."""
    from support.cli import medtfod
    beam = tmp_path / "beam"
    beam_medtfod(beam_path, "convert", "nih", "--bbox-csv", trained["bbox_csv"], "--images", trained["images"],
                 "--data-entry", trained["data_entry"], "--label-map", trained["label_map"], "--out", beam, "-q",
                 "--runner", "direct")
    assert_same_dataset(trained["dataset"], str(beam))
    tables = {}
    for name, dataset in (("local", trained["dataset"]), ("beam", beam)):
        det = tmp_path / f"det-{name}"
        medtfod("detect", "--model", trained["exported"], "--dataset", dataset, "--split", "val", "--out", det,
                "--min-score", "0", "--no-draw", "-q")
        medtfod("metrics", "--detections", det / "detections.csv", "--ground-truth", dataset, "--split", "val",
                "--out", tmp_path / f"metrics-{name}.json", "--bootstrap", "20")
        tables[name] = (sorted((det / "detections.csv").read_text().splitlines()),
                        json.loads((tmp_path / f"metrics-{name}.json").read_text())["ap"])
    assert tables["beam"] == tables["local"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the runner's worker processes in /proc")
def test_ctrl_c_stops_a_multi_processing_run_and_leaves_nothing(beam_path, tmp_path):
    """SIGINT to medtfod alone (not its process group, as a terminal's Ctrl-C would) while
    Beam's worker processes convert: exit 130 at once, no output or staging folder, no worker
    process left (before: Beam's clean-up waited for its workers forever, and workers in this
    process wrote VOC files into the removed staging folder, recreating it)."""
    import signal
    import time
    from medtfod.data import demo_data
    data = demo_data.generate(str(tmp_path / "src"), num_images=600, size=64, seed=3)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([beam_path, REPO, os.environ.get("PYTHONPATH", "")]))

    def workers():
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"sdk_worker_main" in f.read():
                        found.append(entry)
            except OSError:
                pass
        return set(found)

    before = workers()
    process = subprocess.Popen([sys.executable, "-m", "medtfod", "convert", "nih", "--bbox-csv", data["bbox_csv"],
                                "--images", data["images"], "--out", str(out), "-q", "--runner", "direct",
                                "--pipeline-option", "direct_running_mode=multi_processing",
                                "--pipeline-option", "direct_num_workers=2"],
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:  # until the workers write VOC files
        stages = [p for p in os.listdir(tmp_path) if p.startswith(".out.partial-")]
        if stages and os.path.isdir(tmp_path / stages[0] / "voc") and os.listdir(tmp_path / stages[0] / "voc"):
            break
        time.sleep(0.01)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    sent = time.time()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and time.time() - sent < 30, err
    assert "interrupted; outputs in progress were discarded" in err and "Traceback" not in err, err
    time.sleep(1)
    assert sorted(os.listdir(tmp_path)) == ["src"]
    assert workers() <= before
