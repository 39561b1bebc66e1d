"""What `detect` runs on: a folder (recursive), a `.txt` list of image paths, or a split of a
converted dataset, each image given a safe relative output name; and how one image is loaded.

A multi-frame DICOM file is one input per frame, `scan.dcm#0`, `scan.dcm#1`, ... (`core.frames`,
`expand_frames`). DICOM and 16-bit grey PNG/TIFF files (and uint16 arrays) are windowed as the
training data was (`load_image`'s `window`, a `core.windowing.Window`): the same functions convert
uses turn them into 8-bit pixels, so training and inference see the same pixels."""
from __future__ import annotations

import functools
import io
import os
from typing import List, Optional, Tuple

import numpy as np

from ..core.deep_images import to_8bit
from ..core.errors import UserError
from ..core.fence import safe_names
from ..core.images import IMAGE_EXTENSIONS


def list_images(root: str) -> List[str]:
    """Image files under `root`, recursively, as sorted paths relative to `root`."""
    if not os.path.isdir(root):
        raise UserError(f"image folder not found: {root}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace("\\", "/"))
    return found


def resolve_inputs(images: Optional[str], dataset: Optional[str] = None, split: Optional[str] = None):
    """The images to run on, as ([(output name, path or bytes loader)], ground truth or None,
    {option: input folder or file} that outputs must stay clear of).

    Output names are safe relative paths: a folder's images keep their paths below it; a list
    file's paths lose the folder they all share (`fence.safe_names`); a dataset's images are
    named as in its manifest and read from its own TFRecords, so a moved dataset still works.
    """
    if dataset:
        from ..data import manifest
        from ..data.readers.detections import read_ground_truth
        data = manifest.load(dataset)
        gt = read_ground_truth(dataset, split)
        entries = sorted(data.split(split), key=lambda e: e.name)
        return [(e.name, functools.partial(data.image_bytes, e)) for e in entries], gt, {"--dataset": dataset}
    if images and os.path.isfile(images):  # a list file: one path per line
        base = os.path.dirname(os.path.abspath(images))
        with open(images, encoding="utf-8") as f:
            listed = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        paths = [p if os.path.isabs(p) else os.path.join(base, p) for p in listed]
        fenced = {"--images": images}
        fenced.update({f"(listed image {p})": p for p in paths})  # --out may not be or hold a listed image
        return expand_frames(list(zip(safe_names(paths), paths))), None, fenced
    if not images:
        raise UserError("give --images (a folder or a .txt list) or --dataset with --split")
    return expand_frames([(name, os.path.join(images, name)) for name in list_images(images)]), None, \
        {"--images": images}


def expand_frames(inputs):
    """[(name, source)] with each multi-frame DICOM path replaced by its frames, in order:
    ('scan.dcm#k', 'PATH/scan.dcm#k') for k from 0 (`core.frames`). Only the header is read; a
    file that cannot be read stays as it is, and is reported when it is loaded."""
    from ..core.dicom import frame_count
    from ..core.frames import frame_name, split_frame
    from ..core.image_info import ImageError
    out = []
    for name, source in inputs:
        if isinstance(source, str) and source.lower().endswith(".dcm") and split_frame(source)[1] is None:
            try:
                frames = frame_count(source)
            except (ImageError, OSError):
                frames = 1
            if frames > 1:
                out.extend((frame_name(name, k), frame_name(source, k)) for k in range(frames))
                continue
        out.append((name, source))
    return out


def _windowed(image, window):
    """A 16-bit (or float) grey PIL image windowed to 8 bits as convert does (`core.windowing`), when
    `window` is given and is not plain 'header'; else `to_8bit`'s high byte (what TensorFlow reads
    from a 16-bit PNG passed through by a 'header' conversion)."""
    from PIL import Image

    from ..core.deep_images import DEEP_MODES
    from ..core.windowing import apply_window
    if window is None or window.is_default or image.mode not in DEEP_MODES:
        return to_8bit(image)
    pixels = apply_window(np.asarray(image), window)
    return Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")


def _file_source(source, window):
    """What to decode for a path or a loader: DICOM (`scan.dcm#k`: frame k) and TIFF turned into
    8-bit PNG bytes under `window` by convert's own functions; other files as they are (a path is
    left to Pillow, so that its errors name the file)."""
    from ..core.deep_images import deep_to_png, is_tiff
    from ..core.dicom import dicom_to_png
    from ..core.frames import split_frame
    if callable(source):
        data = source()
        return io.BytesIO(deep_to_png(data, window)[0] if is_tiff(data) else data)
    file, frame = split_frame(source)
    if file.lower().endswith(".dcm"):
        return io.BytesIO(dicom_to_png(file, window, frame)[0])
    if source.lower().endswith((".tif", ".tiff")):
        with open(source, "rb") as f:
            return io.BytesIO(deep_to_png(f.read(), window)[0])
    return source


def load_image(source, window=None) -> Tuple[Optional[object], Optional[str]]:
    """(PIL RGB image, None) of a PNG/JPEG/TIFF/DICOM path (`scan.dcm#k`: frame k), the bytes a
    loader returns, a numpy array or a PIL image; (None, the error message) when it cannot be read.
    The image's `info['channels']` is 1 for a grayscale source (as labelImg's depth), else 3.

    `window` (a `core.windowing.Window`; None: 'header') is applied to DICOM and to 16-bit grey
    images, as convert applied it; under 'header' 16-bit grayscale keeps its high byte (`to_8bit`)."""
    from PIL import Image
    grey = ("1", "L", "LA", "I", "I;16", "F")
    try:
        if isinstance(source, np.ndarray):
            if source.dtype not in (np.uint8, np.uint16) or source.ndim not in (2, 3) or (
                    source.ndim == 3 and (source.shape[2] != 3 or source.dtype != np.uint8)):
                raise ValueError(f"an image array must be uint8 (H, W) or (H, W, 3), or uint16 (H, W), not "
                                 f"{source.dtype} {source.shape}")
            source = Image.fromarray(source)
        if isinstance(source, Image.Image):
            rgb = _windowed(source, window).convert("RGB")
            rgb.info["channels"] = 1 if source.mode in grey else 3
            return rgb, None
        with Image.open(_file_source(source, window)) as im:
            rgb = _windowed(im, window).convert("RGB")
            rgb.info["channels"] = 1 if im.mode in grey else 3  # as labelImg's depth
            return rgb, None
    except Exception as e:  # any unreadable file is reported, never ends the batch
        return None, f"{type(e).__name__}: {e}"


def predict_inputs(images, split: Optional[str] = None):
    """([(name, source)], ground truth or None, {what: input path} that outputs must stay clear of)
    for what `ExportedModel.predict` accepts: a Dataset (or a dataset folder) with a split; an
    image file, a folder (recursive) or a .txt list; one numpy array, PIL image or encoded bytes;
    or a list of those. Paths in a list are named as a .txt list's are (`fence.safe_names`),
    arrays and PIL images `image<k>.png`.

    Raises:
      UserError: a split for something that is not a dataset, a dataset without one, a path that
        does not exist.
    """
    from PIL import Image

    from ..data.dataset import Dataset
    from ..data.manifest import MANIFEST
    if isinstance(images, (str, os.PathLike)) and os.path.isfile(os.path.join(os.fspath(images), MANIFEST)):
        images = Dataset(os.fspath(images))
    if isinstance(images, Dataset):
        if split is None:
            raise UserError(f"predict on a dataset needs split= (one of {', '.join(images.splits)})")
        return resolve_inputs(None, images.path, split)
    if split is not None:
        raise UserError(f"split={split!r} is for a dataset (medtfod.Dataset or a `medtfod convert` folder); "
                        f"{images!r} is not one" if isinstance(images, (str, os.PathLike)) else
                        f"split={split!r} is for a dataset (medtfod.Dataset), not for images")
    if isinstance(images, (str, os.PathLike)):
        path = os.fspath(images)
        if not os.path.exists(path):
            raise UserError(f"no such image file or folder: {path}")
        if os.path.isfile(path) and not path.lower().endswith(".txt"):
            return expand_frames([(os.path.basename(path), path)]), None, {"the image": path}
        names, _, fenced = resolve_inputs(path)
        return names, None, {k.lstrip("-"): v for k, v in fenced.items()}
    if isinstance(images, np.ndarray) and images.ndim == 4:  # a batch [N, H, W, C]
        images = list(images)
    if isinstance(images, (np.ndarray, Image.Image, bytes)):
        images = [images]
    items = [item if not isinstance(item, bytes) else (lambda data=item: data) for item in images]
    paths = [os.fspath(i) for i in items if isinstance(i, (str, os.PathLike))]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f"no such image file: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1
                                                               else ""))
    if paths and len(paths) == len(items):
        return expand_frames(list(zip(safe_names(paths), paths))), None, {f"image {p}": p for p in paths}
    names = [os.path.basename(os.fspath(i)) if isinstance(i, (str, os.PathLike)) else f"image{k}.png"
             for k, i in enumerate(items)]
    return list(zip(safe_names(names), [os.fspath(i) if isinstance(i, os.PathLike) else i for i in items])), None, \
        {f"image {p}": p for p in paths}
