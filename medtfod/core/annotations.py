"""The in-memory dataset and detections: images, their labelled boxes, a model's detections,
independent of any file format.

Readers produce a `Table` of `TableRow`s; convert checks them against the image files and
makes `ImageRecord`s, which writers consume. Boxes are `medtfod.core.boxes.Box`
(float pixel xyxy, top-left origin) in the image's own pixel frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional

from .boxes import Box
from .masks import Mask


@dataclass(frozen=True)
class Object:
    """One labelled box, with an instance mask where the source has one.
    `source` is 'file:line' of the row it came from."""

    label: str
    box: Box
    source: str = ""
    mask: Optional[Mask] = None


@dataclass
class ImageRecord:
    """One image with its objects (none for an image without findings).

    Attributes:
      image_id: the image's file name, unique in the dataset (e.g. '00012345_001.png').
      path: where the file is on disk.
      width, height, channels, format: from the file's header.
      patient_id: the patient the image belongs to (splits never separate a patient).
      objects: labelled boxes in pixel coordinates of this image.
    """

    image_id: str
    path: str
    width: int
    height: int
    channels: int
    format: str
    patient_id: str
    objects: List[Object] = field(default_factory=list)

    @property
    def has_masks(self) -> bool:
        return any(o.mask is not None for o in self.objects)


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
    """What every source reader returns and `medtfod.data.convert.convert_table` consumes.

    Bad rows are not in `rows`: the reader reports each to `Problems` with the image it
    belongs to (`Problems.add(..., image=...)`), and convert drops every image so named
    whole, for every source (see `Problems.bad_images`).

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


class Detection(NamedTuple):
    """One detection of a model on one image: what detect finds, draws and writes, what the
    detections reader reads back, and what metrics and calibrate score.

    Attributes:
      image: the image's name (as in detections.csv and the dataset manifest).
      label: the class name.
      score: the model's score in [0, 1] (rounded to 6 decimals, as detections.csv holds it).
      box: pixel `Box` (float xyxy, top-left origin) in the image's own frame.
    """

    image: str
    label: str
    score: float
    box: Box
