"""TFRecord framing (`medtfod.data.tfrecord_framing`): what the writer frames, the reader reads
back at its offset, and a damaged length or data is refused with the record's offset."""
import pytest

from medtfod.core.errors import UserError
from medtfod.data.readers.tfrecord import read_record
from medtfod.data.tfrecord_framing import CRC_BYTES, HEADER_BYTES, data_intact, record_length, write_record


def test_records_read_back_at_their_offsets(tmp_path):
    path = tmp_path / "x.record"
    records, offsets = [b"", b"one", bytes(range(256)) * 3], []
    with open(path, "wb") as f:
        for data in records:
            offsets.append(f.tell())
            write_record(f, data)
    raw = path.read_bytes()
    assert len(raw) == sum(HEADER_BYTES + len(d) + CRC_BYTES for d in records)
    for data, offset in zip(records, offsets):
        assert read_record(str(path), offset) == data
        assert record_length(raw[offset:offset + HEADER_BYTES]) == len(data)
        start = offset + HEADER_BYTES
        assert data_intact(raw[start:start + len(data)], len(data), raw[start + len(data):start + len(data) + CRC_BYTES])


def test_damage_is_refused(tmp_path):
    path = tmp_path / "x.record"
    with open(path, "wb") as f:
        write_record(f, b"payload")
    raw = bytearray(path.read_bytes())
    assert record_length(bytes(raw[:HEADER_BYTES - 1])) is None  # cut short
    with pytest.raises(UserError, match="no record at byte 40"):
        read_record(str(path), 40)
    length_damaged = bytearray(raw)
    length_damaged[0] ^= 1
    path.write_bytes(bytes(length_damaged))
    with pytest.raises(UserError, match="at byte 0 is corrupt \\(length checksum\\)"):
        read_record(str(path), 0)
    data_damaged = bytearray(raw)
    data_damaged[HEADER_BYTES] ^= 1
    path.write_bytes(bytes(data_damaged))
    with pytest.raises(UserError, match="data checksum"):
        read_record(str(path), 0)
