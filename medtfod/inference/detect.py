"""Batch detection with exported SavedModels: drawn copies and machine-readable detections.

Input: a folder (recursive), a `.txt` list of image paths, or a split of a converted
dataset (`--dataset DIR --split val`, which also overlays the ground truth). PNG, JPEG, TIFF and
DICOM (a multi-frame file: one image per frame, `scan.dcm#k`), DICOM and 16-bit images windowed
as the model's training data was (`predictor.Predictor.window`). Decoding and drawing run in
threads around the model (`predictor.Predictor`), so the model is never waiting for a file; a corrupt image is reported and skipped. The outputs are
listed in `outputs`.

The score threshold is the caller's, else the operating point `medtfod calibrate` stored in
the export folder, else `model.DEFAULT_MIN_SCORE`.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from ..core import fence
from ..core.errors import UserError
from ..core.progress import progress
from .dicom_results import DicomRequest, DicomWriter, algorithm_of, check_inputs, need_highdicom
from .inputs import resolve_inputs
from .model import ExportedModel
from .outputs import check_drawn_names, finish, write_tables
from .predictor import PredictOptions, Predictor

# A `--min-score 0` run keeps up to 100 boxes per image, so its lowest scores are near 0; a table
# whose lowest score is this high was cut by a threshold (SSD's weakest of 100 scores: ~0.001).
THRESHOLDED_BELOW = 0.05


@dataclass(frozen=True)
class DetectOutputs:
    """What `detect` writes besides the tables.

    Attributes:
      draw: write a drawn copy of each image (PNG encoding is most of the per-image work
        besides the model).
      draw_format: None (PNG, JPEG for JPEG inputs), 'png' or 'jpg'.
      annotations: 'voc', 'labelstudio' or 'coco': also write the kept detections as
        pre-annotations to correct ...
      annotations_out: ... into this folder.
      quiet: no progress bar.
      dicom_sr: also write a TID 1500 SR per DICOM input into `out/dicom_sr/` (`dicom_results`).
      dicom_overlay: also write the drawn copy of each DICOM input as a Secondary Capture into
        `out/dicom_overlay/`.
      dicom_codes: a CSV (label,scheme,code,meaning) of the SR's finding code per class (default:
        the local code 99MEDTFOD with the class name).
    """

    draw: bool = True
    draw_format: Optional[str] = None
    annotations: Optional[str] = None
    annotations_out: Optional[str] = None
    quiet: bool = False
    dicom_sr: bool = False
    dicom_overlay: bool = False
    dicom_codes: Optional[str] = None


RERUN_MARKER = ".medtfod-detect"  # what the last run wrote into --out (`core.rerun`)


def detect(model: Union[str, Sequence[str]], out: str, *, images: Optional[str] = None, dataset: Optional[str] = None,
           split: Optional[str] = None, options: Optional[PredictOptions] = None,
           outputs: Optional[DetectOutputs] = None, detect_fns=None) -> dict:
    """Run the exported model(s) on every input image and write the outputs into `out`.

    Args:
      model: an export folder, or several (an ensemble, fused per `options.fuse`); with
        `options.runtime` 'onnx', or a model.onnx path, its model.onnx runs on ONNX Runtime.
      out: the output folder.
      images: a folder or a .txt list of paths; or `dataset` and `split`, a converted dataset's split.
      options: `PredictOptions` (threshold, classes, batch size, TTA, fusion, ...).
      outputs: `DetectOutputs` (drawing, pre-annotations, progress).
      detect_fns: the loaded SavedModels when the caller has them already (benchmarks, loops
        over folders); by default they are loaded from `model`.

    Returns {'images': n, 'detections': n, 'skipped': [(image, reason)], 'min_score': x,
    'batch': images per model call, 'window': the grey window applied to DICOM and 16-bit inputs
    and where it came from, 'dicom': {'written': n, 'skipped': [(image, reason)]} (with
    DICOM results)}.
    """
    options = options or PredictOptions()
    outputs = outputs or DetectOutputs()
    paths = [model] if isinstance(model, str) else list(model)
    predictor = Predictor([ExportedModel(m, options.runtime) for m in paths], options, detect_fns=detect_fns)
    if predictor.window_warning:
        print(f"warning: {predictor.window_warning}", flush=True)  # stdout, as detect's other notes
    inputs, gt, fenced = resolve_inputs(images, dataset, split)
    annotations, annotations_out = outputs.annotations, outputs.annotations_out
    if annotations and not annotations_out:
        raise UserError("--annotations needs --annotations-out (the folder the annotation tool will open)")
    if annotations_out and not annotations:
        raise UserError("--annotations-out needs --annotations voc|labelstudio|coco (the format to write)")
    fence.need_folder("--out", out)
    fence.check_outputs({"--out": out, "--annotations-out": annotations_out},
                        dict(fenced, **{("--model" if i == 0 else f"--model (#{i + 1})"): m for i, m in enumerate(paths)},
                             **{"--dicom-codes": outputs.dicom_codes}))
    if not inputs:
        raise UserError(f"no PNG, JPEG, TIFF or DICOM images under {images}")
    dicom = DicomRequest(outputs.dicom_sr, outputs.dicom_overlay, outputs.dicom_codes)
    if outputs.dicom_codes and not dicom.sr:
        raise UserError("--dicom-codes gives the SR's finding codes: add --dicom-sr")
    writer = None
    if dicom.wanted:
        need_highdicom()
        check_inputs(inputs, dataset, dicom.options)
        writer = DicomWriter(out, dicom, predictor.label_map.names, algorithm_of(predictor.models, predictor.min_score))
    if annotations:
        from . import preannotate
        names = [name for name, _ in inputs]
        preannotate.check_names(annotations, names)
        preannotate.check_replaceable(annotations_out, preannotate.planned_files(annotations, names))
    if outputs.draw:
        check_drawn_names([name for name, _ in inputs], outputs.draw_format)
    predictor.detect_fns  # load the models before creating the output folder
    os.makedirs(out, exist_ok=True)
    from ..core.rerun import Rerun
    from ..odapi.runtime import LOG_NAME
    rerun = Rerun(out, RERUN_MARKER, "detect", keep=[LOG_NAME])  # a rerun's stale files go at the end
    label_map = predictor.label_map
    rows, skipped, pending, dicom_jobs = [], [], [], []  # pending: (prediction, future of its mask RLEs)
    per_image = [None] * len(inputs)  # filled in input order, whatever order batches finish in
    tops = [None] * len(inputs)  # with annotations: (width, height, top score before the threshold, channels)
    bar = progress(total=len(inputs), desc="detect", unit="img", quiet=outputs.quiet)
    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        for p in predictor.run(inputs, pool, top_scores=bool(annotations), keep_images=True):
            bar.update(1)
            if p.error is not None:
                skipped.append((p.name, p.error))
                per_image[p.index] = (p.name, None, p.error)
                continue
            gt_boxes = [(label, box) for label, box in gt.get(p.name, [])] if gt else None
            pending.append((p, pool.submit(finish, p, gt_boxes, out if outputs.draw else None, label_map.ids,
                                           outputs.draw_format)))
            per_image[p.index] = (p.name, p.detections, None)
            if writer is not None:
                dicom_jobs.append((p.name, pool.submit(writer.write, p.name, inputs[p.index][1], p, p.image,
                                                       label_map.ids)))
            if annotations:  # what the pre-annotations and their queue need besides the kept boxes
                tops[p.index] = (p.width, p.height, p.top_score, p.channels)
        for p, future in sorted(pending, key=lambda item: item[0].index):  # in input order
            rows.extend((detection, (p.width, p.height), rle) for detection, rle in zip(p.detections, future.result()))
            p.image = None
        dicom_skipped = [(name, job.result()) for name, job in dicom_jobs if job.result() is not None]
    bar.close()
    write_tables(out, rows, per_image, label_map, dataset, split)
    if annotations:
        from . import preannotate
        done = [preannotate.Predicted(name, "" if callable(path) else path, *tops[i][:2], per_image[i][1], tops[i][2],
                                      tops[i][3])
                for i, (name, path) in enumerate(inputs) if tops[i] is not None]
        preannotate.write(annotations, annotations_out, done, label_map, predictor.min_score,
                          model_version=os.path.basename(os.path.abspath(predictor.models[0].path)))
    for name, reason in skipped:
        print(f"skipped {name}: {reason}")
    removed = rerun.finish()
    if removed:
        print(f"removed {len(removed)} files the previous detect run wrote into {out} and this one did not "
              f"(e.g. {removed[0]}), so what is there is this run's")
    summary = {"images": len(inputs), "detections": len(rows), "skipped": skipped, "min_score": predictor.min_score,
               "batch": predictor.batch, "window": f"{predictor.window.describe()} ({predictor.window_source})"}
    if writer is not None:
        for name, reason in dicom_skipped:
            print(f"no DICOM result for {name}: {reason}")
        summary["dicom"] = {"written": len(dicom_jobs) - len(dicom_skipped), "skipped": dicom_skipped}
    return summary


def check_on_split(dets, gt, split: str, dataset: str) -> None:
    """A `UserError` when a detection is on an image outside the split's ground truth `gt`."""
    unknown = sorted({d.image for d in dets} - set(gt))
    if unknown:
        raise UserError(f"{len(unknown)} images in the detections are not in the {split} split of "
                        f"{dataset}, e.g. {unknown[0]!r}")


def split_detections(model: str, dataset: str, split: str, gt, detections: Optional[str] = None,
                     quiet: bool = False, options: Optional[PredictOptions] = None) -> list:
    """Every detection the model makes on a dataset split (score >= 0), read from `detections`
    (a detections.csv of that split) or made now without drawing (run with `options`, e.g. tiled;
    their min_score is replaced by 0); a `UserError` when a detection is on an image outside the
    split's ground truth `gt`."""
    import dataclasses
    import tempfile

    from ..data.readers.detections import read_detections_csv
    with tempfile.TemporaryDirectory(prefix="medtfod-split-") as tmp:
        csv_path = detections
        if not csv_path:  # the tables are all the caller needs
            run = dataclasses.replace(options or PredictOptions(), min_score=0.0)
            detect(model, tmp, dataset=dataset, split=split, options=run,
                   outputs=DetectOutputs(draw=False, quiet=quiet))
            csv_path = os.path.join(tmp, "detections.csv")
        dets = read_detections_csv(csv_path)
    check_on_split(dets, gt, split, dataset)
    lowest = min((d.score for d in dets), default=0.0)
    if detections and lowest >= THRESHOLDED_BELOW:
        print(f"warning: {detections}: its lowest score is {lowest:g}; a table made with a threshold (--min-score "
              f"{lowest:g} or so) gives lower AP and a shorter FROC than the model's: for curves, AP and calibration "
              "run detect with --min-score 0, or leave --detections out", flush=True)  # stdout: stderr may go to the log
    return dets
