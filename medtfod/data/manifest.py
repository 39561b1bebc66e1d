"""The dataset manifest, `DIR/dataset.json`: the identity of every image, written once by convert.

Later stages (metrics, calibrate, audit, detect --dataset, the bootstrap CIs) read images and
patients from here and never guess them again from file names or absolute paths.

    {"format": "medtfod-dataset", "version": 1, "source": "nih", "window": "header", "clahe": false,
     "images": [{"name": "00000003_000.png", "split": "val", "patient": "3",
                 "width": 1024, "height": 1024, "boxes": 2,
                 "tfrecord": "tfrecords/val.record-00000-of-00001", "offset": 0,
                 "source_path": "/data/nih/images_001/00000003_000.png",
                 "meta": {"age": "81", "sex": "M", "view_position": "PA"}}, ...]}

`tfrecord` (a path relative to the dataset folder, forward slashes) and `offset` (the byte
where the image's tf.Example starts) say where the image's bytes are; the dataset is
relocatable because nothing needs `source_path`, which is kept for the record only. `meta`
holds the source's per-image fields (NIH's Data_Entry, DDTI's case, DICOM headers, `--meta`
columns); a manifest written before it existed has none, and loads with empty ones.

`window` and `clahe` are the grey window convert applied to DICOM and 16-bit images
(`medtfod.core.windowing`; 'header' without CLAHE for a manifest written before they existed);
`medtfod export` copies them into export.json and `detect` applies them again. An image that is
frame k of a multi-frame DICOM is named `<file>#k` and has `"frame": k` (counting from 0,
`medtfod.core.frames`), its `source_path` the file; other images have `"frame": null`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from ..core.errors import UserError

MANIFEST = "dataset.json"
FORMAT = "medtfod-dataset"
VERSION = 1


@dataclass(frozen=True)
class ImageEntry:
    """One image of a converted dataset.

    Attributes:
      name: the image's file name, unique in the dataset.
      split: the split it is in ('train', 'val', ...).
      patient: its patient id (the source's own: Data_Entry, `patient=`, DDTI case, NIH name,
        else the image itself).
      width, height: pixels.
      boxes: number of ground-truth boxes (0 for an image without findings).
      tfrecord: the shard holding its tf.Example, relative to the dataset folder.
      offset: byte offset of that record in the shard.
      source_path: where convert read it (absolute; informational, may not exist here).
      frame: for frame k of a multi-frame DICOM, k (from 0); None otherwise.
      meta: the source's per-image fields, lower-case name -> value as the source wrote it
        (stripped); a field the source leaves empty is absent, never guessed. Names:
        'age', 'sex', 'view_position', 'pixel_spacing' ('row,col' mm per pixel of the image
        as converted) for NIH and DICOM; DDTI's case fields ('tirads', 'composition', ...);
        the `--meta` columns of csv, coco and siim.
    """

    name: str
    split: str
    patient: str
    width: int
    height: int
    boxes: int
    tfrecord: str
    offset: int
    source_path: str
    meta: Dict[str, str] = field(default_factory=dict)
    frame: Optional[int] = None


@dataclass
class Manifest:
    """A loaded dataset.json: its folder, source, images, and the window convert applied
    (`window`: a `windowing` spec string, `clahe`)."""

    root: str
    source: str
    images: List[ImageEntry]
    window: str = "header"
    clahe: bool = False

    def split(self, name: Optional[str]) -> List[ImageEntry]:
        """The entries of split `name` (all entries for None); a `UserError` for an unknown split."""
        if name is None:
            return list(self.images)
        entries = [e for e in self.images if e.split == name]
        if not entries:
            known = sorted({e.split for e in self.images})
            raise UserError(f"{self.root} has no split {name!r}; its splits: {', '.join(known)}")
        return entries

    def patients(self, split: Optional[str] = None) -> Dict[str, str]:
        """image name -> patient id."""
        return {e.name: e.patient for e in self.split(split)}

    def meta(self, split: Optional[str] = None) -> Dict[str, Dict[str, str]]:
        """image name -> its per-image fields (see `ImageEntry.meta`)."""
        return {e.name: dict(e.meta) for e in self.split(split)}

    def image_bytes(self, entry: ImageEntry) -> bytes:
        """The image's encoded file bytes (PNG/JPEG), read from the dataset's own TFRecord."""
        from .readers.tfrecord import bytes_feature, read_record
        path = os.path.join(self.root, *entry.tfrecord.split("/"))
        encoded = bytes_feature(read_record(path, entry.offset), "image/encoded")
        if len(encoded) != 1:
            raise UserError(f"{path}: the record at byte {entry.offset} has no image/encoded ({entry.name})")
        return encoded[0]


def manifest_json(entries: List[ImageEntry], source: str, window=None) -> str:
    """The manifest's text; `window` is the `windowing.Window` convert applied (None: 'header')."""
    return json.dumps({"format": FORMAT, "version": VERSION, "source": source,
                       "window": window.text if window is not None else "header",
                       "clahe": bool(window is not None and window.clahe),
                       "images": [asdict(e) for e in entries]}, indent=1) + "\n"


def _entry(data: dict) -> ImageEntry:
    entry = ImageEntry(**data)
    if not (isinstance(entry.meta, dict) and all(isinstance(v, str) for v in entry.meta.values())):
        raise ValueError(f"image {entry.name!r}: 'meta' must be an object of strings, got {entry.meta!r}")
    if entry.frame is not None and (isinstance(entry.frame, bool) or not isinstance(entry.frame, int)
                                    or entry.frame < 0):
        raise ValueError(f"image {entry.name!r}: 'frame' must be a whole number >= 0 or null, got {entry.frame!r}")
    return entry


def load(dataset_dir: str) -> Manifest:
    """Read `dataset_dir/dataset.json`.

    Raises:
      UserError: the folder or its manifest is missing (a dataset from an older medtfod:
        convert it again), or the manifest is not one medtfod wrote.
    """
    path = os.path.join(dataset_dir, MANIFEST)
    if not os.path.isdir(dataset_dir):
        raise UserError(f"dataset folder not found: {dataset_dir}")
    if not os.path.isfile(path):
        raise UserError(f"{dataset_dir} has no {MANIFEST}: it is not a `medtfod convert` output, or an older "
                        "medtfod made it; run medtfod convert again to write one")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
        images = [_entry(e) for e in data["images"]]
        window, clahe = data.get("window", "header"), data.get("clahe", False)
        if not isinstance(window, str) or not isinstance(clahe, bool):
            raise ValueError(f"'window' must be a string and 'clahe' true or false, got {window!r}, {clahe!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a medtfod dataset manifest (version {VERSION}): {e}") from None
    return Manifest(os.path.abspath(dataset_dir), data.get("source", ""), images, window, clahe)


def recorded_window(tfrecord_paths) -> Optional[dict]:
    """{'window', 'clahe', 'dataset'} recorded in the manifest of the dataset the TFRecord paths
    (a pipeline config's `input_path`s, `DATASET/tfrecords/<split>.record-*`) belong to; None when
    they are not in a `medtfod convert` folder with a readable manifest, or two datasets disagree."""
    found = {}
    for path in tfrecord_paths:
        folder = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        if folder in found or not os.path.isfile(os.path.join(folder, MANIFEST)):
            continue
        try:
            data = load(folder)
        except UserError:
            continue
        found[folder] = (data.window, data.clahe)
    if len(set(found.values())) != 1:
        return None
    folder = sorted(found)[0]
    window, clahe = found[folder]
    return {"window": window, "clahe": clahe, "dataset": folder}
