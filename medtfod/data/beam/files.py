"""Files anywhere Beam's FileSystems reach (local paths too), for `beam.convert`: which paths
may be remote (`check_paths`), reading and listing images, writing outputs, staging a remote
output folder, and scanning the TFRecord shards Beam wrote.

`apache_beam` is imported inside the functions that use it (and, for images, only for a remote
path), like `beam.convert` does.
"""
from __future__ import annotations

import contextlib
import re
from typing import Dict, Iterator, List, Optional

from ...core.errors import UserError


def is_remote(path: Optional[str]) -> bool:
    """A URL (gs://, s3://, ...) rather than a local path."""
    return bool(path) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+://", path) is not None


def check_paths(tables: Dict[str, str], images: str, out: str, runner: Optional[str]) -> None:
    """Tables are read here, so they must be local; images and output may be remote on Beam."""
    for option, path in tables.items():
        if is_remote(path):
            raise UserError(f"{option} {path}: tables and label maps are read on this machine and must be local "
                            "files; copy it here first (e.g. gsutil cp / aws s3 cp). Only --images and --out "
                            "may be remote, with --runner")
    for option, path in (("--images", images), ("--out", out)):
        if is_remote(path) and not runner:
            raise UserError(f"{option} {path} is remote: that needs the Beam path (--runner direct|dataflow|...; "
                            "see README 'Beyond one machine'); the local converter reads and writes local paths")


def read_any(path: str):
    """`images.read_and_probe` for any FileSystems path."""
    from ...core.images import probe_bytes, read_and_probe
    if not is_remote(path):
        return read_and_probe(path)
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        data = f.read()
    if path.lower().endswith(".dcm"):
        import io

        from ...core.dicom import dicom_to_png
        return dicom_to_png(io.BytesIO(data))
    return data, probe_bytes(data)


def index_any(root: str):
    """`images.index_images` for any FileSystems folder (a remote one is listed with `**`)."""
    from ...core.images import IMAGE_EXTENSIONS, index_images
    if not is_remote(root):
        return index_images(root)
    from apache_beam.io.filesystems import FileSystems
    try:
        found = FileSystems.match([FileSystems.join(root, "**")])[0].metadata_list
    except Exception as e:  # BeamIOError, a missing extra (ValueError), credentials
        raise UserError(f"--images {root}: cannot list it ({type(e).__name__}: {e})") from None
    index: Dict[str, str] = {}
    duplicates = []
    for path in sorted(m.path for m in found if m.path.lower().endswith(IMAGE_EXTENSIONS)):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name in index:
            duplicates.append((name, path))
        else:
            index[name] = path
    if not index:
        raise UserError(f"image folder not found or empty: {root}")
    return index, duplicates


def write_any(path: str, data: bytes) -> None:
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.create(path) as f:
        f.write(data)


def files_under(folder: str) -> List[str]:
    from apache_beam.io.filesystems import FileSystems
    found = FileSystems.match([FileSystems.join(folder, "**")])[0].metadata_list
    return sorted(m.path for m in found)


@contextlib.contextmanager
def staged_remote(final: str) -> Iterator[str]:
    """`atomic.staged_directory` for an object store: the output is written under a sibling
    prefix `.NAME.partial-XXXX` and moved into place only when complete. Object stores have
    no atomic rename: the move is file by file (after the old output is deleted), so a crash in
    that last step can leave a partial `final` (it has no .medtfod marker until the end)."""
    import uuid

    from apache_beam.io.filesystems import FileSystems

    from ...core import atomic
    final = final.rstrip("/")
    parent, base = final.rsplit("/", 1)
    old = files_under(final) if FileSystems.exists(final) or _exists_prefix(final) else []
    if old and FileSystems.join(final, atomic.MARKER) not in old:
        raise UserError(f"output {final} is not empty and was not written by medtfod; choose a new --out "
                        "(medtfod replaces only its own outputs)")
    tmp = FileSystems.join(parent, f".{base}.partial-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        staged = files_under(tmp)
        if old:
            FileSystems.delete(old)
        FileSystems.rename(staged, [final + s[len(tmp):] for s in staged])
        write_any(FileSystems.join(final, atomic.MARKER), b"written by medtfod; safe for medtfod to replace\n")
    except BaseException:
        with contextlib.suppress(Exception):
            FileSystems.delete(files_under(tmp))
        raise


def _exists_prefix(path: str) -> bool:
    with contextlib.suppress(Exception):
        return bool(files_under(path))
    return False


def example_digest(example: bytes) -> str:
    import hashlib
    return hashlib.sha256(example).hexdigest()


def scan_shard(path: str) -> Iterator[tuple]:
    """(byte offset, sha256 of the data) of every record in a TFRecord file.

    Framing: uint64 length, masked CRC32C of the length, data, masked CRC32C of the data
    (all little-endian); both CRCs are checked."""
    import struct

    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    from ..writers.tfrecord import _masked_crc  # noqa: PLC2701 (the writer's own CRC)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        offset = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12 or _masked_crc(head[:8]) != head[8:12]:
                raise UserError(f"{path}: damaged TFRecord header at byte {offset}")
            (length,) = struct.unpack("<Q", head[:8])
            data = f.read(length)
            crc = f.read(4)
            if len(data) != length or _masked_crc(data) != crc:
                raise UserError(f"{path}: damaged TFRecord data at byte {offset}")
            yield offset, example_digest(data)
            offset += 12 + length + 4
