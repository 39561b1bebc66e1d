"""Pretrained checkpoints from the TF2 Detection Zoo: download, or import a file fetched by hand.

    medtfod pretrained get ssd_mobilenet_v2_fpnlite_320 [--workspace workspace/demo]
    medtfod pretrained import ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.tar.gz [--workspace ...]

Both leave `<workspace>/pre-trained-models/<zoo name>/{checkpoint/ckpt-0.*, pipeline.config}`
and print the `--checkpoint` prefix for `medtfod config`. Without a network, `get` fails
at once with the URL and the `import` command to use after fetching the file elsewhere.
Archives are unpacked with tarfile's 'data' filter: no absolute paths, no links out of the
folder, no device files.

Downloads use https. Both commands print the archive's sha256 and, given `--sha256`, refuse an
archive whose digest differs before unpacking anything. `MEDTFOD_ZOO_URL` points `get` at a
mirror (e.g. a hospital's internal copy): a URL with `{name}` where the zoo name goes.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from typing import Dict

from ..core.errors import UserError
from ..core.progress import progress

ZOO_URL = "https://download.tensorflow.org/models/object_detection/tf2/20200711/{name}.tar.gz"
MIRROR_ENV = "MEDTFOD_ZOO_URL"

# medtfod model name -> the zoo checkpoint whose architecture its template matches.
ZOO: Dict[str, str] = {
    "ssd_mobilenet_v2_fpnlite_320": "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8",
    "faster_rcnn_resnet50_v1_640": "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8",
    "mask_rcnn_inception_resnet_v2_1024": "mask_rcnn_inception_resnet_v2_1024x1024_coco17_gpu-8",
    "retinanet_resnet50_v1_fpn_640": "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8",
    "centernet_resnet50_v1_fpn_512": "centernet_resnet50_v1_fpn_512x512_coco17_tpu-8",
}


def zoo_name(model: str) -> str:
    if model in ZOO:
        return ZOO[model]
    if model in ZOO.values():
        return model
    raise UserError(f"no zoo checkpoint for {model!r}; available: {', '.join(ZOO)} "
                    "(mask_rcnn_resnet50_v1_640 has none in the zoo: fine-tune it from "
                    "faster_rcnn_resnet50_v1_640's checkpoint)")


def checkpoint_prefix(folder: str) -> str:
    return os.path.join(folder, "checkpoint", "ckpt-0")


def zoo_url(name: str) -> str:
    """The download URL of zoo checkpoint `name` ($MEDTFOD_ZOO_URL when set, else the TF2 zoo)."""
    template = os.environ.get(MIRROR_ENV) or ZOO_URL
    if "{name}" not in template:
        raise UserError(f"${MIRROR_ENV} must contain {{name}} where the zoo name goes, e.g. "
                        f"https://mirror.example/zoo/{{name}}.tar.gz (value: {template!r})")
    return template.format(name=name)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: str, expected) -> str:
    """The sha256 of file `path`, printed; a `UserError` when `expected` is given and differs."""
    actual = sha256_of(path)
    print(f"sha256 {actual}  {os.path.basename(path)}")
    if expected and actual != expected.strip().lower():
        raise UserError(f"{path}: sha256 is {actual}, expected {expected.strip().lower()}; "
                        "the file is not the one you meant to install (nothing was unpacked)")
    return actual


def _check_layout(folder: str, source: str) -> None:
    if not os.path.isfile(checkpoint_prefix(folder) + ".index"):
        raise UserError(f"{source} is not a TF2 zoo checkpoint: expected <name>/checkpoint/ckpt-0.index "
                        "and <name>/pipeline.config inside")


@contextlib.contextmanager
def _target_root(workspace: str):
    """<workspace>/pre-trained-models/, made for the block and removed again when the block
    fails and leaves it empty (a refused archive leaves nothing behind)."""
    target_root = os.path.join(workspace, "pre-trained-models")
    existed = os.path.isdir(target_root)
    os.makedirs(target_root, exist_ok=True)
    try:
        yield target_root
    except BaseException:
        if not existed and not os.listdir(target_root):
            os.rmdir(target_root)
        raise


def import_archive(path: str, workspace: str, sha256=None) -> str:
    """Install a zoo `.tar.gz` (or an unpacked zoo folder) into `<workspace>/pre-trained-models/`.

    Returns the installed folder. The archive's sha256 is printed (and must equal `sha256` when
    given); it is unpacked aside and moved into place only when it has the zoo layout.
    """
    if sha256 and os.path.isdir(path):
        raise UserError(f"--sha256 checks an archive file; {path} is a folder")
    if not os.path.exists(path):
        raise UserError(f"file not found: {path}")
    if not os.path.isdir(path):
        check_sha256(path, sha256)
    with _target_root(workspace) as target_root:
        if not os.path.isdir(path):
            return _unpack(path, target_root)
        _check_layout(path, path)
        name = os.path.basename(os.path.normpath(path))
        final = os.path.join(target_root, name)
        if os.path.abspath(final) != os.path.abspath(path):
            tmp = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target_root)
            shutil.copytree(path, os.path.join(tmp, name))
            _move_into_place(os.path.join(tmp, name), final)
            shutil.rmtree(tmp, ignore_errors=True)
        return final


def _unpack(path: str, target_root: str) -> str:
    """Unpack zoo archive `path` aside in `target_root`, check its layout, move it into place."""
    if not hasattr(tarfile, "data_filter"):
        raise UserError("unpacking archives safely needs Python 3.11.4 or newer (tarfile's 'data' filter)")
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"{path} is not a readable .tar.gz archive ({e})") from None
    with archive, tempfile.TemporaryDirectory(prefix=".unpack-", dir=target_root) as tmp:
        try:
            archive.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise UserError(f"{path}: cannot unpack safely ({e})") from None
        entries = [e for e in os.listdir(tmp) if not e.startswith(".")]
        if len(entries) != 1 or not os.path.isdir(os.path.join(tmp, entries[0])):
            raise UserError(f"{path}: expected one top-level folder (the zoo layout), found {entries}")
        _check_layout(os.path.join(tmp, entries[0]), path)
        final = os.path.join(target_root, entries[0])
        _move_into_place(os.path.join(tmp, entries[0]), final)
    return final


def _move_into_place(src: str, final: str) -> None:
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(src, final)


def download(model: str, workspace: str, quiet: bool = False, timeout: float = 30.0, sha256=None) -> str:
    """Download the zoo checkpoint for `model` and install it (see `import_archive`)."""
    name = zoo_name(model)
    url = zoo_url(name)
    with _target_root(workspace) as target_root:
        return _fetch(url, name, target_root, workspace, quiet, timeout, sha256)


def _fetch(url, name, target_root, workspace, quiet, timeout, sha256) -> str:
    archive = os.path.join(target_root, f"{name}.tar.gz")
    manual = (f"download {url} on a machine with internet access, copy it here, then run:\n"
              f"  medtfod pretrained import {name}.tar.gz --workspace {workspace}")
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot download {url}: {reason}\n{manual}") from None
    partial = archive + ".part"
    with response, open(partial, "wb") as f:
        total = int(response.headers.get("Content-Length") or 0)
        bar = progress(total=total, desc=name, unit="B", quiet=quiet)
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            f.write(chunk)
            bar.update(len(chunk))
        bar.close()
    if total and os.path.getsize(partial) != total:
        os.unlink(partial)
        raise UserError(f"download of {url} was cut short; run the command again\n{manual}")
    try:
        check_sha256(partial, sha256)
    except UserError:
        os.unlink(partial)
        raise
    os.replace(partial, archive)
    return _unpack(archive, target_root)
