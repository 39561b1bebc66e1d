"""One image's detections as a DICOM Comprehensive 3D SR following TID 1500 (Measurement Report),
built with highdicom (`medtfod[dicom]`), and read back.

Each detection is one TID 1410 planar ROI group:
  - Tracking Identifier: '<label> <k>' (k = rank by score, 1 = best) and a new UID;
  - Finding: the class's code (`dicom_codes.FindingCodes`), Finding Category: SCT 404684003;
  - Image Region: a closed POLYLINE SCOORD of the box's 4 corners (5 points) on the source image
    (its SOP Instance UID);
  - Certainty of Finding (DCM 111012): the score, UCUM '1';
  - Algorithm Identification (TID 4019): 'medtfod', its version, and parameters naming each model
    and its step, and the threshold.
An image without detections gets one TID 1501 group instead, finding 'Clinical finding absent'.

Coordinates: DICOM's SCOORD image coordinates are (column, row) with 0.0\\0.0 at the top-left
corner of the top-left pixel and Columns\\Rows at the bottom-right corner of the last pixel
(PS3.3 C.18.6.1.2): exactly medtfod's float pixel xyxy, so a corner is (x, y) unchanged. They
are rounded to 0.01 px and the score to 1e-6 first, as detections.csv holds them; the SR stores
them as 32-bit floats (FL) and as a decimal string (DS) respectively.

The patient and study modules are copied from the source (the SR joins the source's study); the
series is new (Modality SR), and so are all UIDs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..core.annotations import Detection
from ..core.boxes import Box
from .dicom_codes import FINDING_CATEGORY, NO_FINDING, NO_UNITS, PROCEDURE, SCORE, Concept, FindingCodes

MANUFACTURER = "medtfod"


@dataclass(frozen=True)
class Algorithm:
    """What made the detections, for TID 4019 (Algorithm Identification).

    Attributes:
      models: (export folder name, exported checkpoint step or None) per model.
      min_score: the threshold the detections passed.
    """

    models: Tuple[Tuple[str, Optional[int]], ...]
    min_score: float

    @property
    def parameters(self) -> List[str]:
        steps = [f"model {name} step {'unknown' if step is None else step}" for name, step in self.models]
        return steps + [f"min score {self.min_score:g}"]

    def identification(self):
        import highdicom as hd

        from .. import __version__
        return hd.sr.AlgorithmIdentification(name=MANUFACTURER, version=__version__, parameters=self.parameters)


def coded(concept: Concept):
    import highdicom as hd
    return hd.sr.CodedConcept(value=concept.code, scheme_designator=concept.scheme, meaning=concept.meaning)


def polyline(box: Box) -> np.ndarray:
    """The closed outline of `box` (pixel xyxy) as SCOORD (column, row) points, [5, 2] float32,
    rounded to 0.01 px as detections.csv."""
    x0, y0, x1, y1 = (round(v, 2) for v in (box.xmin, box.ymin, box.xmax, box.ymax))
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], np.float32)


def _frames(frame: Optional[int]):
    """highdicom's referenced_frame_numbers for medtfod's frame index `frame` (from 0; DICOM counts from 1)."""
    return None if frame is None else [frame + 1]


def roi_group(detection: Detection, rank: int, source, codes: FindingCodes, algorithm_id, frame: Optional[int] = None):
    """The TID 1410 group of one detection on the pydicom dataset `source` (on its frame `frame`,
    counted from 0, of a multi-frame image)."""
    import highdicom as hd
    from pydicom.uid import generate_uid
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=polyline(detection.box),
                               source_image=hd.sr.SourceImageForRegion.from_source_image(
                                   source, referenced_frame_numbers=_frames(frame)))
    score = hd.sr.Measurement(name=coded(SCORE), value=round(float(detection.score), 6), unit=coded(NO_UNITS),
                              algorithm_id=algorithm_id)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{detection.label} {rank}"),
        referenced_region=region, finding_type=coded(codes.code(detection.label)),
        finding_category=coded(FINDING_CATEGORY), algorithm_id=algorithm_id, measurements=[score])


def nothing_found(source, algorithm_id, frame: Optional[int] = None):
    """The TID 1501 group of an image without detections: 'Clinical finding absent' on `source`
    (its frame `frame`)."""
    import highdicom as hd
    from pydicom.uid import generate_uid
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="no findings"),
        finding_type=coded(NO_FINDING), algorithm_id=algorithm_id,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(
            source, referenced_frame_numbers=_frames(frame))])


@dataclass(frozen=True)
class SeriesSlot:
    """Where a new instance goes: its series UID and number, and its instance number."""

    series_uid: str
    series_number: int
    instance_number: int


def build_sr(source, detections: Sequence[Detection], codes: FindingCodes, algorithm: Algorithm, slot: SeriesSlot,
             frame: Optional[int] = None):
    """A highdicom `Comprehensive3DSR` (a pydicom Dataset) holding `detections` (pixel xyxy boxes
    on `source`, the pydicom dataset of the image they were found on, or on its frame `frame`,
    counted from 0, of a multi-frame image), best score first.
    An image without detections gets one image-level group saying so (`nothing_found`)."""
    import highdicom as hd
    from pydicom.uid import generate_uid
    algorithm_id = algorithm.identification()
    device = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[MANUFACTURER, *algorithm.parameters[:-1]]), name=MANUFACTURER,
            manufacturer_name=MANUFACTURER, model_name=", ".join(name for name, _ in algorithm.models)[:64]))
    ranked = sorted(detections, key=lambda d: -d.score)
    groups = [roi_group(d, k, source, codes, algorithm_id, frame) for k, d in enumerate(ranked, start=1)]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=coded(PROCEDURE), imaging_measurements=groups or [nothing_found(source, algorithm_id, frame)])
    return hd.sr.Comprehensive3DSR(
        evidence=[source], content=report, series_instance_uid=slot.series_uid, series_number=slot.series_number,
        sop_instance_uid=generate_uid(), instance_number=slot.instance_number, manufacturer=MANUFACTURER,
        is_complete=True, series_description="medtfod detections")


@dataclass(frozen=True)
class SrFinding:
    """One ROI read back from an SR: label, score, box (pixel xyxy), the SOP Instance UID it is on."""

    label: str
    score: float
    box: Box
    referenced_sop_instance_uid: str


def read_sr(path: str, codes: Optional[FindingCodes] = None) -> List[SrFinding]:
    """The ROIs of an SR file that `build_sr` wrote, read with `highdicom.sr.srread`, in the SR's
    order (best score first). The box is the polyline's bounding box (float32 values as stored)."""
    import highdicom as hd
    codes = codes or FindingCodes({})
    report = hd.sr.srread(path)
    found = []
    for group in report.content.get_planar_roi_measurement_groups():
        finding = group.finding_type
        label = codes.label(finding.value, finding.scheme_designator, finding.meaning)
        score = group.get_measurements(name=coded(SCORE))[0].value
        points = np.asarray(group.roi.value, np.float64)
        box = Box(float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()),
                  float(points[:, 1].max()))
        source = group.roi.ContentSequence[0].ReferencedSOPSequence[0]  # the IMAGE item it is SELECTED FROM
        found.append(SrFinding(label, float(score), box, source.ReferencedSOPInstanceUID))
    return found
