"""The conversion sources: one table drives both the CLI (`medtfod convert <source>`) and the code.

Each source names its input options, its reader and its default label map. The reader
turns the input into a `Table`; `convert_table` does the rest the same way for all.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Dict, Optional, Tuple

from ..core.annotations import Table, TableRow
from ..core.labelmap import LabelMap, read_label_map, shipped_path
from ..core.problems import Problems


@dataclass(frozen=True)
class Source:
    help: str
    inputs: Tuple[Tuple[str, str], ...]       # (--option, help) of the source's own required inputs
    read: Callable                             # (args, problems) -> Table
    default_label_map: Optional[str] = None    # a shipped map name; None = the classes found


def _nih(args, problems):
    from .readers import nih
    rows = nih.read_bbox_list(args.bbox_csv, problems)
    table = Table("nih", [TableRow(r.image, r.label, r.box, args.bbox_csv, r.line) for r in rows],
                  inputs={"bbox_csv": args.bbox_csv, "images": args.images})
    if getattr(args, "data_entry", None):
        entry = nih.read_data_entry(args.data_entry, problems)
        table.patients = entry.patients
        with_boxes = {r.image for r in rows}
        for image in entry.patients:
            if image in with_boxes:
                continue
            if entry.without_findings(image):
                table.negatives.append(image)
            else:  # a finding without a box: neither an object to train on nor a negative
                problems.add(args.data_entry, None, "skipped_unlocalized", image,
                             f"{image}: Data_Entry lists {entry.findings[image]!r} but BBox_List has no box for it; "
                             "left out (as an image without findings it would teach the finding as background)",
                             image=image)
        table.inputs["data_entry"] = args.data_entry
    return table


def _thyroid_csv(args, problems):
    from .readers.thyroid_csv import read_thyroid_csv
    return read_thyroid_csv(args.table, problems)


def _ddti(args, problems):
    from .readers.ddti import read_ddti
    return read_ddti(args.xml_dir, problems)


def _siim(args, problems):
    from .readers.siim import read_siim
    return read_siim(args.rle_csv, problems, width=getattr(args, "width", 1024),
                     height=getattr(args, "height", 1024), extension=getattr(args, "extension", ".png"))


def _csv(args, problems):
    from .readers.csv_table import parse_columns, read_csv_table
    return read_csv_table(args.table, parse_columns(args.columns), problems, label=args.label)


def _voc(args, problems):
    from .readers.voc import read_voc
    return read_voc(args.xml_dir, problems)


def _coco(args, problems):
    from .readers.coco import read_coco
    return read_coco(args.json, problems)


SOURCES: Dict[str, Source] = {
    "nih": Source("NIH ChestX-ray14 BBox_List_2017.csv (+ Data_Entry)",
                  (("--bbox-csv", "BBox_List_2017.csv"),), _nih, "nih_chestxray14"),
    "thyroid-csv": Source("thyroid ultrasound table: image id, path, x, y, width, height [, points]",
                          (("--table", "the CSV table"),), _thyroid_csv, "thyroid_nodule"),
    "ddti": Source("DDTI thyroid case XML (polygons -> boxes and masks)",
                   (("--xml-dir", "folder of DDTI <case> XML files"),), _ddti, "thyroid_nodule"),
    "siim": Source("SIIM-ACR pneumothorax train-rle.csv (run-length masks)",
                   (("--rle-csv", "train-rle.csv"),), _siim),
    "csv": Source("any box table through --columns",
                  (("--table", "the CSV table"),
                   ("--columns", "filename=COL,label=COL,x=COL,y=COL,w=COL,h=COL or "
                                 "...,xmin=COL,ymin=COL,xmax=COL,ymax=COL [,patient=COL]")), _csv),
    "voc": Source("a folder of Pascal VOC XML (labelImg)", (("--xml-dir", "folder of VOC XML files"),), _voc),
    "coco": Source("a COCO JSON (CVAT, Supervisely, ...)", (("--json", "the COCO JSON file"),), _coco),
}


def read_source(name: str, args, problems: Problems):
    """(table, label map) for source `name`; `args` carries the source's inputs and --label-map."""
    source = SOURCES[name]
    table = source.read(args, problems)
    if getattr(args, "label_map", None):
        label_map = read_label_map(args.label_map)
    elif source.default_label_map:
        label_map = read_label_map(shipped_path(source.default_label_map))
    else:
        label_map = LabelMap.from_names(sorted({row.label for row in table.rows}))
    if not table.inputs.get("images"):
        table.inputs["images"] = args.images
    return table, label_map


def convert(name: str, images: str, out: str, label_map: Optional[str] = None, opts=None,
            strict: bool = False, quiet: bool = False, **inputs) -> dict:
    """Read source `name` and write the converted dataset to `out` (see `convert_table`).

    `inputs` are the source's options by their Python names, e.g.
    `convert('nih', images, out, bbox_csv=..., data_entry=...)`.
    """
    from .convert import convert_table
    problems = Problems(strict=strict)
    args = SimpleNamespace(images=images, label_map=label_map, **inputs)
    table, labels = read_source(name, args, problems)
    return convert_table(table, images, out, labels, opts, problems, quiet=quiet)
