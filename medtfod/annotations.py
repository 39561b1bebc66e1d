"""The in-memory dataset: images and their labelled boxes, independent of any file format.

Readers produce `ImageRecord`s; writers consume them. Boxes are `medtfod.boxes.Box`
(float pixel xyxy, top-left origin) in the image's own pixel frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

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
