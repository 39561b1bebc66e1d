"""`Dataset`: a converted dataset folder (the output of `medtfod convert`) as one object.

It knows its own layout, so no caller joins `label_map.pbtxt`, `coco/<split>.json` or
`tfrecords/` onto a path again:

    DIR/dataset.json        the manifest: every image's name, split, patient, size, record
    DIR/label_map.pbtxt     the classes
    DIR/coco/<split>.json   the ground truth of each split (boxes: COCO pixel x, y, w, h)
    DIR/splits/<split>.txt  image names
    DIR/tfrecords/<split>.record-*   the OD API's tf.Examples, which hold the image bytes

Boxes come out as `medtfod.core.boxes.Box` (float pixels, xmin, ymin, xmax, ymax, origin at
the top-left corner). A dataset is relocatable: it reads images from its own TFRecords.
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional

from .readers.detections import GroundTruth
from ..core.errors import UserError
from ..core.labelmap import LabelMap, read_label_map
from . import manifest as manifest_mod
from .manifest import ImageEntry, Manifest

LABEL_MAP = "label_map.pbtxt"


class Dataset:
    """A `medtfod convert` output folder.

    Args:
      path: the folder (relative or absolute); it must hold a `dataset.json` manifest.

    Raises:
      UserError: the folder or its manifest is missing or not one medtfod wrote.
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self.manifest: Manifest = manifest_mod.load(self.path)
        self._ground_truth: Dict[Optional[str], GroundTruth] = {}

    def __repr__(self) -> str:
        return f"Dataset({self.path!r}: {len(self.manifest.images)} images, splits {', '.join(self.splits)})"

    @classmethod
    def convert(cls, source: str, images: str, out: str, *, label_map: Optional[str] = None, options=None,
                strict: bool = False, quiet: bool = True, **tables) -> "Dataset":
        """Convert a source's tables (`medtfod convert <source>`) into `out` and open the result.

        Args:
          source: 'nih', 'thyroid-csv', 'ddti', 'siim', 'csv', 'voc' or 'coco'.
          images: the image folder.
          out: the dataset folder to write (refused when not empty and not medtfod's).
          label_map: a label map file; by default the source's shipped map or the classes found.
          options: a `medtfod.data.convert.ConvertOptions` (split fractions, seed, shards, ...).
          strict: stop at the first problem.
          quiet: no progress bar.
          **tables: the source's inputs by their Python names, e.g. `bbox_csv=..., data_entry=...`
            for 'nih', `xml_dir=...` for 'ddti' and 'voc', `table=..., columns=...` for 'csv'.
        """
        from .sources import convert
        convert(source, images, out, label_map=label_map, opts=options, strict=strict, quiet=quiet, **tables)
        return cls(out)

    @property
    def splits(self) -> List[str]:
        """The split names, sorted."""
        return sorted({e.split for e in self.manifest.images})

    @property
    def label_map_path(self) -> str:
        return os.path.join(self.path, LABEL_MAP)

    @property
    def label_map(self) -> LabelMap:
        return read_label_map(self.label_map_path)

    @property
    def label_names(self) -> Optional[List[str]]:
        """The label map's class names in id order, or None when the folder has no label map."""
        return self.label_map.names if os.path.isfile(self.label_map_path) else None

    def images(self, split: Optional[str] = None) -> List[ImageEntry]:
        """The manifest entries of `split` (every image for None), sorted by name."""
        return sorted(self.manifest.split(split), key=lambda e: e.name)

    def entry(self, name: str) -> ImageEntry:
        """The manifest entry of image `name`."""
        for e in self.manifest.images:
            if e.name == name:
                return e
        raise UserError(f"{self.path} has no image {name!r}")

    def patients(self, split: Optional[str] = None) -> Dict[str, str]:
        """image name -> patient id (the manifest's), for `split` or every image."""
        return self.manifest.patients(split)

    def meta(self, split: Optional[str] = None) -> Dict[str, Dict[str, str]]:
        """image name -> its per-image fields from the source (NIH's Data_Entry, DDTI's case, DICOM
        headers, `--meta` columns: see `ImageEntry.meta`), for `split` or every image. A field
        the source left empty is absent from an image's dict."""
        return self.manifest.meta(split)

    @property
    def fields(self) -> List[str]:
        """The names of the per-image fields some image has, sorted ('age', 'sex', 'tirads', ...)."""
        return sorted({key for e in self.manifest.images for key in e.meta})

    @property
    def window(self) -> dict:
        """{'window': spec, 'clahe': bool}: the grey window convert applied to DICOM and 16-bit images
        (`medtfod.core.windowing`; 'header' for a dataset converted before windows were recorded)."""
        return {"window": self.manifest.window, "clahe": self.manifest.clahe}

    def ground_truth(self, split: Optional[str] = None) -> GroundTruth:
        """image name -> [(label, Box)] from `coco/<split>.json` (every split for None); images
        without findings map to []."""
        if split not in self._ground_truth:
            from .readers.detections import read_ground_truth
            self._ground_truth[split] = read_ground_truth(self.path, split)
        return self._ground_truth[split]

    def image_bytes(self, name: str) -> bytes:
        """The encoded bytes (PNG/JPEG) of image `name`, read from the dataset's own TFRecord."""
        return self.manifest.image_bytes(self.entry(name))

    def image(self, name: str):
        """Image `name` as a PIL image (as stored: grayscale stays grayscale)."""
        import io

        from PIL import Image
        with Image.open(io.BytesIO(self.image_bytes(name))) as im:
            im.load()
            return im.copy()

    def coco_path(self, split: str) -> str:
        """`coco/<split>.json`, the split's ground truth as COCO detection JSON."""
        self.manifest.split(split)  # a clear error for an unknown split
        return os.path.join(self.path, "coco", f"{split}.json")

    def tfrecords(self, split: str) -> List[str]:
        """The split's TFRecord shards."""
        self.manifest.split(split)
        return sorted(glob.glob(os.path.join(glob.escape(self.path), "tfrecords", f"{split}.record-*")))
