"""Files anywhere Beam's FileSystems reach (gs://, s3://, ... and local paths too), for the
Beam path of `medtfod convert --runner` (`beam.convert`): read and probe an image, list an image
folder, write a file, and stage the output folder on an object store.

Each function imports `apache_beam` when it runs; a local path goes through medtfod's own
functions (`images.read_and_probe`, `images.index_images`) where there is one.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

from ...core.errors import UserError
from .options import is_remote

# io, uuid and .atomic are imported where they are used, as apache_beam is.


def read_any(path: str, window=None):
    """`images.read_and_probe` for any FileSystems path (`scan.dcm#k`: frame k of a DICOM)."""
    from ...core.frames import split_frame
    from ...core.images import decode_if_needed, read_and_probe
    if not is_remote(path):
        return read_and_probe(path, window=window)
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    file, frame = split_frame(path)
    with FileSystems.open(file, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        data = f.read()
    if file.lower().endswith(".dcm"):
        import io

        from ...core.dicom import dicom_to_png
        return dicom_to_png(io.BytesIO(data), window, frame)
    return decode_if_needed(data, True, window)


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
    """Write `data` to any FileSystems path (replacing what is there)."""
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.create(path) as f:
        f.write(data)


def files_under(folder: str) -> List[str]:
    """Every file under any FileSystems folder (or prefix), sorted."""
    from apache_beam.io.filesystems import FileSystems
    found = FileSystems.match([FileSystems.join(folder, "**")])[0].metadata_list
    return sorted(m.path for m in found)


@contextlib.contextmanager
def staged_remote(final: str, owned: Optional[Sequence[str]] = None) -> Iterator[str]:
    """`atomic.staged_directory` for an object store: the output is written under a sibling
    prefix `.NAME.partial-XXXX` and moved into place only when complete. Object stores have
    no atomic rename: the move is file by file (after the old output is deleted), so a crash in
    that last step can leave a partial `final` (it has no .medtfod marker until the end). An
    earlier output holding files medtfod did not write is refused (`atomic.foreign_files`)."""
    import uuid

    from apache_beam.io.filesystems import FileSystems

    from ...core import atomic
    final = final.rstrip("/")
    parent, base = final.rsplit("/", 1)
    old = files_under(final) if FileSystems.exists(final) or _exists_prefix(final) else []
    if old and FileSystems.join(final, atomic.MARKER) not in old:
        raise UserError(f"output {final} is not empty and was not written by medtfod; choose a new --out "
                        "(medtfod replaces only its own outputs)")
    if old and owned is not None:
        from apache_beam.io.filesystem import CompressionTypes
        with FileSystems.open(FileSystems.join(final, atomic.MARKER),
                              compression_type=CompressionTypes.UNCOMPRESSED) as f:
            marker = f.read().decode("utf-8", "replace")
        atomic.refuse_foreign(final, atomic.foreign_files([p[len(final) + 1:] for p in old], marker, owned))
    tmp = FileSystems.join(parent, f".{base}.partial-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        staged = files_under(tmp)
        if old:
            FileSystems.delete(old)
        FileSystems.rename(staged, [final + s[len(tmp):] for s in staged])
        listed = atomic.marker_text([s[len(tmp) + 1:] for s in staged]).encode("utf-8")
        write_any(FileSystems.join(final, atomic.MARKER), listed)
    except BaseException:
        with contextlib.suppress(Exception):
            FileSystems.delete(files_under(tmp))
        raise


def _exists_prefix(path: str) -> bool:
    with contextlib.suppress(Exception):
        return bool(files_under(path))
    return False
