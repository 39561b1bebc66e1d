"""A drawn copy of a DICOM image as a DICOM Secondary Capture (`detect --dicom-overlay`), for
viewers that do not show SR: the same picture as detect's drawn PNG (the display rendering of
the source, boxes in their class colours, `label score` captions), RGB 8-bit, the source's rows
and columns, built with highdicom's `SCImage.from_ref_dataset` (patient and study copied from
the source; a new series and new UIDs). Burnt-in boxes are pixels, not measurements: the SR is
the result a program reads.
"""
from __future__ import annotations

import numpy as np

from .dicom_sr import MANUFACTURER, SeriesSlot


def orientation(source):
    """The source's Patient Orientation as a pair, or None when it has none (a Secondary Capture
    in the PATIENT coordinate system then leaves it empty, as the standard allows: type 2C)."""
    value = source.get("PatientOrientation")
    return tuple(str(v) for v in value) if value is not None and len(value) == 2 else None


def build_overlay(source, drawn, slot: SeriesSlot):
    """A highdicom `SCImage` of the PIL RGB image `drawn` (detect's drawn copy of `source`, the
    pydicom dataset it was read from; same rows and columns)."""
    import highdicom as hd
    from pydicom.uid import generate_uid
    pixels = np.asarray(drawn.convert("RGB"), np.uint8)
    known = orientation(source)
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=slot.series_uid, series_number=slot.series_number,
        sop_instance_uid=generate_uid(), instance_number=slot.instance_number, manufacturer=MANUFACTURER,
        patient_orientation=known or ("L", "F"), series_description="medtfod detections (drawn)",
        transfer_syntax_uid="1.2.840.10008.1.2.1")
    for keyword in ("BodyPartExamined", "Laterality"):  # General Series: Laterality is needed for paired parts
        if source.get(keyword):
            setattr(image, keyword, source.get(keyword))
    if known is None:  # highdicom insists on a value; the source has none, so the SC says none (empty)
        image.PatientOrientation = None
    return image
