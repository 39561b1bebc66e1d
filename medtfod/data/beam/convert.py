"""`medtfod convert --runner RUNNER`: the same conversion, with the per-image work on Apache Beam.

Only the per-image step is distributed. The plan (rows grouped by image, file names matched,
the patient-level split: `plan.plan_conversion`), the per-image check and encoding
(`convert.convert_image`) and the final assembly (`convert.finish`: splits, COCO, manifest,
label map, report) are the local path's own code. The pipeline:

    Create(plan items) -> convert_image (VOC XML written by the worker)
        -> per split (per part with --shard-by finding; `shard_sets`):
           WriteToTFRecord(<split>.record[-<part>], num_shards=n, '-SSSSS-of-NNNNN')
        -> summaries (record without pixels, problems, sha256 of the tf.Example) -> _work/

Which example lands in which shard is Beam's choice, so after the pipeline the written shards
are scanned (TFRecord framing) and each record is matched to its image by that digest, which
gives the manifest's `tfrecord` and `offset`. Problems are replayed in the plan's order, so
report.json is the local path's. With --strict the per-image step raises at the first problem,
which fails the pipeline; that failure becomes the usual `UserError`. What the run does on
this machine beside the pipeline (its temporary folder, Ctrl-C) is `beam_local`'s; the runner
table, the pipeline options and the known failures are `beam.options`', and reading and writing
files anywhere Beam's FileSystems reach is `beam.files`'.

`apache_beam` is imported only when a pipeline runs (the import takes ~1 s); the runner table
and the option parsing need no Beam, so the CLI checks them cheaply.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, NamedTuple, Optional

from ...core.errors import UserError
from .files import files_under, index_any, read_any, staged_remote, write_any
from .options import RUNNERS, explain_failure, import_beam, is_remote, make_runner, pipeline_options

# base64, hashlib, logging, pickle and .atomic are imported where they are used, as apache_beam is.

# --- the pipeline -----------------------------------------------------------------------------

def _digest(example: bytes) -> str:
    import hashlib
    return hashlib.sha256(example).hexdigest()


class _Summary(NamedTuple):
    """What the driver gets back per image: the image, its `Converted` without bytes, and the
    sha256 of its tf.Example (None when dropped). Travels as base64 pickle lines."""

    image: str
    done: object
    digest: Optional[str]


def _convert_fn(stage: str, opts, label_map, with_masks: bool, strict: bool):
    """The DoFn body: `convert_image`, VOC XML written to the stage, the example tagged with its
    set of shards ('<split>.record[-<part>]', `ShardSet.prefix`), a summary for the driver."""
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
            shard_set, item = element
            done = convert_image(item, opts, label_map, with_masks, strict, read=read_any)
            digest = None
            if done.record is not None:
                write_any(f"{stage}/{voc_name(done.record.image_id)}", done.voc)
                digest = _digest(done.example)
                yield beam.pvalue.TaggedOutput(shard_set, done.example)
            summary = _Summary(item.image, Converted(done.record, done.issues), digest)
            yield base64.b64encode(pickle.dumps(summary, protocol=4)).decode("ascii")

    return process


def _scan_shard(path: str) -> Iterator[tuple]:
    """(byte offset, sha256 of the data) of every record in a TFRecord file.

    Framing: uint64 length, masked CRC32C of the length, data, masked CRC32C of the data
    (all little-endian; `tfrecord_framing`); both CRCs are checked."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    from ..tfrecord_framing import CRC_BYTES, HEADER_BYTES, data_intact, record_length
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        offset = 0
        while True:
            head = f.read(HEADER_BYTES)
            if not head:
                return
            length = record_length(head)
            if length is None:
                raise UserError(f"{path}: damaged TFRecord header at byte {offset}")
            data = f.read(length)
            crc = f.read(CRC_BYTES)
            if not data_intact(data, length, crc):
                raise UserError(f"{path}: damaged TFRecord data at byte {offset}")
            yield offset, _digest(data)
            offset += HEADER_BYTES + length + CRC_BYTES


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
    from ..convert import LAYOUT, Placed, finish
    from ..plan import plan_conversion
    from ..writers import voc

    CANCELLED.clear()
    beam_runner = make_runner(runner)
    beam_options = pipeline_options(runner, options)
    FileSystems.set_options(beam_options)  # s3_region_name= etc. for the files read and written here too
    from ..tiles import check_options
    check_options(opts.tile, False, runner="beam")
    plan = plan_conversion(table, images_dir, label_map, opts, problems, index_images=index_any, read=read_any)
    voc.check_names(image for images in plan.by_split.values() for image in images if image in plan.index)
    staged = staged_remote(out_dir, LAYOUT) if is_remote(out_dir) else atomic.staged_directory(out_dir, LAYOUT)
    with staged as stage:
        if not is_remote(stage):
            for sub in ("voc", "splits", "tfrecords", "coco"):
                os.makedirs(os.path.join(stage, sub))
        work = FileSystems.join(stage, "_work")
        sets = [s for split in plan.by_split for s in plan.shard_sets(split)]  # one output per set of shards
        items = [(s.prefix, plan.item(image)) for s in sets for image in s.images]
        with stoppable(), beam.Pipeline(runner=beam_runner, options=beam_options) as pipeline:
            converted = (pipeline
                         | "plan" >> beam.Create(items, reshuffle=True)
                         | "convert" >> beam.FlatMap(_convert_fn(stage, opts, label_map, plan.with_masks,
                                                                 problems.strict))
                         .with_outputs(*(s.prefix for s in sets), main="summaries"))
            for s in sets:
                _ = (converted[s.prefix] | f"write {s.prefix}" >> beam.io.WriteToTFRecord(
                    FileSystems.join(stage, "tfrecords", s.prefix), num_shards=s.count,
                    shard_name_template="-SSSSS-of-NNNNN"))
            _ = converted.summaries | "summaries" >> beam.io.WriteToText(FileSystems.join(work, "summary"))
        results = _collect(plan, stage, work, Placed)
        report = finish(plan, results, problems, lambda name, data: write_any(f"{stage}/{name}", data))
        FileSystems.delete([work] if not is_remote(work) else files_under(work))
    return report


def _collect(plan, stage: str, work: str, placed_type) -> dict:
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
        for name in ["tfrecords/" + f for s in plan.shard_sets(split) for f in s.files]:
            for offset, digest in _scan_shard(f"{stage}/{name}"):
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
