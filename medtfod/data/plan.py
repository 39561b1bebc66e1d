"""Conversion's plan: everything decided before an image is read.

The rows grouped by image (an image with a bad row dropped whole), the table's names matched
to image files, each image's patient, the patient-level split (or folds), and each image's
shard. `convert.convert_table` (a local process pool) and `beam_convert` (Apache Beam) both
run this plan with the same per-image step, so they make the same dataset.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, NamedTuple, Optional

from ..core.annotations import FrameSpacing, Table, TableRow
from ..core.errors import UserError
from ..core.images import index_images, read_and_probe
from ..core.labelmap import LabelMap
from ..core.problems import Problems
from ..core.windowing import Window, parse_window
from .shard_sets import SHARD_BY, ShardSet, shard_sets
from .frame_names import index_frames, negative_frames
from .duplicates import DEFAULT_DISTANCE, DuplicateGroup, find_groups, hash_files, patient_units
from .splits import DEFAULT_FRACTIONS, assign_folds, assign_patients, fold_fractions, fold_names
from .tiles import TileOptions


@dataclass
class ConvertOptions:
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0
    max_bad: float = 0.05          # fail when a larger share of rows/images is bad
    clip_tolerance: float = 2.0    # pixels a box may stick out of the image and be clipped
    shard_size: int = 256          # images per TFRecord shard (at least one per split); shards
                                   # are the unit of parallel work here and in training input
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # processes reading images
    folds: int = 0                 # K > 1: patient folds fold1..foldK (`splits.assign_folds`) instead of train/val
    shard_by: str = "split"        # 'finding': images with and without findings in separate shards (`shard_sets`)
    duplicate_distance: int = DEFAULT_DISTANCE  # pHash bits within which images are near-identical (`duplicates`)
    allow_duplicates_across_splits: bool = False  # True: no grouping of copies; the split by patient alone
    window: Optional[Window] = None  # grey window for DICOM and 16-bit images (`core.windowing`; a spec
                                     # string is parsed); None: 'header', convert's behaviour before windows
    clahe: bool = False            # CLAHE after the window (folded into `window.clahe`)
    tile: Optional[TileOptions] = None  # --tile: cut the training splits into tiles (`medtfod.data.tiles`)

    def __post_init__(self):
        """The checks `--split` and `--folds` get on the command line, for options made in code:
        with `folds` and the default fractions, the folds share everything (`splits.fold_fractions`)."""
        if self.window is None or isinstance(self.window, str):
            self.window = parse_window(self.window, self.clahe)
        elif self.clahe and not self.window.clahe:
            self.window = dataclasses.replace(self.window, clahe=True)
        self.clahe = self.window.clahe
        if self.tile is not None and not isinstance(self.tile, TileOptions):
            raise UserError(f"tile={self.tile!r}: expected medtfod.data.tiles.TileOptions(size, overlap, keep_empty)")
        if self.folds and dict(self.fractions) == DEFAULT_FRACTIONS:
            self.fractions = fold_fractions(self.folds)
        if self.shard_by not in SHARD_BY:
            raise UserError(f"shard_by {self.shard_by!r}: expected one of {', '.join(SHARD_BY)}")
        bad = {k: v for k, v in self.fractions.items() if not 0 < v <= 1}
        if bad:
            raise UserError(f"fractions {dict(self.fractions)}: each must be in (0, 1]")
        if abs(sum(self.fractions.values()) - 1) > 1e-6:
            raise UserError(f"fractions {dict(self.fractions)} add up to {sum(self.fractions.values()):g}, expected 1")
        if self.folds and not set(fold_names(self.folds)) <= set(self.fractions):
            raise UserError(f"folds={self.folds} needs the fractions of {', '.join(fold_names(self.folds))} "
                            "(leave fractions at the default, or use splits.fold_fractions)")


def _default_patient(image: str, source: str) -> str:
    """Without a patient id from the source: NIH names carry one (`<patient>_<n>.png`);
    for other sources each image is its own patient."""
    if source == "nih":
        from .readers.nih import patient_from_name
        return patient_from_name(image) or os.path.splitext(image)[0]
    return os.path.splitext(image)[0]


def _group_rows(table: Table, label_map: LabelMap, problems: Problems) -> "OrderedDict[str, List[TableRow]]":
    """Rows by image (negatives as images without rows), minus every image a bad row was
    reported for, by the reader or here: such an image is dropped whole, for every source,
    since keeping it with a finding missing would teach the finding as background."""
    grouped: "OrderedDict[str, List[TableRow]]" = OrderedDict()
    seen = set()
    for row in table.rows:
        if row.label not in label_map.ids:
            problems.add(row.file, row.line, "unknown_label", row.label, label_map.unknown_message(row.label),
                         image=row.image)
            continue
        key = (row.image, row.label, row.box)
        if key in seen:
            problems.add(row.file, row.line, "duplicate_row", row.image, "the same box is listed twice; kept once")
            continue
        seen.add(key)
        grouped.setdefault(row.image, []).append(row)
    for image in table.negatives:
        grouped.setdefault(image, [])
    for image in problems.bad_images():
        grouped.pop(image, None)
    return grouped


class ImageItem(NamedTuple):
    """One image of the plan, as the per-image step gets it: its name, its table rows (none
    for an image without findings), the file found for it (None: missing), its patient, the
    image folder as the user named it (for a missing image's problem), the source's fields
    for it (`Table.meta`) and a pixel spacing to scale to the file's size (`Table.spacing`)."""

    image: str
    rows: List[TableRow]
    path: Optional[str]
    patient: str
    where: str
    meta: Dict[str, str] = {}
    spacing: Optional[FrameSpacing] = None


def _by_path(image: str, index, twice) -> str:
    """A table name with folders ('scans/case_12.png', 'C:\\data\\case_12.png') -> the file name the
    index knows ('case_12.png') when the file found under the image folder ends with those folders
    (a relative name) or, for an absolute name, when only one file has that name; else `image`."""
    parts = [p for p in re.split(r"[\\/]", image) if p not in ("", ".", "..")]
    if not parts or parts == [image] or parts[-1] not in index or parts[-1] in twice:
        return image
    absolute = image[:1] in "/\\" or re.match(r"^[A-Za-z]:[\\/]", image) is not None
    found = [p for p in re.split(r"[\\/]", index[parts[-1]]) if p]
    return parts[-1] if absolute or found[-len(parts):] == parts else image


def _match_stems(grouped, index, per_image: List[dict], twice=frozenset()):
    """Table names without an extension ('case_12') -> the image file with that stem
    ('case_12.png'), when exactly one file has it; names with folders by `_by_path` (`twice`: file
    names found more than once). Returns (grouped, per_image) re-keyed: `per_image` are dicts by
    image name (patients, meta, ...)."""
    by_stem: Dict[str, Optional[str]] = {}
    for name in index:
        stem = os.path.splitext(name)[0]
        by_stem[stem] = None if stem in by_stem else name  # None: ambiguous stem
    renamed: "OrderedDict[str, list]" = OrderedDict()
    per_image = [dict(d) for d in per_image]  # copies: the table's own dicts stay as read
    for image, rows in grouped.items():
        target = image if image in index else _by_path(image, index, twice)
        target = target if target in index or os.path.splitext(target)[1] else by_stem.get(target) or target
        renamed.setdefault(target, []).extend(rows)
        if target != image:
            for d in per_image:
                if image in d:
                    d[target] = d[image]
    return renamed, per_image


def _split_images(grouped, index, opts: ConvertOptions, patients: Dict[str, str], units: Dict[str, str]):
    """The stratified split of the units (`duplicates.patient_units`: a patient, or the patients
    of a duplicate group, which go to one split together); returns (by_split, missing)."""
    classes: Dict[str, set] = {}
    for image, rows in grouped.items():
        classes.setdefault(units[patients[image]], set()).update(r.label for r in rows if r is not None)
    members = [units[p] for p in patients.values()]
    if opts.folds:
        folds = fold_names(opts.folds)
        held = {name: f for name, f in opts.fractions.items() if name not in folds}
        split_of_unit = assign_folds(members, folds, held, opts.seed, classes)
    else:
        split_of_unit = assign_patients(members, opts.fractions, opts.seed, classes)
    split_of_patient = {p: split_of_unit[u] for p, u in units.items()}
    by_split: Dict[str, List[str]] = {name: [] for name in opts.fractions}
    negatives_missing = 0
    for image in sorted(grouped):
        if not grouped[image] and image not in index:
            negatives_missing += 1  # listed without findings but not downloaded: not an error
            continue
        by_split[split_of_patient[patients[image]]].append(image)
    return by_split, negatives_missing


def _duplicate_groups(grouped, index, opts: ConvertOptions, read) -> List[DuplicateGroup]:
    """The identical and near-identical images of the plan (none with allow_duplicates_across_splits):
    every found image's pixels are decoded and hashed once, before the split."""
    if opts.allow_duplicates_across_splits:
        return []
    read = functools.partial(read, window=opts.window)  # the pixels the model will see
    hashes = hash_files({image: index[image] for image in grouped if image in index}, read, opts.workers)
    return find_groups(hashes, opts.duplicate_distance)


@dataclass
class Plan:
    """Everything convert decides before reading an image: which images, their rows and files,
    their patients and splits, and which shard each goes to. Both executors run this plan.

    Attributes:
      by_split: split -> its image names, sorted.
      where: the image folder as the user named it.
      with_masks: some row has a mask, so every image with objects gets masks.
      reader_problems: problems the reader had found before convert started (for --max-bad).
      duplicates: the groups of identical or near-identical images, each kept in one split with
        all its images' patients (empty with allow_duplicates_across_splits).
    """

    table: Table
    label_map: LabelMap
    opts: ConvertOptions
    grouped: "OrderedDict[str, List[TableRow]]"
    index: Dict[str, str]
    patients: Dict[str, str]
    by_split: Dict[str, List[str]]
    negatives_missing: int
    where: str
    with_masks: bool
    reader_problems: int
    duplicates: List[DuplicateGroup] = field(default_factory=list)

    @property
    def images(self) -> int:
        return sum(len(v) for v in self.by_split.values())

    def shard_sets(self, split: str) -> List[ShardSet]:
        """The split's sets of shards: one, or with --shard-by finding a positive and a negative
        one (`shard_sets.shard_sets`)."""
        return shard_sets(split, self.by_split[split], lambda image: bool(self.grouped[image]), self.opts.shard_by,
                          self.opts.shard_size)

    def shard_count(self, split: str) -> int:
        """The split's shards: ceil(images / --shard-size) per shard set, at least 1 each (an
        empty split still has a shard file)."""
        return sum(s.count for s in self.shard_sets(split))

    def shards(self, split: str) -> List[List[ImageItem]]:
        """The split's images by shard, set after set (`shard_sets`): image i of a set goes to
        its shard i mod n, fixed whatever is dropped. This is also the order in which problems
        are reported."""
        return [[self.item(image) for image in shard] for s in self.shard_sets(split) for shard in s.shards()]

    def item(self, image: str) -> ImageItem:
        return ImageItem(image, self.grouped[image], self.index.get(image), self.patients[image], self.where,
                         self.table.meta.get(image, {}), self.table.spacing.get(image))


def plan_conversion(table: Table, images_dir: str, label_map: LabelMap, opts: ConvertOptions,
                    problems: Problems, index_images=index_images, read=read_and_probe) -> Plan:
    """Group the rows by image, find the image files, group identical images, split by patient.

    `index_images(folder)` returns (name -> path, duplicates) (`images.index_images`; Beam
    passes one that lists any FileSystems path); `read(path)` returns (bytes, header) for the
    duplicate search (`images.read_and_probe`; Beam passes its own). Raises a `UserError` when
    nothing is usable.
    """
    reader_problems = len(problems)
    grouped = _group_rows(table, label_map, problems)
    if not grouped:
        _fail_empty(table, problems)
    index, dupes = index_images(images_dir)
    for name, path in dupes:  # two files of one name: which one the table means is unknowable
        if name in grouped:
            problems.add(path, None, "ambiguous_image", name, f"{name} is found twice under the image folder "
                         f"({index[name]} and {path}); rename one, or point --images at one of them", image=name)
            grouped.pop(name)
    index_frames(grouped, index)
    grouped, (table.patients, table.meta, table.spacing) = negative_frames(
        grouped, index, [table.patients, table.meta, table.spacing])
    grouped, (table.patients, table.meta, table.spacing) = _match_stems(
        grouped, index, [table.patients, table.meta, table.spacing], {name for name, _ in dupes})
    patients = {image: table.patients.get(image) or _default_patient(image, table.source) for image in grouped}
    groups = _duplicate_groups(grouped, index, opts, read)
    by_split, negatives_missing = _split_images(grouped, index, opts, patients, patient_units(patients, groups))
    return Plan(table, label_map, opts, grouped, index, patients, by_split, negatives_missing,
                table.inputs.get("images", images_dir), any(row.mask is not None for row in table.rows),
                reader_problems, groups)


def _fail_empty(table: Table, problems: Problems) -> None:
    """No usable row or image at all: say why, and what to change."""
    inputs = ", ".join(v for k, v in table.inputs.items() if k != "images") or "the input"
    if problems.items:
        first = "\n  ".join(str(p) for p in problems.items[:5])
        raise UserError(f"{inputs}: no usable rows: all {len(problems)} rows or images with a problem were "
                        f"left out; nothing was written. First problems:\n  {first}")
    raise UserError(f"{inputs}: no rows with boxes and no images without findings: the table is empty (only "
                    "a header?); nothing was written. Check that this is the file you meant.")
