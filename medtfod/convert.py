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
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

from . import atomic
from .annotations import ImageRecord, Object
from .boxes import Box
from .errors import UserError
from .images import ImageError, index_images, read_and_probe
from .labelmap import LabelMap
from .problems import Problems
from .progress import progress
from .splits import DEFAULT_FRACTIONS, assign_patients
from .writers import tfrecord, voc


@dataclass(frozen=True)
class TableRow:
    """One box from a source table; `file`/`line` say where it came from."""

    image: str
    label: str
    box: Box
    file: str
    line: int


@dataclass
class Table:
    """What a source reader hands to `convert_table`.

    Attributes:
      source: the source's name ('nih', ...), recorded in the report.
      rows: box rows, in file order.
      patients: image name -> patient id, where the source knows it.
      negatives: images listed as having no findings (kept as images without boxes).
      inputs: the input files, for the report.
    """

    source: str
    rows: List[TableRow]
    patients: Dict[str, str] = field(default_factory=dict)
    negatives: List[str] = field(default_factory=list)
    inputs: Dict[str, str] = field(default_factory=dict)


@dataclass
class ConvertOptions:
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0
    max_bad: float = 0.05          # fail when a larger share of rows/images is bad
    clip_tolerance: float = 2.0    # pixels a box may stick out of the image and be clipped
    shard_size: int = 1000         # images per TFRecord shard (at least one shard per split)


def _default_patient(image: str) -> str:
    from .readers.nih import patient_from_name
    return patient_from_name(image) or os.path.splitext(image)[0]


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


def _build_record(image: str, rows: List[Optional[TableRow]], path: Optional[str], patient: str,
                  opts: ConvertOptions, problems: Problems, where: str):
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
        issue = row.box.problem(info.width, info.height, opts.clip_tolerance)
        if issue:
            problems.add(row.file, row.line, "bad_box", image, issue)
            return None
        objects.append(Object(row.label, row.box.clipped(info.width, info.height), f"{row.file}:{row.line}"))
    record = ImageRecord(image, os.path.abspath(path), info.width, info.height, info.channels,
                         info.format, patient, objects)
    return record, data


def convert_table(table: Table, images_dir: str, out_dir: str, label_map: LabelMap,
                  opts: Optional[ConvertOptions] = None, problems: Optional[Problems] = None,
                  quiet: bool = False) -> dict:
    """Validate `table` against the images and write the converted dataset to `out_dir`.

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
    reader_problems = len(problems)
    grouped = _group_rows(table, label_map, problems)
    for image in table.negatives:
        grouped.setdefault(image, [])
    index, _dupes = index_images(images_dir)
    patients = {image: table.patients.get(image) or _default_patient(image) for image in grouped}
    split_of_patient = assign_patients(patients.values(), opts.fractions, opts.seed)
    by_split: Dict[str, List[str]] = {name: [] for name in opts.fractions}
    negatives_missing = 0
    for image in sorted(grouped):
        if not grouped[image] and image not in index:
            negatives_missing += 1  # listed without findings but not downloaded: not an error
            continue
        by_split[split_of_patient[patients[image]]].append(image)

    report_splits = {}
    with atomic.staged_directory(out_dir) as tmp:
        for sub in ("voc", "splits", "tfrecords"):
            os.makedirs(os.path.join(tmp, sub))
        total = sum(len(v) for v in by_split.values())
        bar = progress(total=total, desc="convert", unit="img", quiet=quiet)
        for split, images in by_split.items():
            kept: List[ImageRecord] = []
            shards = tfrecord.shard_paths(os.path.join(tmp, "tfrecords"), split,
                                          max(1, -(-len(images) // opts.shard_size)))
            files = [open(p, "wb") for p in shards]
            try:
                for image in images:
                    built = _build_record(image, grouped[image], index.get(image), patients[image],
                                          opts, problems, table.inputs.get("images", images_dir))
                    bar.update(1)
                    if built is None:
                        continue
                    record, data = built
                    tfrecord.write_record(files[len(kept) % len(files)],
                                          tfrecord.example_bytes(record, data, label_map))
                    stem = os.path.splitext(record.image_id)[0]
                    with open(os.path.join(tmp, "voc", stem + ".xml"), "wb") as f:
                        f.write(voc.voc_xml(record))
                    kept.append(record)
            finally:
                for f in files:
                    f.close()
            with open(os.path.join(tmp, "splits", f"{split}.txt"), "w", encoding="utf-8", newline="\n") as f:
                f.writelines(r.image_id + "\n" for r in kept)
            report_splits[split] = {
                "images": len(kept),
                "negatives": sum(1 for r in kept if not r.objects),
                "patients": len({r.patient_id for r in kept}),
                "boxes": dict(sorted(Counter(o.label for r in kept for o in r.objects).items())),
                "tfrecords": tfrecord.shard_pattern(split, len(shards)),
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
    return "\n".join(lines)


def convert_nih(bbox_csv: str, images_dir: str, out_dir: str, data_entry: Optional[str] = None,
                label_map: Optional[LabelMap] = None, opts: Optional[ConvertOptions] = None,
                strict: bool = False, quiet: bool = False) -> dict:
    """`medtfod convert nih`: NIH BBox_List_2017.csv (+ optional Data_Entry) -> dataset."""
    from .labelmap import read_label_map, shipped_path
    from .readers import nih

    problems = Problems(strict=strict)
    rows = nih.read_bbox_list(bbox_csv, problems)
    table = Table("nih", [TableRow(r.image, r.label, r.box, bbox_csv, r.line) for r in rows],
                  inputs={"bbox_csv": bbox_csv, "images": images_dir})
    if data_entry:
        entry = nih.read_data_entry(data_entry, problems)
        table.patients = entry.patients
        with_boxes = {r.image for r in rows}
        table.negatives = [image for image in entry.patients if image not in with_boxes]
        table.inputs["data_entry"] = data_entry
    label_map = label_map or read_label_map(shipped_path("nih_chestxray14"))
    return convert_table(table, images_dir, out_dir, label_map, opts, problems, quiet=quiet)
