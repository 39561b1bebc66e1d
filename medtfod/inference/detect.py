"""Batch detection with an exported SavedModel: drawn copies and machine-readable detections.

Input: a folder (recursive), a `.txt` list of image paths, or a split of a converted
dataset (`--dataset DIR --split val`, which also overlays the ground truth). PNG, JPEG and
DICOM. Decoding and drawing run in threads around the model, so the model is never
waiting for a file; a corrupt image is reported and skipped.

The SavedModel (`image_tensor` input) takes uint8 `[1, H, W, 3]`; grayscale images are
replicated to three channels, as in training. Its boxes are the OD API's normalized
`(ymin, xmin, ymax, xmax)`; they are converted once, here, to pixel `Box`es. Outputs:

    detections.csv     image,label,score,xmin,ymin,xmax,ymax   (pixels, top-left origin)
    detections.json    the same plus normalized boxes (and Mask R-CNN masks as COCO RLE), per image
    coco_results.json  COCO results (image ids from the dataset's COCO file when given;
                       `segmentation` RLE for Mask R-CNN)
    images.csv         one row per input image: detections, max score per class, finding
    <image>            drawn copies at the same relative paths (DICOM drawn as .png)

The score threshold is the caller's, else the operating point `medtfod calibrate` stored in
the export folder, else DEFAULT_MIN_SCORE.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core import atomic, fence
from . import ensemble
from ..core.annotations import Detection
from ..core.boxes import Box
from .draw import draw_boxes
from ..core.errors import UserError
from ..core.fence import safe_names
from ..core.images import IMAGE_EXTENSIONS
from ..core.labelmap import read_label_map
from ..core.masks import Mask, paste_box_mask
from ..core.progress import progress
from ..data.readers.detections import CSV_COLUMNS

DEFAULT_MIN_SCORE = 0.5
# A `--min-score 0` run keeps up to 100 boxes per image, so its lowest scores are near 0; a table
# whose lowest score is this high was cut by a threshold (SSD's weakest of 100 scores: ~0.001).
THRESHOLDED_BELOW = 0.05


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
        return list(zip(safe_names(paths), paths)), None, fenced
    if not images:
        raise UserError("give --images (a folder or a .txt list) or --dataset with --split")
    return [(name, os.path.join(images, name)) for name in list_images(images)], None, {"--images": images}


def export_dir(model: str) -> str:
    """The export folder of `model` (the folder or its saved_model/), where the label map and
    the operating point live."""
    return os.path.dirname(saved_model_dir(model).rstrip("/\\"))


def saved_model_dir(model: str) -> str:
    for candidate in (os.path.join(model, "saved_model"), model):
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise UserError(f"no SavedModel in {model} (expected saved_model/saved_model.pb); run medtfod export")


def _load(path):
    """PIL RGB image of a PNG/JPEG/DICOM file (or of the bytes a loader returns), or the error message."""
    from PIL import Image
    try:
        if callable(path):
            path = io.BytesIO(path())
        elif path.lower().endswith(".dcm"):
            from ..core.dicom import dicom_to_png
            path = io.BytesIO(dicom_to_png(path)[0])
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            rgb.info["channels"] = 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3  # as labelImg's depth
            return rgb, None
    except Exception as e:  # any unreadable file is reported, never ends the batch
        return None, f"{type(e).__name__}: {e}"


def _mask_overlay(image, bitmaps, colours):
    """Blend whole-image instance bitmaps (`masks.paste_box_mask`) into `image`."""
    from PIL import Image
    out = np.asarray(image).astype(np.float32)
    for sel, colour in zip(bitmaps, colours):
        out[sel] = 0.55 * out[sel] + 0.45 * np.array(colour, np.float32)
    return Image.fromarray(out.astype(np.uint8))


def _finish(image, name, found, gt_boxes, masks, out, draw: bool, class_ids, draw_format=None) -> list:
    """Worker-thread work for one image: paste each box-relative mask onto the image once, for
    its COCO RLE (returned, one per detection; None without masks) and the overlay; draw and
    save the copy when `draw`."""
    bitmaps = [] if masks is None else [paste_box_mask(m, f.box, *image.size) for m, f in zip(masks, found)]
    rles = []
    for bitmap in bitmaps:
        (h, w), counts = Mask.from_bitmap(bitmap).rle
        rles.append({"size": [h, w], "counts": counts})
    if draw:
        _draw_and_save(image, name, found, gt_boxes, bitmaps, out, class_ids, draw_format)
    return rles or [None] * len(found)


def model_input(detect_fn, batch_size: int) -> Tuple[int, type]:
    """(images per model call, pixel dtype) for a loaded SavedModel: `batch_size` float32 images
    for a `float_image_tensor` export (signature `[None, H, W, 3]`), one uint8 image for the
    default `image_tensor` export (fixed at `[1, H, W, 3]`).

    Raises UserError for exports that take encoded strings or tf.Examples.
    """
    signature = getattr(detect_fn, "signatures", {}).get("serving_default")
    if signature is None:  # a plain function (tests): one uint8 image at a time
        return 1, np.uint8
    spec = next(iter(signature.structured_input_signature[1].values()))
    if spec.shape.rank != 4 or spec.dtype.name not in ("uint8", "float32"):
        raise UserError(f"detect runs image_tensor or float_image_tensor exports; this one takes {spec.dtype.name} "
                        f"{spec.shape} (export again without --input-type, or with float_image_tensor)")
    dtype = np.float32 if spec.dtype.name == "float32" else np.uint8
    return (max(1, batch_size) if spec.shape[0] is None else 1), dtype


def _keep(result, j: int, name: str, size, label_map, min_score: float, classes, max_per_image: int):
    """`Detection`s of image j (`name`) of a batch result that pass the filters, and their
    indices in the result."""
    w, h = size
    n = int(result["num_detections"][j])
    found, keep = [], []
    for k, (yxyx, score, cls) in enumerate(zip(result["detection_boxes"][j][:n], result["detection_scores"][j][:n],
                                               result["detection_classes"][j][:n])):
        label = label_map.name_of(int(cls))
        score = round(float(score), 6)  # as detections.csv writes it, so a threshold read from it means the same
        if score < min_score or (classes and label not in classes) or len(found) >= max_per_image:
            continue
        found.append(Detection(name, label, score, Box.from_normalized_yxyx(yxyx, w, h)))
        keep.append(k)
    return found, keep


def _top_score(result, j: int, label_map, classes) -> float:
    """The highest score of image j's detections (of `classes`), before any threshold."""
    n = int(result["num_detections"][j])
    scores = [round(float(score), 6) for score, cls in zip(result["detection_scores"][j][:n],
                                                            result["detection_classes"][j][:n])
              if not classes or label_map.name_of(int(cls)) in classes]
    return max(scores, default=0.0)


def drawn_name(name: str, draw_format: Optional[str] = None) -> str:
    """Where the drawn copy of input `name` goes: the same relative path, as PNG (DICOM too) or
    JPEG (a JPEG input) by default, else with the extension of `draw_format`."""
    stem, ext = os.path.splitext(name)
    if draw_format is None:
        return name if ext.lower() in (".jpg", ".jpeg", ".png") else stem + ".png"
    if draw_format == "jpg" and ext.lower() in (".jpg", ".jpeg"):
        return name
    return stem + "." + draw_format


def check_drawn_names(names: Sequence[str], draw_format: Optional[str]) -> None:
    """Refuse, before any work, two inputs whose drawn copies would be one file (x.png and x.jpg
    with --draw-format jpg; names differing only in case, on Windows and macOS)."""
    seen = {}
    for name in names:
        key = drawn_name(name, draw_format).lower()
        if key in seen:
            raise UserError(f"{seen[key]} and {name} would both be drawn to {drawn_name(name, draw_format)}; "
                            "use --no-draw, another --draw-format, or separate runs")
        seen[key] = name


def _draw_and_save(image, name, found, gt_boxes, bitmaps, out, class_ids, draw_format=None):
    from .draw import colour
    if bitmaps:
        image = _mask_overlay(image, bitmaps, [colour(class_ids[f.label]) for f in found])
    drawn = draw_boxes(image, found, class_ids, ground_truth=gt_boxes)
    target = drawn_name(name, draw_format)
    is_jpeg = target.lower().endswith((".jpg", ".jpeg"))
    buffer = io.BytesIO()
    # JPEG q90 encodes a 256-px copy in ~0.25 ms; PNG at compression level 1 (a few % larger than
    # the default 6, several times faster) still takes ~4 ms, most of detect's non-model work
    drawn.save(buffer, format="JPEG" if is_jpeg else "PNG", **({"quality": 90} if is_jpeg else {"compress_level": 1}))
    atomic.write_file(fence.inside(out, target), buffer.getvalue())


def split_detections(model: str, dataset: str, split: str, gt, detections: Optional[str] = None,
                     quiet: bool = False) -> list:
    """Every detection the model makes on a dataset split (score >= 0), read from `detections`
    (a detections.csv of that split) or made now without drawing; a `UserError` when a detection
    is on an image outside the split's ground truth `gt`."""
    import tempfile

    from ..data.readers.detections import read_detections_csv
    with tempfile.TemporaryDirectory(prefix="medtfod-split-") as tmp:
        csv_path = detections
        if not csv_path:  # the tables are all the caller needs
            detect(model, None, tmp, min_score=0.0, quiet=quiet, dataset=dataset, split=split, draw=False)
            csv_path = os.path.join(tmp, "detections.csv")
        dets = read_detections_csv(csv_path)
    unknown = sorted({d.image for d in dets} - set(gt))
    if unknown:
        raise UserError(f"{len(unknown)} images in the detections are not in the {split} split of "
                        f"{dataset}, e.g. {unknown[0]!r}")
    lowest = min((d.score for d in dets), default=0.0)
    if detections and lowest >= THRESHOLDED_BELOW:
        print(f"warning: {detections}: its lowest score is {lowest:g}; a table made with a threshold (--min-score "
              f"{lowest:g} or so) gives lower AP and a shorter FROC than the model's: for curves, AP and calibration "
              "run detect with --min-score 0, or leave --detections out", flush=True)  # stdout: stderr may go to the log
    return dets


def resolve_min_score(model: str, min_score: Optional[float], fused: bool = False) -> Tuple[float, str]:
    """The threshold to use and where it came from: the caller's, else the operating point
    `medtfod calibrate` stored in the export folder, else DEFAULT_MIN_SCORE. A `fused` score
    (several models or TTA views) has no operating point: a calibration belongs to one model's
    own scores."""
    from ..evaluation.calibrate import describe, read_operating_point
    if min_score is not None:
        return min_score, "--min-score"
    if fused:
        return DEFAULT_MIN_SCORE, "the default (a fused score has no calibration yet)"
    point = read_operating_point(export_dir(model))
    if point:
        return float(point["min_score"]), f"the calibrated operating point ({describe(point)})"
    return DEFAULT_MIN_SCORE, "the default (run medtfod calibrate to choose one for your data)"


def detect(model: Union[str, Sequence[str]], images: Optional[str], out: str, min_score: Optional[float] = None,
           label_map_path: Optional[str] = None, quiet: bool = False, max_per_image: int = 100,
           classes: Optional[Sequence[str]] = None, dataset: Optional[str] = None,
           split: Optional[str] = None, workers: int = 2, detect_fn=None, batch_size: int = 8,
           draw: bool = True, annotations: Optional[str] = None, annotations_out: Optional[str] = None,
           fuse: Optional[str] = None, fuse_iou: Optional[float] = None, tta: Sequence[str] = (),
           draw_format: Optional[str] = None, detect_fns: Optional[Sequence] = None) -> dict:
    """Run the exported model on every input image and write the outputs listed above.

    `detect_fn` is the loaded SavedModel when the caller has it already (benchmarks, loops
    over folders); by default it is loaded from `model`. `batch_size` images of one size go
    through the model per call when the export accepts batches (see `model_input`). With
    `draw` False no drawn copies are written (the tables only; PNG encoding is most of the
    per-image work besides the model).

    Returns {'images': n, 'detections': n, 'skipped': [(image, reason)], 'min_score': x,
    'batch': images per model call}.
    """
    models = [model] if isinstance(model, str) else list(model)
    model = models[0]
    views = len(models) * (1 + len(tta))
    if views > 1:
        fuse = fuse or "wbf"
        fuse_iou = fuse_iou or ensemble.default_iou([export_dir(m) for m in models])
    unknown_tta = [t for t in tta if t not in ensemble.TTA]
    if unknown_tta:
        raise UserError(f"--tta {unknown_tta[0]!r}: choose from {', '.join(ensemble.TTA)}")
    saved_models = [saved_model_dir(m) for m in models]
    min_score, _source = resolve_min_score(model, min_score, fused=views > 1)
    label_map_path = label_map_path or os.path.join(export_dir(model), "label_map.pbtxt")
    label_map = read_label_map(label_map_path)
    if len(models) > 1:
        ensemble.check_label_maps(models, [read_label_map(os.path.join(export_dir(m), "label_map.pbtxt"))
                                           for m in models])
    unknown = [c for c in classes or () if c not in label_map.ids]
    if unknown:
        raise UserError(f"--classes: {', '.join(unknown)} not in the label map ({', '.join(label_map.names)})")
    inputs, gt, fenced = resolve_inputs(images, dataset, split)
    if annotations and not annotations_out:
        raise UserError("--annotations needs --annotations-out (the folder the annotation tool will open)")
    if annotations_out and not annotations:
        raise UserError("--annotations-out needs --annotations voc|labelstudio|coco (the format to write)")
    fence.need_folder("--out", out)
    fence.check_outputs({"--out": out, "--annotations-out": annotations_out},
                        dict(fenced, **{("--model" if i == 0 else f"--model (#{i + 1})"): m for i, m in enumerate(models)}))
    if not inputs:
        raise UserError(f"no PNG, JPEG or DICOM images under {images}")
    if annotations:
        from . import preannotate
        names = [name for name, _ in inputs]
        preannotate.check_names(annotations, names)
        preannotate.check_replaceable(annotations_out, preannotate.planned_files(annotations, names))
    if draw:
        check_drawn_names([name for name, _ in inputs], draw_format)
    from ..odapi.runtime import import_tensorflow
    tf = import_tensorflow(verbose=False)
    if detect_fns is None:  # loaded SavedModels the caller already has (benchmarks, loops over folders)
        detect_fns = [detect_fn] if detect_fn is not None else [tf.saved_model.load(path) for path in saved_models]
    os.makedirs(out, exist_ok=True)
    inputs_of = [model_input(fn, batch_size) for fn in detect_fns]
    capacity = min(c for c, _ in inputs_of)
    rows, skipped, pending, batch = [], [], [], []  # pending: (name, size, found, future of its mask RLEs)
    per_image = [None] * len(inputs)  # filled in input order, whatever order batches finish in
    tops = [None] * len(inputs)  # with annotations: (width, height, top score before the threshold, channels)
    bar = progress(total=len(inputs), desc="detect", unit="img", quiet=quiet)

    def run_batch():
        """One model call on the loaded images in `batch` (all the same size), then queue each
        image's masks and drawing to the workers."""
        pixels = np.stack([np.asarray(image) for _, _, image in batch])
        results = []
        for fn, (_, dtype) in zip(detect_fns, inputs_of):
            results.append({k: v.numpy() for k, v in fn(tf.constant(pixels.astype(dtype, copy=False))).items()})
            if "hflip" in tta:
                flipped = fn(tf.constant(np.ascontiguousarray(pixels[:, :, ::-1]).astype(dtype, copy=False)))
                results.append(ensemble.hflip_back({k: v.numpy() for k, v in flipped.items()}))
        result = results[0] if len(results) == 1 else ensemble.fuse(results, fuse, fuse_iou, max_per_image)
        for j, (index, name, image) in enumerate(batch):
            found, keep = _keep(result, j, name, image.size, label_map, min_score, classes, max_per_image)
            masks = result["detection_masks"][j][keep] if "detection_masks" in result else None
            gt_boxes = [(label, box) for label, box in gt.get(name, [])] if gt else None
            pending.append((name, image.size, found,
                            pool.submit(_finish, image, name, found, gt_boxes, masks, out, draw, label_map.ids,
                                        draw_format)))
            per_image[index] = (name, found, None)
            if annotations:  # what the pre-annotations and their queue need besides the kept boxes
                tops[index] = (*image.size, _top_score(result, j, label_map, classes), image.info.get("channels", 3))
        bar.update(len(batch))
        batch.clear()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ahead = max(4, 2 * capacity)  # decodes kept running ahead of the model
        loads = [pool.submit(_load, path) for _, path in inputs[:ahead]]
        for i, (name, _path) in enumerate(inputs):
            if i + ahead < len(inputs):
                loads.append(pool.submit(_load, inputs[i + ahead][1]))
            image, error = loads[i].result()
            loads[i] = None
            if image is None:
                skipped.append((name, error))
                per_image[i] = (name, None, error)
                bar.update(1)
                continue
            if batch and batch[0][2].size != image.size:  # a batch holds one image size
                run_batch()
            batch.append((i, name, image))
            if len(batch) == capacity:
                run_batch()
        if batch:
            run_batch()
        for name, size, found, future in pending:  # in input order
            rows.extend((detection, size, rle) for detection, rle in zip(found, future.result()))
    bar.close()
    _write_outputs(out, rows, per_image, label_map, dataset, split)
    if annotations:
        from . import preannotate
        done = [preannotate.Predicted(name, "" if callable(path) else path, *tops[i][:2], per_image[i][1], tops[i][2],
                                      tops[i][3])
                for i, (name, path) in enumerate(inputs) if tops[i] is not None]
        preannotate.write(annotations, annotations_out, done, label_map, min_score,
                          model_version=os.path.basename(os.path.abspath(export_dir(model))))
    for name, reason in skipped:
        print(f"skipped {name}: {reason}")
    return {"images": len(inputs), "detections": len(rows), "skipped": skipped, "min_score": min_score,
            "batch": capacity}


def _write_outputs(out, rows, per_image, label_map, dataset, split) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for (name, label, score, box), _size, _mask in rows:
        writer.writerow((name, label, f"{score:.6f}", f"{box.xmin:.2f}", f"{box.ymin:.2f}",
                         f"{box.xmax:.2f}", f"{box.ymax:.2f}"))
    atomic.write_file(os.path.join(out, "detections.csv"), text.getvalue())

    by_image = {}
    for (name, label, score, box), (w, h), mask in rows:
        by_image.setdefault(name, []).append({
            "label": label, "score": round(score, 6),
            "box": [round(v, 2) for v in (box.xmin, box.ymin, box.xmax, box.ymax)],
            "box_normalized_yxyx": [round(v, 6) for v in box.to_normalized_yxyx(w, h)],
            **({"mask": mask} if mask else {})})
    images = [{"image": name, "error": error, "detections": by_image.get(name, [])} for name, _f, error in per_image]
    atomic.write_file(os.path.join(out, "detections.json"), json.dumps({"images": images}, indent=1) + "\n")

    ids = {name: i for i, (name, _f, _e) in enumerate(per_image, start=1)}
    if dataset:
        with open(os.path.join(dataset, "coco", f"{split}.json"), encoding="utf-8") as f:
            ids.update({im["file_name"]: im["id"] for im in json.load(f)["images"]})
    results = [{"image_id": ids[name], "category_id": label_map.ids[label], "score": round(score, 6),
                "bbox": [round(v, 2) for v in box.to_xywh()], **({"segmentation": mask} if mask else {})}
               for (name, label, score, box), _, mask in rows]
    atomic.write_file(os.path.join(out, "coco_results.json"), json.dumps(results) + "\n")

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "detections"] + [f"max_score_{n}" for n in label_map.names] + ["finding"])
    for name, found, error in per_image:
        if found is None:
            writer.writerow([name, ""] + [""] * len(label_map.names) + [f"unreadable: {error}"])
            continue
        best = {n: max((f.score for f in found if f.label == n), default=0.0) for n in label_map.names}
        finding = "|".join(sorted({f.label for f in found})) or "no finding"
        writer.writerow([name, len(found)] + [f"{best[n]:.6f}" for n in label_map.names] + [finding])
    atomic.write_file(os.path.join(out, "images.csv"), text.getvalue())
