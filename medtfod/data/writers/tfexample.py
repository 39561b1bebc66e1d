"""`tf.train.Example` protos encoded directly (protobuf wire format), without TensorFlow.

The converter writes TFRecords from many worker processes; importing TensorFlow in each
would cost seconds and gigabytes, so the few message types involved are encoded here:

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }       # map entry: key = 1, value = 2
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                             Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

Keys are written in sorted order, so the same features always give the same bytes.
Tests decode the output with TensorFlow and with the OD API's `TfExampleDecoder`.
"""
from __future__ import annotations

import struct
from typing import Dict, Sequence, Union

FeatureValue = Union[Sequence[bytes], Sequence[float], Sequence[int]]


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _wrap(number: int, parts: list, length: int):
    """A length-delimited field (wire type 2) around `parts`, kept as a list of chunks so
    that large payloads (the image bytes) are copied once, when the message is joined."""
    header = _varint(number << 3 | 2) + _varint(length)
    return [header] + parts, len(header) + length


def _field(number: int, payload: bytes) -> bytes:
    """A small length-delimited field, as bytes."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


class BytesFeature(list):
    """Marks a list of bytes values."""


class FloatFeature(list):
    """Marks a list of float values (stored as float32)."""


class Int64Feature(list):
    """Marks a list of int64 values."""


def _feature(value):
    """The `Feature` message for a typed list, as (chunks, length)."""
    if isinstance(value, BytesFeature):
        parts, length = [], 0
        for v in value:
            p, n = _wrap(1, [v], len(v))
            parts += p
            length += n
        return _wrap(1, parts, length)  # Feature.bytes_list = BytesList{value...}
    if isinstance(value, FloatFeature):
        packed = struct.pack(f"<{len(value)}f", *value)
        inner = _field(1, packed) if value else b""
        return _wrap(2, [inner], len(inner))
    if isinstance(value, Int64Feature):
        packed = b"".join(_varint(int(v)) for v in value)
        inner = _field(1, packed) if value else b""
        return _wrap(3, [inner], len(inner))
    raise TypeError(f"feature values must be BytesFeature, FloatFeature or Int64Feature, got {type(value)}")


def encode_example(features: Dict[str, object]) -> bytes:
    """Serialize a feature dict (name -> typed list) to `tf.train.Example` bytes."""
    parts, length = [], 0
    for key in sorted(features):
        key_field = _field(1, key.encode("utf-8"))
        value_parts, value_length = _wrap(2, *_feature(features[key]))
        entry_parts, entry_length = _wrap(1, [key_field] + value_parts, len(key_field) + value_length)
        parts += entry_parts
        length += entry_length
    return b"".join(_wrap(1, parts, length)[0])
