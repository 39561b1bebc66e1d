"""`medtfod convert --runner`: the runner table, `--pipeline-option` parsing and checks, and
the known ways a runner fails, as `UserError`s that say what to do.

The CLI imports this module at every start-up (for RUNNERS, and to check --runner,
--pipeline-option and remote paths before any work), so it needs no Beam: `apache_beam` is
imported only by `import_beam`, `make_runner` and `pipeline_options`, when a pipeline runs
(`beam.convert`).
"""
from __future__ import annotations

import contextlib
import re
from typing import Dict, NamedTuple, Optional, Sequence

from ...core.errors import UserError, did_you_mean

# importlib is imported where it is used, as apache_beam is.

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


def is_remote(path: Optional[str]) -> bool:
    """A URL (gs://, s3://, ...) rather than a local path."""
    return bool(path) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+://", path) is not None


def check_paths(tables: Dict[str, str], images: str, out: str, runner: Optional[str]) -> None:
    """Tables are read here, so they must be local; images and output may be remote on Beam."""
    for option, path in tables.items():
        if is_remote(path):
            raise UserError(f"{option} {path}: tables and label maps are read on this machine and must be local "
                            "files; copy it here first (e.g. gsutil cp / aws s3 cp). Only --images and --out "
                            "may be remote, with --runner")
    for option, path in (("--images", images), ("--out", out)):
        if is_remote(path) and not runner:
            raise UserError(f"{option} {path} is remote: that needs the Beam path (--runner direct|dataflow|...; "
                            "see README 'Beyond one machine'); the local converter reads and writes local paths")


def import_beam():
    """`apache_beam`, or a `UserError` that says how to install it."""
    try:
        import apache_beam
    except ImportError as e:
        raise UserError(f"{INSTALL_HINT} ({e})") from None
    return apache_beam


def make_runner(name: str):
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
            raise UserError(f"--pipeline-option {key}={value}: {key!r} is not an option Beam knows for "
                            f"--runner {name}{did_you_mean(key, flags_of)}")
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
