import io
import struct

import numpy as np
import pytest
from PIL import Image

from medtfod.core.images import ImageError, index_images, probe_bytes


def png_bytes(w=40, h=30, mode="L"):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w) if mode == "L" else (h, w, 3), np.uint8), mode=mode).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(w=40, h=30):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_png_header():
    info = probe_bytes(png_bytes(40, 30))
    assert (info.format, info.width, info.height, info.channels) == ("png", 40, 30, 1)
    assert probe_bytes(png_bytes(5, 7, "RGB")).channels == 3


def test_jpeg_header():
    info = probe_bytes(jpeg_bytes(41, 29))
    assert (info.format, info.width, info.height, info.channels) == ("jpeg", 41, 29, 3)


def test_truncated_png():
    data = png_bytes()
    with pytest.raises(ImageError, match="truncated|IEND"):
        probe_bytes(data[:-20])


def test_png_bad_crc():
    data = bytearray(png_bytes())
    data[40] ^= 0xFF  # inside the IDAT chunk
    with pytest.raises(ImageError, match="CRC"):
        probe_bytes(bytes(data))


def test_truncated_jpeg():
    with pytest.raises(ImageError, match="EOI"):
        probe_bytes(jpeg_bytes()[:-10])


def test_decompression_bomb_header():
    data = bytearray(png_bytes())
    data[16:24] = struct.pack(">II", 60000, 60000)
    with pytest.raises(ImageError, match="implausible"):
        probe_bytes(bytes(data), verify=False)


def test_not_an_image():
    with pytest.raises(ImageError, match="signature"):
        probe_bytes(b"GIF89a....")


def test_index_recursive(tmp_path):
    for sub in ("images_001", "images_002"):
        (tmp_path / sub).mkdir()
    (tmp_path / "images_001" / "a.png").write_bytes(png_bytes())
    (tmp_path / "images_002" / "b.png").write_bytes(png_bytes())
    (tmp_path / "images_002" / "a.png").write_bytes(png_bytes())
    (tmp_path / "notes.txt").write_text("x")
    index, dupes = index_images(str(tmp_path))
    assert sorted(index) == ["a.png", "b.png"]
    assert index["a.png"].endswith(("images_001/a.png", "images_001\\a.png"))
    assert [d[0] for d in dupes] == ["a.png"]
