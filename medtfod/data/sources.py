"""The conversion sources: one table drives both the CLI (`medtfod convert <source>`) and the code.

Each source names its input options, its reader and its default label map. The reader
turns the input into a `Table`; `convert_table` does the rest the same way for all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from ..core.annotations import Table, TableRow
from ..core.labelmap import LabelMap, read_label_map, shipped_path
from ..core.errors import UserError
from ..core.problems import Problems


@dataclass(frozen=True)
class Source:
    help: str
    inputs: Tuple[Tuple[str, str], ...]       # (--option, help) of the source's own required inputs
    read: Callable                             # (problems, images, **the source's inputs) -> Table
    default_label_map: Optional[str] = None    # a shipped map name; None = the classes found


def _nih(problems, images, *, bbox_csv, data_entry=None):
    from .readers import nih
    rows = nih.read_bbox_list(bbox_csv, problems)
    table = Table("nih", [TableRow(r.image, r.label, r.box, bbox_csv, r.line) for r in rows],
                  inputs={"bbox_csv": bbox_csv, "images": images})
    if data_entry:
        entry = nih.read_data_entry(data_entry, problems)
        table.patients, table.meta, table.spacing = entry.patients, entry.meta, entry.spacing
        with_boxes = {r.image for r in rows}
        for image in entry.patients:
            if image in with_boxes:
                continue
            if entry.without_findings(image):
                table.negatives.append(image)
            else:  # a finding without a box: neither an object to train on nor a negative
                problems.add(data_entry, None, "skipped_unlocalized", image,
                             f"{image}: Data_Entry lists {entry.findings[image]!r} but BBox_List has no box for it; "
                             "left out (as an image without findings it would teach the finding as background)",
                             image=image)
        table.inputs["data_entry"] = data_entry
    return table


# The readers below take `images` like every source's; only NIH's table records it itself.

def _thyroid_csv(problems, images, *, table):
    from .readers.thyroid_csv import read_thyroid_csv
    return read_thyroid_csv(table, problems)


def _ddti(problems, images, *, xml_dir):
    from .readers.ddti import read_ddti
    return read_ddti(xml_dir, problems)


def _siim(problems, images, *, rle_csv, width=1024, height=1024, extension=".png", meta=None):
    from .readers.meta import parse_meta
    from .readers.siim import read_siim
    return read_siim(rle_csv, problems, width=width, height=height, extension=extension, meta=parse_meta(meta))


def _csv(problems, images, *, table, columns, label=None, meta=None):
    from .readers.csv_table import parse_columns, read_csv_table
    from .readers.meta import parse_meta
    return read_csv_table(table, parse_columns(columns), problems, label=label, meta=parse_meta(meta))


def _voc(problems, images, *, xml_dir):
    from .readers.voc import read_voc
    return read_voc(xml_dir, problems)


def _coco(problems, images, *, json, meta=None):
    from .readers.coco import read_coco
    from .readers.meta import parse_meta
    return read_coco(json, problems, meta=parse_meta(meta))


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


def source_of(name: str, inputs: Dict[str, object]) -> Source:
    """The source `name`, once `inputs` are known to be the ones its reader takes (else a
    `UserError` naming the sources, or the reader's inputs, with the nearest name)."""
    import inspect

    from ..core.errors import did_you_mean
    if name not in SOURCES:
        raise UserError(f"unknown source {name!r} (the sources: {', '.join(SOURCES)}){did_you_mean(name, SOURCES)}")
    source = SOURCES[name]
    params = [p for p in inspect.signature(source.read).parameters.values() if p.kind is p.KEYWORD_ONLY]
    accepted = [p.name for p in params]
    for given in inputs:
        if given not in accepted:
            raise UserError(f"source {name!r} takes no {given!r} (its inputs: {', '.join(accepted)})"
                            f"{did_you_mean(given, accepted)}")
    missing = [p.name for p in params if p.default is p.empty and inputs.get(p.name) is None]
    if missing:
        raise UserError(f"source {name!r} needs {', '.join(missing)} (its inputs: {', '.join(accepted)})")
    return source


def read_source(name: str, problems: Problems, *, images: str, label_map: Optional[str] = None, **inputs):
    """(table, label map) for source `name`.

    Args:
      images: the image folder.
      label_map: a label map .pbtxt (--label-map); None: the source's shipped map, or the
        classes found.
      inputs: the source's own options by their Python names (its `inputs` and extras such as
        NIH's data_entry, SIIM's width), e.g. `read_source('nih', problems, images=...,
        bbox_csv=..., data_entry=...)`.
    """
    source = source_of(name, inputs)
    table = source.read(problems, images, **inputs)
    if label_map:
        labels = read_label_map(label_map)
    elif source.default_label_map:
        labels = read_label_map(shipped_path(source.default_label_map))
    else:
        labels = LabelMap.from_names(sorted({row.label for row in table.rows}))
    if not table.inputs.get("images"):
        table.inputs["images"] = images
    return table, labels


def convert(name: str, images: str, out: str, label_map: Optional[str] = None, opts=None,
            strict: bool = False, quiet: bool = False, **inputs) -> dict:
    """Read source `name` and write the converted dataset to `out` (see `convert_table`).

    `inputs` are the source's options by their Python names, e.g.
    `convert('nih', images, out, bbox_csv=..., data_entry=...)`.
    """
    from .convert import convert_table
    problems = Problems(strict=strict)
    table, labels = read_source(name, problems, images=images, label_map=label_map, **inputs)
    return convert_table(table, images, out, labels, opts, problems, quiet=quiet)
