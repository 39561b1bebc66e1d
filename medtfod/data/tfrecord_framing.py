"""TFRecord framing, the one place it is written and checked.

Each record is: uint64 length, masked CRC32C of those 8 bytes, the data, masked CRC32C of the
data (all little-endian), as TensorFlow's `TFRecordWriter` writes it. The writer
(`writers.tfrecord`, through `write_record`), the reader of one record at an offset
(`readers.tfrecord.read_record`) and the Beam path's scan of its shards all use these.
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Optional

import google_crc32c

HEADER_BYTES = 12  # uint64 length + its masked CRC32C
CRC_BYTES = 4
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> bytes:
    """TFRecord's masked CRC32C of `data`, as 4 little-endian bytes."""
    crc = google_crc32c.value(data)
    masked = (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF
    return struct.pack("<I", masked)


def write_record(f: BinaryIO, data: bytes) -> None:
    """Append one framed record holding `data` to the open binary file `f`."""
    length = struct.pack("<Q", len(data))
    f.write(length + masked_crc(length))
    f.write(data)  # not concatenated: records hold whole images
    f.write(masked_crc(data))


def record_length(head: bytes) -> Optional[int]:
    """The data length a record's `HEADER_BYTES`-byte header holds, or None when the header is
    cut short or its checksum does not match."""
    if len(head) < HEADER_BYTES or masked_crc(head[:8]) != head[8:HEADER_BYTES]:
        return None
    return struct.unpack("<Q", head[:8])[0]


def data_intact(data: bytes, length: int, crc: bytes) -> bool:
    """Whether a record's `data` has the `length` its header gave and matches its checksum `crc`."""
    return len(data) == length and masked_crc(data) == crc
