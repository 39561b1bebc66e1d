"""Pretrained checkpoints from the TF2 Detection Zoo: download, or import a file fetched by hand.

    medtfod pretrained get ssd_mobilenet_v2_fpnlite_320 [--workspace workspace/demo]
    medtfod pretrained import ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.tar.gz [--workspace ...]

Both leave `<workspace>/pre-trained-models/<zoo name>/{checkpoint/ckpt-0.*, pipeline.config}`
and print the `--checkpoint` prefix for `medtfod config`. Without a network, `get` fails
at once with the URL and the `import` command to use after fetching the file elsewhere.
Archives are unpacked with tarfile's 'data' filter: no absolute paths, no links out of the
folder, no device files.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from typing import Dict

from .errors import UserError
from .progress import progress

ZOO_URL = "http://download.tensorflow.org/models/object_detection/tf2/20200711/{name}.tar.gz"

# medtfod model name -> the zoo checkpoint whose architecture its template matches.
ZOO: Dict[str, str] = {
    "ssd_mobilenet_v2_fpnlite_320": "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8",
    "faster_rcnn_resnet50_v1_640": "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8",
    "mask_rcnn_inception_resnet_v2_1024": "mask_rcnn_inception_resnet_v2_1024x1024_coco17_gpu-8",
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


def _check_layout(folder: str, source: str) -> None:
    if not os.path.isfile(checkpoint_prefix(folder) + ".index"):
        raise UserError(f"{source} is not a TF2 zoo checkpoint: expected <name>/checkpoint/ckpt-0.index "
                        "and <name>/pipeline.config inside")


def import_archive(path: str, workspace: str) -> str:
    """Install a zoo `.tar.gz` (or an unpacked zoo folder) into `<workspace>/pre-trained-models/`.

    Returns the installed folder. The archive is unpacked aside and moved into place only
    when it has the zoo layout.
    """
    target_root = os.path.join(workspace, "pre-trained-models")
    os.makedirs(target_root, exist_ok=True)
    if os.path.isdir(path):
        _check_layout(path, path)
        name = os.path.basename(os.path.normpath(path))
        final = os.path.join(target_root, name)
        if os.path.abspath(final) != os.path.abspath(path):
            tmp = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target_root)
            shutil.copytree(path, os.path.join(tmp, name))
            _move_into_place(os.path.join(tmp, name), final)
            shutil.rmtree(tmp, ignore_errors=True)
        return final
    if not os.path.isfile(path):
        raise UserError(f"file not found: {path}")
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


def download(model: str, workspace: str, quiet: bool = False, timeout: float = 30.0) -> str:
    """Download the zoo checkpoint for `model` and install it (see `import_archive`)."""
    name = zoo_name(model)
    url = ZOO_URL.format(name=name)
    target_root = os.path.join(workspace, "pre-trained-models")
    os.makedirs(target_root, exist_ok=True)
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
    os.replace(partial, archive)
    return import_archive(archive, workspace)
