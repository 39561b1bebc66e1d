"""Synthetic DICOM images made in code (pydicom): a 12-bit MONOCHROME2 Computed Radiography image
with the patient, study and series modules filled, as a PACS would hold it (dciodvfy finds no
error in it)."""
import numpy as np


def new_dataset(sop_class="1.2.840.10008.5.1.4.1.1.7"):
    """An empty pydicom Dataset with its file meta (explicit VR little endian) and SOP class and a
    new SOP Instance UID (default: Secondary Capture Image Storage)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    return ds


def write_xray(path, pixels, patient_id="P001", study_uid=None, series_uid=None, **tags):
    """Write `pixels` (uint16 [rows, cols], 12-bit values) as a CR image at
    `path`; returns (path, the pydicom dataset written). `tags` override or add elements."""
    from pydicom.uid import generate_uid
    ds = new_dataset("1.2.840.10008.5.1.4.1.1.1")  # Computed Radiography Image Storage
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"Test^{patient_id}", patient_id, "19700101", "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261201", "101500", "1", "A1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.ViewPosition = "CR", 1, 1, "PA"
    ds.Manufacturer = "synthetic"
    ds.PatientOrientation, ds.BodyPartExamined = ["L", "F"], "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelSpacing = [0.5, 0.5]
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.asarray(pixels, np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return str(path), ds


def blobs(size=128, seed=0):
    """A 12-bit image with two bright blobs on a smooth background (uint16 [size, size])."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    image = 800 + 400 * x / size + rng.normal(0, 40, (size, size))
    for cy, cx, r in ((size * 0.3, size * 0.35, size * 0.08), (size * 0.65, size * 0.7, size * 0.1)):
        image += 2200 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    return np.clip(image, 0, 4095).astype(np.uint16)


def dciodvfy():
    """The path of Debian's DICOM validator `dciodvfy` (dicom3tools), installed with apt-get when
    missing and running as root; else the test is skipped with the reason."""
    import os
    import shutil
    import subprocess

    import pytest
    found = shutil.which("dciodvfy")
    if found:
        return found
    if not shutil.which("apt-get") or getattr(os, "geteuid", lambda: 1)() != 0:
        pytest.skip("dciodvfy is not installed, and installing it (apt-get install dicom3tools) needs Debian and root")
    result = None
    for command in (["apt-get", "install", "-y", "-q", "dicom3tools"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "dicom3tools"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if shutil.which("dciodvfy"):
            return shutil.which("dciodvfy")
    pytest.skip(f"apt-get could not install dicom3tools: {(result.stdout + result.stderr)[-500:]}")


def validate(path):
    """(errors, warnings): the lines `dciodvfy` prints for the DICOM file `path`."""
    import subprocess
    out = subprocess.run([dciodvfy(), str(path)], capture_output=True, text=True, timeout=120)
    lines = (out.stdout + out.stderr).splitlines()
    return [l for l in lines if l.startswith(("Error", "Abort"))], [l for l in lines if l.startswith("Warning")]


def sr_rois(path):
    """Each planar ROI of a TID 1500 SR read with pydicom alone (no highdicom), as
    (finding (code, scheme, meaning), score, [x, y] points, referenced SOP Instance UID)."""
    import pydicom
    ds = pydicom.dcmread(str(path))

    def concept(item, keyword="ConceptNameCodeSequence"):
        code = item[keyword][0]
        return code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning

    rois = []
    measurements = next(i for i in ds.ContentSequence if concept(i)[:2] == ("126010", "DCM"))  # Imaging Measurements
    for group in measurements.ContentSequence:  # one CONTAINER per ROI: 'Measurement Group' (125007, DCM)
        assert concept(group)[:2] == ("125007", "DCM")
        items = {concept(i)[:2]: i for i in group.ContentSequence}
        finding = concept(items[("121071", "DCM")], "ConceptCodeSequence")
        score = float(items[("111012", "DCM")].MeasuredValueSequence[0].NumericValue)
        region = items[("111030", "DCM")]  # Image Region: the SCOORD
        assert region.ValueType == "SCOORD" and region.GraphicType == "POLYLINE"
        points = np.asarray(region.GraphicData, np.float32).reshape(-1, 2)
        image = region.ContentSequence[0]  # SELECTED FROM the source image
        rois.append((finding, score, points, image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
    return rois
