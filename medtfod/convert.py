"""Conversion: a box table plus an image folder -> VOC XML, label map, splits, TFRecords, report.

Every source reader turns its file into a `Table` (rows of image, label, pixel `Box`);
`convert_table` does the rest the same way for all sources:

    out/label_map.pbtxt
    out/voc/<image stem>.xml
    out/splits/<split>.txt                       image names, one per line
    out/tfrecords/<split>.record-NNNNN-of-MMMMM  OD API tf.Examples, images passed through
    out/report.json                              counts per split and class, every problem

The output folder is assembled aside and moved into place only when complete.
"""
from __future__ import annotations

import json
import os
from collections import Counter, OrderedDict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Set

from . import atomic
from .annotations import ImageRecord, Object
from .boxes import Box
from .images import ImageError, index_images, read_and_probe
from .labelmap import LabelMap
from .masks import Mask
from .problems import Problems
from .progress import progress
from .splits import DEFAULT_FRACTIONS, assign_patients
from .writers import tfrecord, voc


@dataclass(frozen=True)
class TableRow:
    """One object from a source; `file`/`line` say where it came from.

    Attributes:
      box: pixel `Box` in the image's frame (for a mask, the box around it).
      mask: the object's instance mask, where the source has one.
      clip: the source's coordinates may lie outside the image by more than the clip
        tolerance and are clipped to it (DDTI polygons), rather than rejected.
    """

    image: str
    label: str
    box: Box
    file: str
    line: Optional[int]
    mask: Optional[Mask] = None
    clip: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass
class Table:
    """What a source reader hands to `convert_table`.

    Attributes:
      source: the source's name ('nih', ...), recorded in the report.
      rows: box rows, in file order.
      patients: image name -> patient id, where the source knows it.
      negatives: images listed as having no findings (kept as images without boxes).
      inputs: the input files, for the report.
      dropped: images the reader saw a bad row for (already reported); they are left out
        whole, since keeping them with a finding missing would teach it as background.
    """

    source: str
    rows: List[TableRow]
    patients: Dict[str, str] = field(default_factory=dict)
    negatives: List[str] = field(default_factory=list)
    inputs: Dict[str, str] = field(default_factory=dict)
    dropped: Set[str] = field(default_factory=set)


@dataclass
class ConvertOptions:
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0
    max_bad: float = 0.05          # fail when a larger share of rows/images is bad
    clip_tolerance: float = 2.0    # pixels a box may stick out of the image and be clipped
    shard_size: int = 256          # images per TFRecord shard (at least one per split); shards
                                   # are the unit of parallel work here and in training input
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # processes reading images


def _default_patient(image: str, source: str) -> str:
    """Without a patient id from the source: NIH names carry one (`<patient>_<n>.png`);
    for other sources each image is its own patient."""
    if source == "nih":
        from .readers.nih import patient_from_name
        return patient_from_name(image) or os.path.splitext(image)[0]
    return os.path.splitext(image)[0]


def _group_rows(table: Table, label_map: LabelMap, problems: Problems) -> "OrderedDict[str, List[TableRow]]":
    grouped: "OrderedDict[str, List[TableRow]]" = OrderedDict()
    seen = set()
    for row in table.rows:
        if row.label not in label_map.ids:
            problems.add(row.file, row.line, "unknown_label", row.label, label_map.unknown_message(row.label))
            grouped.setdefault(row.image, []).append(None)  # poisons the image: see _build_record
            continue
        key = (row.image, row.label, row.box)
        if key in seen:
            problems.add(row.file, row.line, "duplicate_row", row.image, "the same box is listed twice; kept once")
            continue
        seen.add(key)
        grouped.setdefault(row.image, []).append(row)
    return grouped


class _Issues(list):
    """Problems found in a worker process, replayed into the main `Problems` in image order."""

    def add(self, file, line, kind, value, message) -> None:
        self.append((file, line, kind, value, message))


def _build_record(image: str, rows: List[Optional[TableRow]], path: Optional[str], patient: str,
                  opts: ConvertOptions, problems, where: str):
    """Read and check one image; returns (record, bytes) or None when the image is dropped.

    An image is dropped whole when any of its rows is bad: keeping it with a box missing
    would teach the model that a finding is background.
    """
    if path is None:
        for row in rows:
            if row is not None:
                problems.add(row.file, row.line, "missing_image", image,
                             f"no file named {image!r} under the image folder")
        if not rows:
            problems.add(where, None, "missing_image", image, f"no file named {image!r} under the image folder")
        return None
    try:
        data, info = read_and_probe(path)
    except (OSError, ImageError) as e:
        problems.add(path, None, "bad_image", image, f"unreadable image: {e}")
        return None
    if any(row is None for row in rows):
        return None
    objects = []
    for row in rows:
        box = row.box.clipped(info.width, info.height) if row.clip else row.box
        issue = box.problem(info.width, info.height, opts.clip_tolerance)
        if issue:
            problems.add(row.file, row.line, "bad_box", image, issue)
            return None
        if row.mask is not None and row.mask.rle is not None and tuple(row.mask.rle[0]) != (info.height, info.width):
            h, w = row.mask.rle[0]
            problems.add(row.file, row.line, "bad_mask", image,
                         f"the mask is {w}x{h} pixels but the image is {info.width}x{info.height}; "
                         "masks must be in the image's own pixel frame (was the image resized?)")
            return None
        objects.append(Object(row.label, box.clipped(info.width, info.height), row.where, row.mask))
    record = ImageRecord(image, os.path.abspath(path), info.width, info.height, info.channels,
                         info.format, patient, objects)
    return record, data


def _prefetch(path: Optional[str]) -> None:
    """Ask the OS to start reading the next image while this one is processed (Linux)."""
    if path is None or not hasattr(os, "posix_fadvise") or path.lower().endswith(".dcm"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # reported when the image itself is read
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def _write_shard(job):
    """Worker: check, encode and write one TFRecord shard and its images' VOC files.

    Returns [(record or None, issues)] in the shard's image order; records carry no pixels,
    so little crosses between processes.
    """
    shard_path, voc_dir, items, opts, label_map, with_masks = job
    results = []
    with open(shard_path, "wb") as shard:
        for i, (image, rows, path, patient, where) in enumerate(items):
            if i + 1 < len(items):
                _prefetch(items[i + 1][2])
            issues = _Issues()
            built = _build_record(image, rows, path, patient, opts, issues, where)
            if built is not None:
                record, data = built
                tfrecord.write_record(shard, tfrecord.example_bytes(record, data, label_map, with_masks))
                with open(os.path.join(voc_dir, os.path.splitext(record.image_id)[0] + ".xml"), "wb") as f:
                    f.write(voc.voc_xml(record))
                results.append((record, issues))
            else:
                results.append((None, issues))
    return results


def _run_shards(jobs: list, workers: int, bar):
    """`_write_shard` over `jobs`, in a process pool when it pays off; results in job order."""
    if workers <= 1 or len(jobs) < 2 or sum(len(j[2]) for j in jobs) < 32:
        out = []
        for job in jobs:
            out.append(_write_shard(job))
            bar.update(len(job[2]))
        return out
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures = [pool.submit(_write_shard, job) for job in jobs]
        try:
            for future in as_completed(futures):
                bar.update(len(jobs[futures.index(future)][2]))
            return [f.result() for f in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _match_stems(grouped, index, patients: Dict[str, str]):
    """Table names without an extension ('case_12') -> the image file with that stem
    ('case_12.png'), when exactly one file has it. Returns (grouped, patients) re-keyed."""
    by_stem: Dict[str, Optional[str]] = {}
    for name in index:
        stem = os.path.splitext(name)[0]
        by_stem[stem] = None if stem in by_stem else name  # None: ambiguous stem
    renamed: "OrderedDict[str, list]" = OrderedDict()
    for image, rows in grouped.items():
        target = image if image in index or os.path.splitext(image)[1] else by_stem.get(image) or image
        renamed.setdefault(target, []).extend(rows)
        if target != image and image in patients:
            patients = dict(patients, **{target: patients[image]})
    return renamed, patients


def _split_images(table: Table, grouped, index, opts: ConvertOptions):
    """Patient ids, then the stratified patient-level split; returns (patients, by_split, missing)."""
    patients = {image: table.patients.get(image) or _default_patient(image, table.source) for image in grouped}
    classes: Dict[str, set] = {}
    for image, rows in grouped.items():
        classes.setdefault(patients[image], set()).update(r.label for r in rows if r is not None)
    split_of_patient = assign_patients(patients.values(), opts.fractions, opts.seed, classes)
    by_split: Dict[str, List[str]] = {name: [] for name in opts.fractions}
    negatives_missing = 0
    for image in sorted(grouped):
        if not grouped[image] and image not in index:
            negatives_missing += 1  # listed without findings but not downloaded: not an error
            continue
        by_split[split_of_patient[patients[image]]].append(image)
    return patients, by_split, negatives_missing


def convert_table(table: Table, images_dir: str, out_dir: str, label_map: LabelMap,
                  opts: Optional[ConvertOptions] = None, problems: Optional[Problems] = None,
                  quiet: bool = False) -> dict:
    """Validate `table` against the images and write the converted dataset to `out_dir`.

    Each TFRecord shard (with its images' VOC files) is read, checked, encoded and written
    by one of `opts.workers` processes; image i of a split always goes to shard i mod n and
    lists are sorted, so reruns give byte-identical files.

    Args:
      problems: the reader's problem log (bad rows it already skipped); its strict flag
        decides whether the first problem stops the run.

    Returns:
      The report (also written to `out_dir/report.json`).

    Raises:
      UserError: with --strict on the first problem; otherwise when more than
        `opts.max_bad` of the rows/images are bad. Nothing is written then.
    """
    from .writers.coco import coco_json

    opts = opts or ConvertOptions()
    problems = problems if problems is not None else Problems()
    reader_problems = len(problems)
    grouped = _group_rows(table, label_map, problems)
    for image in table.negatives:
        grouped.setdefault(image, [])
    for image in table.dropped:
        grouped.pop(image, None)
    index, _dupes = index_images(images_dir)
    grouped, table.patients = _match_stems(grouped, index, table.patients)
    patients, by_split, negatives_missing = _split_images(table, grouped, index, opts)
    where = table.inputs.get("images", images_dir)

    report_splits = {}
    with atomic.staged_directory(out_dir) as tmp:
        for sub in ("voc", "splits", "tfrecords", "coco"):
            os.makedirs(os.path.join(tmp, sub))
        bar = progress(total=sum(len(v) for v in by_split.values()), desc="convert", unit="img", quiet=quiet)
        jobs, shards_of = [], {}
        with_masks = any(row.mask is not None for row in table.rows)
        for split, images in by_split.items():
            shards = tfrecord.shard_paths(os.path.join(tmp, "tfrecords"), split,
                                          max(1, -(-len(images) // opts.shard_size)))
            shards_of[split] = (len(jobs), len(shards))
            for j, shard in enumerate(shards):  # image i goes to shard i mod n: fixed, whatever is dropped
                items = [(image, grouped[image], index.get(image), patients[image], where)
                         for image in images[j::len(shards)]]
                jobs.append((shard, os.path.join(tmp, "voc"), items, opts, label_map, with_masks))
        results = _run_shards(jobs, opts.workers, bar)
        for split in by_split:
            first, count = shards_of[split]
            kept: List[ImageRecord] = []
            for shard_results in results[first:first + count]:
                for record, issues in shard_results:
                    for issue in issues:
                        problems.add(*issue)
                    if record is not None:
                        kept.append(record)
            kept.sort(key=lambda r: r.image_id)
            with open(os.path.join(tmp, "splits", f"{split}.txt"), "w", encoding="utf-8", newline="\n") as f:
                f.writelines(r.image_id + "\n" for r in kept)
            with open(os.path.join(tmp, "coco", f"{split}.json"), "wb") as f:
                f.write(coco_json(kept, label_map))
            report_splits[split] = {
                "images": len(kept),
                "negatives": sum(1 for r in kept if not r.objects),
                "patients": len({r.patient_id for r in kept}),
                "boxes": dict(sorted(Counter(o.label for r in kept for o in r.objects).items())),
                "masks": sum(1 for r in kept for o in r.objects if o.mask is not None),
                "tfrecords": tfrecord.shard_pattern(split, count),
            }
        bar.close()
        items = len(table.rows) + len(table.negatives) + reader_problems
        problems.check_share(len(problems), items, opts.max_bad, "rows and images")
        with open(os.path.join(tmp, "label_map.pbtxt"), "w", encoding="utf-8", newline="\n") as f:
            f.write(label_map.to_pbtxt())
        report = {
            "source": table.source,
            "inputs": table.inputs,
            "images": sum(s["images"] for s in report_splits.values()),
            "boxes": sum(sum(s["boxes"].values()) for s in report_splits.values()),
            "classes": label_map.names,
            "splits": report_splits,
            "negatives_listed_but_not_found": negatives_missing,
            "problems": problems.to_dict(),
        }
        with open(os.path.join(tmp, "report.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return report


def summary(report: dict, out_dir: str) -> str:
    """A short human-readable summary of a conversion report."""
    lines = [f"converted {report['images']} images, {report['boxes']} boxes ({report['source']}) -> {out_dir}"]
    for split, s in report["splits"].items():
        boxes = ", ".join(f"{k} {v}" for k, v in s["boxes"].items()) or "no boxes"
        lines.append(f"  {split:<6} {s['images']:>6} images ({s['negatives']} without findings, "
                     f"{s['patients']} patients): {boxes}")
    p = report["problems"]
    if p["count"]:
        kinds = ", ".join(f"{k} {v}" for k, v in p["by_kind"].items())
        lines.append(f"  skipped: {p['count']} problems ({kinds}); details in report.json")
        lines.extend(f"    {item['file']}:{item['line'] or '-'}: {item['message']}" for item in p["items"][:5])
    skips = p.get("expected_skips", {})
    if skips.get("count"):
        kinds = ", ".join(f"{k} {v}" for k, v in skips["by_kind"].items())
        lines.append(f"  not objects (expected, not errors): {kinds}")
    return "\n".join(lines)
