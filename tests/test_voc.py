"""VOC XML reads back through labelImg 1.8.6's own PascalVocReader."""

from medtfod.core.annotations import ImageRecord, Object
from medtfod.core.boxes import Box
from medtfod.data.writers.voc import voc_xml


def test_labelimg_reads_our_voc(pascal_voc_io, tmp_path):
    record = ImageRecord("00000001_000.png", "/data/00000001_000.png", 1024, 1024, 1, "png", "1", [
        Object("Nodule", Box(0.0, 10.0, 20.0, 30.0)),
        Object("Mass", Box.from_xywh(225.084745762712, 547.019216763771, 86.7796610169491, 79.1864406779661)),
    ])
    path = tmp_path / "00000001_000.xml"
    path.write_bytes(voc_xml(record))
    shapes = pascal_voc_io.PascalVocReader(str(path)).get_shapes()
    assert [(s[0], s[1][0], s[1][2], s[4]) for s in shapes] == [
        ("Nodule", (1, 11), (20, 30), False),   # 1-based inclusive pixel corners
        ("Mass", (226, 548), (312, 626), False),
    ]


def test_voc_header_fields(tmp_path):
    import xml.etree.ElementTree as ET
    record = ImageRecord("a.jpg", "C:\\data\\a.jpg", 560, 360, 3, "jpeg", "p", [])
    root = ET.fromstring(voc_xml(record))
    assert root.findtext("filename") == "a.jpg"
    assert root.findtext("path") == "C:/data/a.jpg"
    assert [root.findtext(f"size/{k}") for k in ("width", "height", "depth")] == ["560", "360", "3"]
    assert root.findall("object") == []
