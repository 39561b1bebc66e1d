"""`detect`'s DICOM results: per DICOM input, a TID 1500 SR (`dicom_sr`) and/or a drawn Secondary
Capture (`dicom_overlay`), written under the output folder:

    <out>/dicom_sr/<image name>        Comprehensive 3D SR, one planar ROI per kept detection
    <out>/dicom_overlay/<image name>   Secondary Capture (RGB) of the drawn copy

(`<image name>` is the input's relative output name, e.g. `a/scan.dcm`.) Both are fixed folders
inside `--out`, never a path of their own, so the output fence covers them. Per source study and
run, all SRs share one new series (number 9001) and all overlays another (9002).

A frame `scan.dcm#k` of a multi-frame file gets an SR of its own (`dicom_sr/scan.dcm#k`) whose ROIs
reference the file's SOP Instance UID and its frame number k + 1 (DICOM counts frames from 1), and
an overlay of that frame. A non-DICOM input (not `.dcm`) gets no DICOM result and a note; a run where no input is DICOM, or
on a dataset split (whose images are PNG copies in TFRecords, without the DICOM headers), is
refused before anything runs. Files are written whole or not at all (`core.atomic`).
"""
from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from ..core import atomic, fence
from ..core.errors import UserError
from .dicom_codes import read_codes
from .dicom_sr import Algorithm, SeriesSlot

SR_FOLDER, OVERLAY_FOLDER = "dicom_sr", "dicom_overlay"
SERIES_NUMBERS = {SR_FOLDER: 9001, OVERLAY_FOLDER: 9002}
NOT_DICOM = "not a DICOM input (.dcm)"
# Type 2 attributes of the Patient and General Study modules (present, may be empty) that the SR
# and Secondary Capture copy from their source; the header read in memory gets empty ones where the
# file has none (the file itself is never written).
TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def is_dicom(path) -> bool:
    """Whether detect reads `path` as DICOM (by its extension, as `inputs.load_image` does; a frame
    `scan.dcm#k` of a multi-frame file is DICOM too)."""
    from ..core.frames import split_frame
    return isinstance(path, str) and split_frame(path)[0].lower().endswith(".dcm")


def need_highdicom() -> None:
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise UserError("--dicom-sr and --dicom-overlay need highdicom: install medtfod's DICOM extra "
                        "(python3 scripts/bootstrap.py install --dicom, or pip install \"medtfod[dicom]\")") from None


def check_inputs(inputs: Sequence[Tuple[str, object]], dataset: Optional[str], what: str) -> None:
    """Refuse, before any work, DICOM results for a dataset split or for inputs none of which is
    DICOM (`what`: the options asked for, e.g. '--dicom-sr')."""
    if dataset:
        raise UserError(f"{what}: the images of a converted dataset (--dataset {dataset}) are PNG copies without "
                        "their DICOM headers; run detect --images on the folder (or .txt list) of the .dcm files")
    if inputs and not any(is_dicom(path) for _name, path in inputs):
        raise UserError(f"{what}: none of the {len(inputs)} input images is DICOM (.dcm), e.g. {inputs[0][0]}; "
                        "an SR refers to its source DICOM by UID, so it needs DICOM inputs")


@dataclass(frozen=True)
class DicomRequest:
    """What DICOM results to write: `sr`, `overlay`, and the class codes file (`codes`, or None)."""

    sr: bool = False
    overlay: bool = False
    codes: Optional[str] = None

    @property
    def wanted(self) -> bool:
        return self.sr or self.overlay

    @property
    def options(self) -> str:
        return " and ".join(o for o, on in (("--dicom-sr", self.sr), ("--dicom-overlay", self.overlay)) if on)


class DicomWriter:
    """Writes one image's DICOM results at a time, from detect's worker threads."""

    def __init__(self, out: str, request: DicomRequest, labels: Sequence[str], algorithm: Algorithm):
        self.out, self.request, self.algorithm = out, request, algorithm
        self.codes = read_codes(request.codes, labels)
        self._series: Dict[Tuple[str, str], list] = {}  # (folder, study UID) -> [series UID, next instance]
        self._lock = threading.Lock()

    def slot(self, folder: str, study_uid: str) -> SeriesSlot:
        from pydicom.uid import generate_uid
        with self._lock:
            entry = self._series.setdefault((folder, study_uid), [generate_uid(), 1])
            number, entry[1] = entry[1], entry[1] + 1
        return SeriesSlot(entry[0], SERIES_NUMBERS[folder], number)

    def write(self, name: str, path, prediction, image, class_ids) -> Optional[str]:
        """Write `name`'s results from `prediction` (its detections, pixel xyxy, and Mask R-CNN
        box masks) and `image` (the decoded RGB picture); returns why none were written, else None."""
        if not is_dicom(path):
            return NOT_DICOM
        import pydicom
        from ..core.frames import split_frame
        file, frame = split_frame(path)
        try:
            source = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as e:  # it decoded a moment ago: the file changed since
            return f"cannot read its DICOM header again ({type(e).__name__}: {e})"
        for keyword in TYPE_2:  # absent in many anonymised files; a result copies them, empty is allowed
            if keyword not in source:
                setattr(source, keyword, "")
        if int(source.get("NumberOfFrames", 1) or 1) > 1 and frame is None:
            return "a multi-frame DICOM read as one image: no DICOM result (detect reads each frame, scan.dcm#k)"
        try:
            if self.request.sr:
                from .dicom_sr import build_sr
                sr = build_sr(source, prediction.detections, self.codes, self.algorithm,
                              self.slot(SR_FOLDER, source.StudyInstanceUID), frame=frame)
                self._save(SR_FOLDER, name, sr)
            if self.request.overlay:
                from .dicom_overlay import build_overlay
                from .outputs import render, whole_image_masks
                drawn = render(image, prediction.detections, None, whole_image_masks(prediction, image.size),
                               class_ids)
                self._save(OVERLAY_FOLDER, name, build_overlay(source, drawn,
                                                               self.slot(OVERLAY_FOLDER, source.StudyInstanceUID)))
        except (ValueError, TypeError, AttributeError) as e:  # highdicom's checks of the source header
            return f"its header does not make a valid DICOM result ({type(e).__name__}: {e})"
        return None

    def _save(self, folder: str, name: str, dataset) -> None:
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        atomic.write_file(fence.inside(self.out, f"{folder}/{name}"), buffer.getvalue())


def algorithm_of(models, min_score: float) -> Algorithm:
    """The `Algorithm` of the `ExportedModel`s that made the detections."""
    return Algorithm(tuple((os.path.basename(os.path.abspath(m.path)), m.info["step"]) for m in models), min_score)
