"""Our own TFRecords read back without TensorFlow: one record at a byte offset, one feature.

The dataset manifest (`medtfod.data.manifest`) records where each image's tf.Example starts in its
shard, so `detect --dataset` and the report read an image's encoded bytes from the dataset
itself: a dataset folder moved to another place or machine keeps working.

TFRecord framing (uint64 length, masked crc32c of the length, data, masked crc32c of the data,
all little-endian) is `medtfod.data.tfrecord_framing`'s. The Example's wire format is the one
`medtfod.data.writers.tfexample` writes.
"""
from __future__ import annotations

from typing import Iterator, Tuple

from ...core.errors import UserError
from ..tfrecord_framing import CRC_BYTES, HEADER_BYTES, data_intact, record_length


def read_record(path: str, offset: int) -> bytes:
    """The data of the TFRecord starting at byte `offset` of `path`, with both CRCs checked.

    Raises:
      UserError: the file is missing, or the record there is cut short or corrupt.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES:
                raise UserError(f"{path}: no record at byte {offset} (file ends first)")
            size = record_length(head)
            if size is None:
                raise UserError(f"{path}: the record at byte {offset} is corrupt (length checksum)")
            data = f.read(size)
            crc = f.read(CRC_BYTES)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not data_intact(data, size, crc):
        raise UserError(f"{path}: the record at byte {offset} is corrupt or cut short (data checksum)")
    return data


def _varint(data: bytes, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(data: bytes) -> Iterator[Tuple[int, bytes]]:
    """(field number, payload) of each length-delimited field of a message (others skipped)."""
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        wire = tag & 7
        if wire == 2:
            size, i = _varint(data, i)
            yield tag >> 3, data[i:i + size]
            i += size
        elif wire == 0:
            _, i = _varint(data, i)
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def bytes_feature(example: bytes, key: str) -> list:
    """The values of bytes feature `key` of a serialized tf.Example ([] when absent)."""
    wanted = key.encode("utf-8")
    for number, features in _fields(example):
        if number != 1:
            continue
        for entry_number, entry in _fields(features):  # map<string, Feature> entries
            if entry_number != 1:
                continue
            name, value = b"", b""
            for n, payload in _fields(entry):
                if n == 1:
                    name = payload
                elif n == 2:
                    value = payload
            if name == wanted:
                return [v for kind, blist in _fields(value) if kind == 1 for n, v in _fields(blist) if n == 1]
    return []
