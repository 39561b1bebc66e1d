"""Conversion: a box table plus an image folder -> VOC XML, label map, splits, TFRecords, report.

Every source reader turns its file into a `Table` (rows of image, label, pixel `Box`);
`convert_table` does the rest the same way for all sources:

    out/label_map.pbtxt
    out/voc/<image stem>.xml
    out/splits/<split>.txt                       image names, one per line
    out/tfrecords/<split>.record-NNNNN-of-MMMMM  OD API tf.Examples, images passed through
                                                 (--shard-by finding: <split>.record-positive-... and
                                                 <split>.record-negative-...; see medtfod.data.shard_sets)
    out/report.json                              counts per split and class, every problem
    out/dataset.json                             the manifest: each image's split, patient, size and
                                                 where its bytes are (see medtfod.data.manifest)
    out/tfrecords/<split>-tiles.record-...       with --tile: the training splits cut into tiles,
    out/tiles.json                               and every tile's origin and boxes (`medtfod.data.tiles`)

The plan (which images, their patients, splits and shards) is `medtfod.data.plan`'s; here are the
per-image step (`convert_image`), the local process pool that runs it, and `finish`, which
writes the lists, COCO, manifest, label map and report. The output folder is assembled aside
and moved into place only when complete.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Dict, List, Mapping, NamedTuple, Optional

from ..core import atomic
from ..core.annotations import ImageRecord, Object, Table
from ..core.fence import check_outputs
from ..core.frames import split_frame
from ..core.images import ImageError, read_and_probe
from ..core.labelmap import LabelMap
from .duplicates import groups_report
from .manifest import MANIFEST, ImageEntry, manifest_json
from .plan import ConvertOptions, ImageItem, Plan, plan_conversion  # noqa: F401 - ConvertOptions: the API
from .shard_sets import report_fields
from ..core.problems import Problems
from ..core.progress import progress
from .tfrecord_framing import write_record
from .convert_summary import summary  # noqa: F401 - convert's summary, imported from here by the CLI
from .splits import check_splits
from .tiles import TileCounts, check_options, check_tiled_split, report_entry, tile_entry, tile_pattern, tile_shards, tiles_json, tiled_split
from .writers import tfrecord, voc
from .writers.voc import voc_name


                                   # cutting by `fractions`; `fractions` then holds the folds and held-out splits


class _Issues(list):
    """Problems found while converting one image (maybe in a worker process or a Beam worker),
    replayed into the main `Problems` in plan order. With `strict`, the first one stops the run
    there and then."""

    def __init__(self, strict: bool = False):
        super().__init__()
        self.strict = strict

    def add(self, file, line, kind, value, message, image=None) -> None:
        if self.strict:
            Problems(strict=True).add(file, line, kind, value, message, image)  # raises the UserError
        self.append((file, line, kind, value, message, image))


def _source_path(path: str) -> str:
    """Where an image was read, for the manifest: absolute for a local file, a URL as given."""
    return path if "://" in path else os.path.abspath(path)


def _build_record(item: ImageItem, opts: ConvertOptions, problems, read=read_and_probe):
    """Read and check one image; returns (record, bytes) or None when the image is dropped.

    An image is dropped whole when any of its rows is bad: keeping it with a box missing
    would teach the model that a finding is background. `read(path)` returns the file's
    bytes and header under `opts.window` (`images.read_and_probe`; Beam passes one that reads any
    FileSystems path); a path `scan.dcm#k` is frame k of a multi-frame DICOM (`core.frames`).
    """
    image, rows, path, patient, where = item[:5]
    if path is None:
        for row in rows:
            problems.add(row.file, row.line, "missing_image", image,
                         f"no file named {image!r} under the image folder", image=image)
        if not rows:
            problems.add(where, None, "missing_image", image, f"no file named {image!r} under the image folder",
                         image=image)
        return None
    try:
        data, info = read(path, window=opts.window)
    except (OSError, ImageError) as e:
        if split_frame(path)[1] is not None and rows:  # a frame the table names: point at its row
            problems.add(rows[0].file, rows[0].line, "bad_image", image, f"{path}: unreadable frame: {e}", image=image)
        else:
            problems.add(path, None, "bad_image", image, f"unreadable image: {e}", image=image)
        return None
    objects = []
    for row in rows:
        box = row.box.clipped(info.width, info.height) if row.clip else row.box
        issue = box.problem(info.width, info.height, opts.clip_tolerance)
        if issue:
            problems.add(row.file, row.line, "bad_box", image, f"{image}: {issue}", image=image)
            return None
        if row.mask is not None and row.mask.rle is not None and tuple(row.mask.rle[0]) != (info.height, info.width):
            h, w = row.mask.rle[0]
            problems.add(row.file, row.line, "bad_mask", image,
                         f"the mask is {w}x{h} pixels but the image is {info.width}x{info.height}; "
                         "masks must be in the image's own pixel frame (was the image resized?)", image=image)
            return None
        objects.append(Object(row.label, box.clipped(info.width, info.height), row.where, row.mask))
    record = ImageRecord(image, _source_path(path), info.width, info.height, info.channels,
                         info.format, patient, objects, image_meta(item, info))
    return record, data


def image_meta(item: ImageItem, info) -> Dict[str, str]:
    """The image's fields: the table's (`Table.meta`), its spacing scaled to the file's size
    (`Table.spacing`), then what the file's own header adds (DICOM: `ImageInfo.meta`) for
    fields the table leaves out; the table's value wins where both have one."""
    meta = dict(item.meta)
    if item.spacing is not None and "pixel_spacing" not in meta:
        meta["pixel_spacing"] = item.spacing.at(info.width, info.height)
    for key, value in info.meta.items():
        meta.setdefault(key, value)
    return dict(sorted(meta.items()))


@dataclass
class Converted:
    """What the per-image step made of one image.

    Attributes:
      record: the checked image (no pixels), None when it was dropped.
      issues: its problems, as `Problems.add` arguments, in the order they were found.
      example: its OD API tf.Example (serialized; holds the image bytes), None when dropped.
      voc: its VOC XML, None when dropped.
      tiles: with --tile on a training split, its tiles' tf.Examples (serialized), else None.
      tile_counts, tile_entries: what tiling gave (`tiles.TileCounts`, `tiles.tile_entry` dicts).
    """

    record: Optional[ImageRecord]
    issues: list
    example: Optional[bytes] = None
    voc: Optional[bytes] = None
    tiles: Optional[List[bytes]] = None
    tile_counts: Optional[TileCounts] = None
    tile_entries: Optional[list] = None


def convert_image(item: ImageItem, opts: ConvertOptions, label_map: LabelMap, with_masks: bool,
                  strict: bool, read=read_and_probe, tile: bool = False) -> Converted:
    """The per-image step both executors run (the local pool and Beam): read and check the
    image, then encode its tf.Example and VOC XML (and with `tile` and `opts.tile`, its training
    tiles). With `strict`, its first problem raises."""
    issues = _Issues(strict)
    built = _build_record(item, opts, issues, read)
    if built is None:
        return Converted(None, list(issues))
    record, data = built
    done = Converted(record, list(issues), tfrecord.example_bytes(record, data, label_map, with_masks),
                     voc.voc_xml(record))
    if tile and opts.tile is not None:
        from .tiles import cut
        tiles, done.tile_counts = cut(record, data, opts.tile, opts.seed)
        done.tiles = [tfrecord.example_bytes(t.record, png, label_map) for t, png in tiles]
        done.tile_entries = [tile_entry(t) for t, _ in tiles]
    return done


# What convert writes (relative to --out), for an earlier output whose marker predates the list
# of the files it wrote: a rerun refuses to delete any other file there (atomic.foreign_files).
LAYOUT = (MANIFEST, "label_map.pbtxt", "report.json", "voc/*.xml", "splits/*.txt", "coco/*.json", "tfrecords/*",
          "tiles.json")


def _prefetch(path: Optional[str]) -> None:
    """Ask the OS to start reading the next image while this one is processed (Linux)."""
    if path is None or not hasattr(os, "posix_fadvise") or split_frame(path)[0].lower().endswith(".dcm"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # reported when the image itself is read
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


class Placed(NamedTuple):
    """Where a kept image's tf.Example ended up: its shard (relative to the output folder,
    forward slashes) and the byte offset the record starts at."""

    tfrecord: str
    offset: int


def _write_shard(job):
    """Worker: `convert_image` for each image of one TFRecord shard; writes the shard and the
    images' VOC files.

    With a tile shard path (a training split under --tile), the images' tiles go to that shard.
    Returns [(Converted without its bytes, Placed or None)] in the shard's image order;
    records carry no pixels, so little crosses between processes.
    """
    shard_path, out_dir, items, opts, label_map, with_masks, strict, tile_path = job
    results = []
    with open(shard_path, "wb") as shard, \
            (open(tile_path, "wb") if tile_path else contextlib.nullcontext()) as tile_shard:
        for i, item in enumerate(items):
            if i + 1 < len(items):
                _prefetch(items[i + 1].path)
            done = convert_image(item, opts, label_map, with_masks, strict, tile=tile_path is not None)
            placed = None
            if done.record is not None:
                placed = Placed("tfrecords/" + os.path.basename(shard_path), shard.tell())
                write_record(shard, done.example)
                with open(os.path.join(out_dir, *voc_name(done.record.image_id).split("/")), "wb") as f:
                    f.write(done.voc)
                for example in done.tiles or ():
                    write_record(tile_shard, example)
            results.append((Converted(done.record, done.issues, tile_counts=done.tile_counts,
                                      tile_entries=done.tile_entries), placed))
    return results


def _run_shards(jobs: list, workers: int, bar):
    """`_write_shard` over `jobs`, in a process pool when it pays off; results in job order."""
    if workers <= 1 or len(jobs) < 2 or sum(len(j[2]) for j in jobs) < 32:
        out = []
        for job in jobs:
            out.append(_write_shard(job))
            bar.update(len(job[2]))
        return out
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)))
    futures = [pool.submit(_write_shard, job) for job in jobs]
    try:
        for future in as_completed(futures):
            future.result()  # a shard's error (--strict's first problem, Ctrl-C) stops the run now
            bar.update(len(jobs[futures.index(future)][2]))
        pool.shutdown()
        return [f.result() for f in futures]
    except BaseException:
        # Stop the shards still running instead of waiting for them to finish: the pool has no
        # public way to, so its worker processes are terminated (their output is discarded).
        processes = list((pool._processes or {}).values())  # noqa: SLF001
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        raise


def convert_table(table: Table, images_dir: str, out_dir: str, label_map: LabelMap,
                  opts: Optional[ConvertOptions] = None, problems: Optional[Problems] = None,
                  quiet: bool = False) -> dict:
    """Validate `table` against the images and write the converted dataset to `out_dir`.

    Each TFRecord shard (with its images' VOC files) is read, checked, encoded and written
    by one of `opts.workers` processes; image i of a split always goes to shard i mod n and
    lists are sorted, so reruns give byte-identical files. (`medtfod.data.beam.convert` runs the
    same plan and per-image step on Apache Beam.)

    Args:
      problems: the reader's problem log (bad rows it already skipped); its strict flag
        decides whether the first problem stops the run.

    Returns:
      The report (also written to `out_dir/report.json`).

    Raises:
      UserError: with --strict on the first problem; otherwise when more than
        `opts.max_bad` of the rows/images are bad. Nothing is written then.
    """
    opts = opts or ConvertOptions()
    problems = problems if problems is not None else Problems()
    check_outputs({"--out": out_dir}, input_paths(table, images_dir))
    plan = plan_conversion(table, images_dir, label_map, opts, problems)
    check_options(opts.tile, plan.with_masks)
    voc.check_names(image for images in plan.by_split.values() for image in images if image in plan.index)
    with atomic.staged_directory(out_dir, owned=LAYOUT) as tmp:
        for sub in ("voc", "splits", "tfrecords", "coco"):
            os.makedirs(os.path.join(tmp, sub))
        bar = progress(total=plan.images, desc="convert", unit="img", quiet=quiet)
        jobs = []
        for split in plan.by_split:
            paths = [os.path.join(tmp, "tfrecords", name) for s in plan.shard_sets(split) for name in s.files]
            tiles = (tile_shards(split, len(paths)) if opts.tile is not None and tiled_split(split)
                     else [None] * len(paths))
            for path, items, tile_path in zip(paths, plan.shards(split), tiles):
                jobs.append((path, tmp, items, opts, label_map, plan.with_masks, problems.strict,
                             tile_path and os.path.join(tmp, "tfrecords", tile_path)))
        results = {}
        for job, shard_results in zip(jobs, _run_shards(jobs, opts.workers, bar)):
            for item, result in zip(job[2], shard_results):
                results[item.image] = result
        bar.close()
        return finish(plan, results, problems, _local_writer(tmp))


def input_paths(table: Table, images_dir: str) -> Dict[str, str]:
    """The conversion's inputs by option name, for `fence.check_outputs`."""
    return dict({f"--{k.replace('_', '-')}": v for k, v in table.inputs.items()}, **{"--images": images_dir})


def _local_writer(folder: str):
    def write(name: str, data: bytes) -> None:
        with open(os.path.join(folder, *name.split("/")), "wb") as f:
            f.write(data)
    return write


def finish(plan: Plan, results: Mapping[str, tuple], problems: Problems, write) -> dict:
    """Replay each image's problems in plan order, check --max-bad and the splits, and write
    splits/*.txt, coco/*.json, dataset.json, label_map.pbtxt and report.json.

    Args:
      results: image name -> (`Converted` (its bytes may be dropped), `Placed` or None), for
        every image of the plan.
      write: `write(name, bytes)` puts a file at `name` (forward slashes) in the staged output.

    Returns:
      The report.
    """
    from .writers.coco import coco_json

    report_splits = {}
    entries: List[ImageEntry] = []
    tiles = {}
    for split in plan.by_split:
        kept: List[ImageRecord] = []
        tile_counts, tile_entries = [], []
        for shard in plan.shards(split):
            for item in shard:
                done, placed = results[item.image]
                for issue in done.issues:
                    problems.add(*issue)
                if done.record is None:
                    continue
                record = done.record
                kept.append(record)
                if done.tile_counts is not None:
                    tile_counts.append(done.tile_counts)
                    tile_entries.extend(done.tile_entries)
                source_path, frame = split_frame(record.path)
                entries.append(ImageEntry(record.image_id, split, record.patient_id, record.width, record.height,
                                          len(record.objects), placed.tfrecord, placed.offset, source_path,
                                          record.meta, frame))
        kept.sort(key=lambda r: r.image_id)
        write(f"splits/{split}.txt", "".join(r.image_id + "\n" for r in kept).encode("utf-8"))
        write(f"coco/{split}.json", coco_json(kept, plan.label_map))
        report_splits[split] = {
            "images": len(kept),
            "negatives": sum(1 for r in kept if not r.objects),
            "patients": len({r.patient_id for r in kept}),
            "boxes": dict(sorted(Counter(o.label for r in kept for o in r.objects).items())),
            "masks": sum(1 for r in kept for o in r.objects if o.mask is not None),
            **report_fields(plan.shard_sets(split)),
        }
        if plan.opts.tile is not None and tiled_split(split):
            count = sum(s.count for s in plan.shard_sets(split))
            report_splits[split]["tiles"] = entry = report_entry(tile_counts, plan.opts.tile, tile_pattern(split, count))
            check_tiled_split(split, entry, sum(len(r.objects) for r in kept))
            tiles[split] = sorted(tile_entries, key=lambda t: t["name"])
    table = plan.table
    items = len(table.rows) + len(table.negatives) + plan.reader_problems
    problems.check_share(len(problems), items, plan.opts.max_bad, "rows and images")
    joined = sum(1 for g in plan.duplicates if len({plan.patients[i] for i in g.images}) > 1)
    check_splits(report_splits, plan.opts, len(set(plan.patients.values())), problems,
                  f"; {joined} groups of identical or near-identical images joined their patients "
                  "(report.json 'duplicates'; --allow-duplicates-across-splits splits by patient alone)"
                  if joined else "")
    entries.sort(key=lambda e: e.name)
    if plan.opts.tile is not None:
        write("tiles.json", tiles_json(plan.opts.tile, tiles))
    write(MANIFEST, manifest_json(entries, table.source, plan.opts.window).encode("utf-8"))
    write("label_map.pbtxt", plan.label_map.to_pbtxt().encode("utf-8"))
    report = {
        "source": table.source,
        "inputs": table.inputs,
        "images": sum(s["images"] for s in report_splits.values()),
        "boxes": sum(sum(s["boxes"].values()) for s in report_splits.values()),
        "classes": plan.label_map.names,
        "window": plan.opts.window.text,
        "clahe": plan.opts.window.clahe,
        "splits": report_splits,
        "negatives_listed_but_not_found": plan.negatives_missing,
        "problems": problems.to_dict(),
    }
    report["fields"] = dict(sorted(Counter(k for e in entries for k in e.meta).items()))
    report["duplicates"] = groups_report(plan.duplicates, plan.patients,
                                         {i: s for s, images in plan.by_split.items() for i in images},
                                         plan.opts.duplicate_distance, plan.opts.allow_duplicates_across_splits)
    write("report.json", (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return report
