"""`medtfod convert --runner RUNNER`: the same conversion, with the per-image work on Apache Beam.

Only the per-image step is distributed. The plan (rows grouped by image, file names matched,
the patient-level split: `plan.plan_conversion`), the per-image check and encoding
(`convert.convert_image`) and the final assembly (`convert.finish`: splits, COCO, manifest,
label map, report) are the local path's own code. The pipeline:

    Create(plan items) -> convert_image (VOC XML written by the worker)
        -> per split: WriteToTFRecord(<split>.record, num_shards=n, '-SSSSS-of-NNNNN')
        -> summaries (record without pixels, problems, sha256 of the tf.Example) -> _work/

Which example lands in which shard is Beam's choice, so after the pipeline the written shards
are scanned (TFRecord framing) and each record is matched to its image by that digest, which
gives the manifest's `tfrecord` and `offset`. Problems are replayed in the plan's order, so
report.json is the local path's. With --strict the per-image step raises at the first problem,
which fails the pipeline; that failure becomes the usual `UserError`. What the run does on
this machine beside the pipeline (its temporary folder, Ctrl-C) is `beam_local`'s; reading and
writing files wherever Beam's FileSystems reach is `beam.files`'.

`apache_beam` is imported only here and only when a pipeline runs (the import takes ~1 s);
the runner table and the option parsing below need no Beam, so the CLI checks them cheaply.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional, Sequence

from ...core.errors import UserError
from .files import example_digest, files_under, index_any, is_remote, read_any, scan_shard, staged_remote, write_any

# base64, difflib, logging, pickle and .atomic are imported where they are used: the CLI
# imports this module for RUNNERS at every start-up.

INSTALL_HINT = ("apache-beam is not installed in this environment; install it with "
                "`python3 scripts/bootstrap.py install --beam` (the hash-pinned requirements/beam.txt) "
                "or `pip install medtfod[beam]`")


class Runner(NamedTuple):
    """A --runner choice: the Beam runner class it maps to and what it needs."""

    module: str
    name: str
    needs: str


# `direct` is Beam's in-process FnApiRunner, not `DirectRunner`: in Beam 2.77 DirectRunner first
# tries Prism, which downloads a Go binary from GitHub (with no timeout), and falls back only
# when that fails; FnApiRunner never downloads anything and runs the same way everywhere.
RUNNERS: Dict[str, Runner] = {
    "direct": Runner("apache_beam.runners.portability.fn_api_runner", "FnApiRunner",
                     "nothing: runs in this process (direct_num_workers=N with "
                     "direct_running_mode=multi_processing for N processes)"),
    "prism": Runner("apache_beam.runners.portability.prism_runner", "PrismRunner",
                    "the Prism binary: downloaded from GitHub, or prism_location=PATH"),
    "flink": Runner("apache_beam.runners.portability.flink_runner", "FlinkRunner",
                    "Java and the Flink job-server jar: downloaded from Maven Central, or "
                    "flink_job_server_jar=PATH; flink_master=HOST:PORT for a cluster"),
    "spark": Runner("apache_beam.runners.portability.spark_runner", "SparkRunner",
                    "Java and the Spark job-server jar: downloaded from Maven Central, or "
                    "spark_job_server_jar=PATH; spark_master_url=spark://HOST:PORT for a cluster"),
    "dataflow": Runner("apache_beam.runners.dataflow.dataflow_runner", "DataflowRunner",
                       "apache-beam[gcp], project=, region= and temp_location=gs://..."),
}

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_pipeline_options(pairs: Optional[Sequence[str]]) -> Dict[str, str]:
    """`--pipeline-option K=V` values -> {K: V}, checked for form only (names are checked
    against Beam's own options when the pipeline is built).

    Raises:
      UserError: a value without '=', a name that is not an option name, a name given twice,
        or `runner` (that is --runner).
    """
    options: Dict[str, str] = {}
    for pair in pairs or ():
        key, eq, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not eq:
            raise UserError(f"--pipeline-option {pair!r} is not KEY=VALUE; e.g. --pipeline-option project=my-project")
        if not _KEY.match(key):
            raise UserError(f"--pipeline-option {pair!r}: {key!r} is not a Beam option name (letters, digits and _, "
                            "e.g. temp_location=gs://bucket/tmp)")
        if key == "runner":
            raise UserError(f"--pipeline-option {pair!r}: choose the runner with --runner "
                            f"({', '.join(RUNNERS)})")
        if key in options:
            raise UserError(f"--pipeline-option {key} is given twice ({options[key]!r} and {value!r})")
        options[key] = value
    return options


def import_beam():
    """`apache_beam`, or a `UserError` that says how to install it."""
    try:
        import apache_beam
    except ImportError as e:
        raise UserError(f"{INSTALL_HINT} ({e})") from None
    return apache_beam


def _runner(name: str):
    """An instance of the Beam runner for a --runner choice."""
    import importlib
    runner = RUNNERS[name]
    try:
        module = importlib.import_module(runner.module)
    except ImportError as e:
        if name == "dataflow":
            raise UserError("--runner dataflow needs apache-beam[gcp] (Google Cloud's client libraries): "
                            "pip install 'apache-beam[gcp]==2.77.0' into this environment "
                            f"({type(e).__name__}: {e})") from None
        raise
    return getattr(module, runner.name)()


def pipeline_options(name: str, options: Dict[str, str]):
    """Beam `PipelineOptions` from {K: V}, each K checked against every option Beam knows once
    the runner's module is imported (a mistyped name is an error with the nearest one)."""
    import difflib

    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    seen, stack = set(), [PipelineOptions]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        if "_add_argparse_args" in vars(cls):
            with contextlib.suppress(Exception):  # an option two classes declare
                cls._add_argparse_args(parser)  # noqa: SLF001
    flags_of = {a.dest: a for a in parser._actions if a.option_strings}  # noqa: SLF001
    argv = []
    for key, value in options.items():
        action = flags_of.get(key)
        if action is None:
            near = difflib.get_close_matches(key, flags_of, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise UserError(f"--pipeline-option {key}={value}: {key!r} is not an option Beam knows for "
                            f"--runner {name}{hint}")
        if action.nargs == 0:  # a switch (store_true): K=true turns it on
            if value.lower() not in ("true", "false", "1", "0", ""):
                raise UserError(f"--pipeline-option {key}={value}: {key} is a switch; give {key}=true or {key}=false")
            if value.lower() in ("true", "1", ""):
                argv.append(action.option_strings[0])
        else:
            _check_value(key, value, action)
            argv.append(f"{action.option_strings[0]}={value}")
    return PipelineOptions(argv)


def _check_value(key: str, value: str, action) -> None:
    """A value Beam's parser would refuse (it prints its usage and exits) as a `UserError`."""
    if action.choices is not None and value not in action.choices:
        raise UserError(f"--pipeline-option {key}={value}: expected one of {', '.join(map(str, action.choices))}")
    if callable(action.type):
        try:
            action.type(value)
        except (TypeError, ValueError) as e:
            kind = getattr(action.type, "__name__", "value")
            raise UserError(f"--pipeline-option {key}={value}: not a valid {kind} ({e})") from None
    if key == "direct_num_workers" and int(value) < 0:
        raise UserError(f"--pipeline-option direct_num_workers={value}: give 1 or more (0: one per CPU core)")


def explain_failure(name: str, error: BaseException) -> Optional[UserError]:
    """The `UserError` for a known way a runner fails (offline, not installed, --strict, a
    bad option), else None."""
    text = str(error)
    lines = text.strip().splitlines()
    # --strict: a worker's UserError, inside Beam's (sometimes a whole remote traceback's) text
    ends = [i for i, line in enumerate(lines) if line.lstrip().startswith("(stopped by --strict")]
    if ends:
        i = ends[-1]
        problem = re.sub(r"^\s*(?:[\w.]*UserError: )?", "", lines[i - 1]) if i else ""
        stop = re.sub(r"\s*\[while running [^\]]*\]\s*$", "", lines[i].strip())
        return UserError("\n".join(part for part in (problem, stop) if part))
    first = lines[0] if lines else type(error).__name__
    if "prism binary" in text.lower():
        return UserError(f"--runner prism: could not download the Prism binary ({first}); give "
                         "--pipeline-option prism_location=PATH (a prism binary or its zip from "
                         "https://github.com/apache/beam/releases), or use --runner direct")
    if "job server jar" in text.lower():
        jar = "flink_job_server_jar" if name == "flink" else "spark_job_server_jar"
        return UserError(f"--runner {name}: could not download the {name.title()} job-server jar ({first}); give "
                         f"--pipeline-option {jar}=PATH (beam-runners-{name}-...-job-server-2.77.0.jar from "
                         "Maven Central), or use --runner direct")
    where = re.search(r'Unable to parse (binary|jar) URL "([^"]*)"', text)
    if where:
        option = {"binary": "prism_location", "jar": f"{name}_job_server_jar"}[where.group(1)]
        return UserError(f"--pipeline-option {option}={where.group(2)}: no such file (give the path of an existing "
                         f"{'prism binary or zip' if where.group(1) == 'binary' else 'job-server jar'}, or an "
                         "http(s):// URL)")
    if isinstance(error, FileNotFoundError) and "java" in text:
        return UserError(f"--runner {name} starts a Java job server, and no `java` was found; install Java 11 "
                         "or newer, or use --runner direct")
    missing_client = re.search(r"'((?:s3|gs|azfs)://[^']*)': \w+\('Missing (?:boto3|\w+) requirement", text)
    if "Unable to get filesystem from specified path" in text or missing_client:
        path = missing_client.group(1) if missing_client else text.rsplit("Path specified:", 1)[-1].strip()
        extra = {"gs": "gcp", "s3": "aws", "azfs": "azure"}.get(path.split("://")[0], "gcp")
        return UserError(f"{path}: Beam has no filesystem for it in this environment; pip install "
                         f"'apache-beam[{extra}]==2.77.0' (gs:// needs [gcp], s3:// [aws], azfs:// [azure])")
    if "apache_beam[gcp]" in text or "apache-beam[gcp]" in text:
        return UserError(f"--runner {name}: {first}; pip install 'apache-beam[gcp]==2.77.0'")
    if "Pipeline has validations errors" in text:
        problems = "; ".join(line.strip().rstrip(".") for line in lines[1:] if line.strip())
        return UserError(f"--runner {name}: Beam refused the pipeline options: {problems}. Give them with "
                         "--pipeline-option KEY=VALUE (for Dataflow: project=, region=, temp_location=gs://BUCKET/tmp)")
    if type(error).__name__ == "BeamIOError":
        return UserError(f"Beam's filesystem failed: {text[:500]} (for s3:// give s3_region_name=, and credentials "
                         "in the environment; for gs://, `gcloud auth application-default login`)")
    return None


# --- the pipeline -----------------------------------------------------------------------------

class _Summary(NamedTuple):
    """What the driver gets back per image: the image, its `Converted` without bytes, and the
    sha256 of its tf.Example (None when dropped). Travels as base64 pickle lines."""

    image: str
    done: object
    digest: Optional[str]


def _convert_fn(stage: str, opts, label_map, with_masks: bool, strict: bool):
    """The DoFn body: `convert_image`, VOC XML written to the stage, the example tagged with its
    split, a summary for the driver."""
    import apache_beam as beam

    from ..convert import Converted, convert_image, voc_name

    import base64
    import pickle

    def process(element):
        # The module itself, not this function's pickled copy of its globals, holds the flag.
        from . import local as beam_local
        if beam_local.CANCELLED.is_set():  # Ctrl-C in this process: write nothing more into the stage
            return
        with beam_local.RUNNING:
            split, item = element
            done = convert_image(item, opts, label_map, with_masks, strict, read=read_any)
            digest = None
            if done.record is not None:
                write_any(f"{stage}/{voc_name(done.record.image_id)}", done.voc)
                digest = example_digest(done.example)
                yield beam.pvalue.TaggedOutput(split, done.example)
            summary = _Summary(item.image, Converted(done.record, done.issues), digest)
            yield base64.b64encode(pickle.dumps(summary, protocol=4)).decode("ascii")

    return process


@dataclass(frozen=True)
class BeamRun:
    """Where `convert_table_beam` runs the per-image work: `runner`, a --runner choice (see
    RUNNERS), with Beam pipeline `options` {name: value} (`parse_pipeline_options`)."""

    runner: str
    options: Dict[str, str] = field(default_factory=dict)


def convert_table_beam(table, images_dir: str, out_dir: str, label_map, opts, problems, run: BeamRun,
                       verbose: bool = False) -> dict:
    """`convert.convert_table` with the per-image work on Beam runner `run.runner` (see RUNNERS).

    Args:
      images_dir, out_dir: local paths or anything Beam's FileSystems handle (gs://, s3://
        with apache-beam[gcp]/[aws]); the tables in `table` were read locally.
      run: the runner and its Beam pipeline options (`BeamRun`).

    Returns:
      The report, as `convert_table`'s.

    Raises:
      UserError: as `convert_table`; also when Beam is missing, an option is unknown, or the
        runner cannot start (Prism/Flink/Spark offline, Dataflow without apache-beam[gcp]).
    """
    from ..convert import input_paths
    from ...core.fence import check_outputs

    runner = run.runner
    if runner not in RUNNERS:
        raise UserError(f"--runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    local = {k: v for k, v in input_paths(table, images_dir).items() if v and not is_remote(v)}
    if not is_remote(out_dir):
        check_outputs({"--out": out_dir}, local)
    _quiet_logging(verbose)
    beam = import_beam()
    from .local import own_temp
    try:
        with own_temp():
            return _run(beam, table, images_dir, out_dir, label_map, opts, problems, runner, run.options or {})
    except SystemExit as e:  # Beam's own option parser, on a value medtfod did not check
        raise UserError(f"--pipeline-option: Beam refused an option value (exit status {e.code}); "
                        "the line above names it") from None
    except Exception as e:
        if "KeyboardInterrupt" in f"{type(e).__name__}: {e}":  # Ctrl-C, as a worker's failure
            raise KeyboardInterrupt from None
        explained = explain_failure(runner, e)
        if explained is None:
            raise
        raise explained from None


def _run(beam, table, images_dir, out_dir, label_map, opts, problems, runner, options) -> dict:
    """`convert_table_beam`'s work, once Beam is imported."""
    from apache_beam.io.filesystems import FileSystems

    from ...core import atomic
    from .local import CANCELLED, stoppable
    from ..convert import Placed, finish
    from ..plan import plan_conversion
    from ..writers import tfrecord

    CANCELLED.clear()
    beam_runner = _runner(runner)
    beam_options = pipeline_options(runner, options)
    FileSystems.set_options(beam_options)  # s3_region_name= etc. for the files read and written here too
    plan = plan_conversion(table, images_dir, label_map, opts, problems, index_images=index_any)
    staged = staged_remote(out_dir) if is_remote(out_dir) else atomic.staged_directory(out_dir)
    with staged as stage:
        if not is_remote(stage):
            for sub in ("voc", "splits", "tfrecords", "coco"):
                os.makedirs(os.path.join(stage, sub))
        work = FileSystems.join(stage, "_work")
        items = [(split, item) for split in plan.by_split for shard in plan.shards(split) for item in shard]
        with stoppable(), beam.Pipeline(runner=beam_runner, options=beam_options) as pipeline:
            converted = (pipeline
                         | "plan" >> beam.Create(items, reshuffle=True)
                         | "convert" >> beam.FlatMap(_convert_fn(stage, opts, label_map, plan.with_masks,
                                                                 problems.strict))
                         .with_outputs(*plan.by_split, main="summaries"))
            for split in plan.by_split:
                _ = (converted[split] | f"write {split}" >> beam.io.WriteToTFRecord(
                    FileSystems.join(stage, "tfrecords", f"{split}.record"), num_shards=plan.shard_count(split),
                    shard_name_template="-SSSSS-of-NNNNN"))
            _ = converted.summaries | "summaries" >> beam.io.WriteToText(FileSystems.join(work, "summary"))
        results = _collect(plan, stage, work, Placed, tfrecord)
        report = finish(plan, results, problems, lambda name, data: write_any(f"{stage}/{name}", data))
        FileSystems.delete([work] if not is_remote(work) else files_under(work))
    return report


def _collect(plan, stage: str, work: str, placed_type, tfrecord) -> dict:
    """image -> (Converted, Placed) from the pipeline's summaries and a scan of its shards."""
    import base64
    import pickle

    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    summaries: Dict[str, _Summary] = {}
    for path in FileSystems.match([FileSystems.join(work, "summary*")])[0].metadata_list:
        with FileSystems.open(path.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for line in f.read().decode("ascii").split():
                summary = pickle.loads(base64.b64decode(line))  # our own pipeline's output, in our stage
                summaries[summary.image] = summary
    where: Dict[str, placed_type] = {}
    for split in plan.by_split:
        for shard in tfrecord.shard_paths("tfrecords", split, plan.shard_count(split)):
            name = shard.replace(os.sep, "/")
            for offset, digest in scan_shard(f"{stage}/{name}"):
                where[digest] = placed_type(name, offset)
    results = {}
    for split in plan.by_split:
        for shard in plan.shards(split):
            for item in shard:
                summary = summaries.get(item.image)
                if summary is None or (summary.digest is not None and summary.digest not in where):
                    raise UserError(f"the Beam pipeline lost {item.image} (no summary or no TFRecord holds it); "
                                    "nothing was written")
                results[item.image] = (summary.done, where[summary.digest] if summary.digest else None)
    return results


def _quiet_logging(verbose: bool) -> None:
    """Beam logs to the root logger (an 'apitools not found' warning on import, every failure
    with its traceback); medtfod reports failures itself, so that goes only with -v."""
    import logging
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
