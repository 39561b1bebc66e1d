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
      meta: the source's per-image fields (lower-case name -> value as the source wrote it,
        stripped; a field the source leaves empty is absent), e.g. {'age': '45', 'sex': 'F'}.
    """

    image_id: str
    path: str
    width: int
    height: int
    channels: int
    format: str
    patient_id: str
    objects: List[Object] = field(default_factory=list)
    meta: Dict[str, str] = field(default_factory=dict)

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
      meta: image name -> its per-image fields (see `ImageRecord.meta`), where the source has any.
      spacing: image name -> the pixel spacing the source gives for another frame of the image
        (NIH's original detector size); convert scales it to the file's own size.
    """

    source: str
    rows: List[TableRow]
    patients: Dict[str, str] = field(default_factory=dict)
    negatives: List[str] = field(default_factory=list)
    inputs: Dict[str, str] = field(default_factory=dict)
    meta: Dict[str, Dict[str, str]] = field(default_factory=dict)
    spacing: Dict[str, "FrameSpacing"] = field(default_factory=dict)


class FrameSpacing(NamedTuple):
    """A pixel spacing stated for a frame of `width` x `height` pixels: `row` (the vertical
    distance between pixel centres) and `col` (the horizontal one), in mm.

    NIH's Data_Entry gives the spacing of the detector image (OriginalImage[Width,Height]),
    while the released PNGs are resized to 1024 x 1024; `at` gives the spacing of the image
    as converted.
    """

    row: float
    col: float
    width: int
    height: int

    def at(self, width: int, height: int) -> str:
        """'row,col' mm per pixel of the same image resized to `width` x `height` pixels
        (6 significant digits)."""
        row, col = self.row * self.height / height, self.col * self.width / width
        return f"{row:.6g},{col:.6g}"


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
