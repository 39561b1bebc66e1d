"""DICOM -> 8-bit PNG: windowing, MONOCHROME1 inversion, RGB, and clear errors."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from medtfod.core.dicom import dicom_to_png
from medtfod.core.images import ImageError

pydicom = pytest.importorskip("pydicom")


def write_dicom(path, pixels, photometric="MONOCHROME2", **tags):
    from support.dicom_files import new_dataset
    ds = new_dataset()
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated if pixels.dtype == np.uint8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return str(path)


def decode(png):
    return np.asarray(Image.open(io.BytesIO(png)))


def test_window_and_scale(tmp_path):
    pixels = np.array([[0, 1000, 2000, 4000]] * 3, np.uint16)   # 3 x 4, 12-bit values
    path = write_dicom(tmp_path / "a.dcm", pixels, WindowCenter=1000, WindowWidth=2000)
    png, info = dicom_to_png(path)
    assert (info.format, info.width, info.height, info.channels) == ("png", 4, 3, 1)
    row = decode(png)[0]
    assert row[0] == 0 and row[-1] == 255 and row[2] == 255   # >= window top saturates
    assert 100 < row[1] < 160                                   # centre of the window is mid-gray


def test_monochrome1_is_inverted(tmp_path):
    pixels = np.array([[0, 4095]], np.uint16)
    png, _ = dicom_to_png(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1"))
    assert decode(png).tolist() == [[255, 0]]


def test_rgb_ultrasound(tmp_path):
    pixels = np.zeros((5, 6, 3), np.uint8)
    pixels[..., 0] = 200
    png, info = dicom_to_png(write_dicom(tmp_path / "us.dcm", pixels, "RGB"))
    assert info.channels == 3 and decode(png)[0, 0].tolist() == [200, 0, 0]


def test_not_dicom(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"hello")
    with pytest.raises(ImageError, match="DICOM"):
        dicom_to_png(str(tmp_path / "x.dcm"))


def test_convert_with_dicom_images(tmp_path):
    from medtfod.cli import main
    images = tmp_path / "images"
    images.mkdir()
    write_dicom(images / "p1_scan.dcm", (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) % 4096))
    (tmp_path / "t.csv").write_text("file,label,x,y,w,h\np1_scan.dcm,nodule,2,3,10,12\n")
    out = tmp_path / "out"
    assert main(["convert", "csv", "--table", str(tmp_path / "t.csv"), "--columns",
                 "filename=file,label=label,x=x,y=y,w=w,h=h", "--images", str(images), "--out", str(out),
                 "--split", "train=1.0", "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 1 and report["boxes"] == 1
    record = (out / "tfrecords" / "train.record-00000-of-00001").read_bytes()
    assert b"\x89PNG" in record and b"p1_scan.dcm" in record
