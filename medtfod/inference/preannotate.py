"""Pre-annotations: a model's detections as files an annotation tool opens for correction.

`medtfod detect --annotations voc|labelstudio|coco --annotations-out DIR` writes, from the
detections at or above the threshold in use:

    voc          <stem>.xml per image, as labelImg 1.8.6 writes them (`writers.voc`: 1-based
                 inclusive integer corners; no `verified` attribute), and classes.txt (the
                 label map's order) for labelImg's predefined classes. labelImg keeps every
                 image's XML in one folder by file stem, so two images with one stem are refused.
    labelstudio  tasks.json: Label Studio import tasks with `predictions` (`writers.labelstudio`),
                 and labeling_config.xml, the matching labeling interface.
    coco         coco.json: COCO detection JSON (CVAT's "COCO 1.0" import), with each box's score.

and, for every format, queue.csv: each image's highest detection score before the threshold,
its boxes kept, and its distance to the threshold, which `medtfod annotate --order uncertainty`
reads (see `uncertainty_order`).

DIR/.medtfod-preannotations.json records what was written. A later run replaces only files an
earlier run wrote that nobody changed since (and removes those it no longer writes); a file a
reader corrected, or one medtfod did not write, stops the run before detect starts.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Dict, List, NamedTuple, Optional, Sequence

from ..core import atomic
from ..core.annotations import Detection, ImageRecord, Object
from ..core.errors import UserError
from ..core.labelmap import LabelMap

FORMATS = ("voc", "labelstudio", "coco")
QUEUE = "queue.csv"
CLASSES = "classes.txt"


class Predicted(NamedTuple):
    """One image's detect result: `name` relative to the input folder, `path` on disk ('' when
    read from a dataset), size in pixels, the detections kept, and the highest score of any
    detection before the threshold (0.0 when the model returned none)."""
    name: str
    path: str
    width: int
    height: int
    kept: List[Detection]
    top_score: float
    channels: int = 3  # 1 for a grayscale file (labelImg writes <depth>1</depth> for those)


def annotation_stem(name: str) -> str:
    """The stem labelImg names an image's annotation file after (`<stem>.xml`, one folder)."""
    return os.path.splitext(os.path.basename(name))[0]


def read_classes(folder: str) -> Optional[List[str]]:
    """The class names of `folder`/classes.txt (labelImg's predefined classes), or None without one."""
    path = os.path.join(folder, CLASSES)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def check_names(fmt: str, names: Sequence[str], hint: str = "pre-annotate them in separate runs") -> None:
    """Refuse, before any work, a format that is unknown or images whose files would collide."""
    if fmt not in FORMATS:
        raise UserError(f"--annotations {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt != "voc":
        return
    seen: Dict[str, str] = {}
    for name in names:
        key = annotation_stem(name).lower()  # Windows and macOS folders ignore case
        if key in seen:
            raise UserError(f"{seen[key]} and {name} would share one annotation file ({annotation_stem(name)}.xml): "
                            f"labelImg keeps annotations by file name in one folder; {hint}")
        seen[key] = name


WRITTEN = ".medtfod-preannotations.json"  # {file name: sha256} of what the last run wrote here


def sha256_of(path: str) -> str:
    from ..training.pretrained import sha256_of as digest  # the project's one file digest; urllib/tarfile load only here
    return digest(path)


def _written(out: str) -> Dict[str, str]:
    path = os.path.join(out, WRITTEN)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f)["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def planned_files(fmt: str, names: Sequence[str]) -> List[str]:
    """The files a run of `fmt` over images `names` writes (known before detect runs)."""
    fixed = {"voc": [CLASSES], "coco": ["coco.json"], "labelstudio": ["tasks.json", "labeling_config.xml"]}[fmt]
    return fixed + ([annotation_stem(n) + ".xml" for n in names] if fmt == "voc" else []) + [QUEUE]


def check_replaceable(out: str, files: Sequence[str]) -> None:
    """Refuse, before any work, to replace a file in `out` that medtfod did not write or that
    changed since (a reader's correction). Files a previous run wrote and nobody touched are
    replaced (a rerun with another threshold is fine)."""
    if not os.path.isdir(out):
        if os.path.exists(out):
            raise UserError(f"--annotations-out {out} is a file; give a folder")
        return
    ours = _written(out)
    kept = []
    for name in files:
        path = os.path.join(out, name)
        if os.path.exists(path) and ours.get(name) != sha256_of(path):
            kept.append(name)
    if kept:
        why = "changed since medtfod wrote it (corrected by a reader?)" if kept[0] in ours else "not written by medtfod"
        raise UserError(f"{os.path.join(out, kept[0])} is {why}{f'; so are {len(kept) - 1} more' if len(kept) > 1 else ''}"
                        ": it is kept and nothing was run. Choose a new --annotations-out, or move those files away")


def voc_files(images: Sequence[Predicted], label_map: LabelMap) -> Dict[str, bytes]:
    from ..data.writers.voc import voc_xml
    check_names("voc", [p.name for p in images])
    files = {CLASSES: ("\n".join(label_map.names) + "\n").encode("utf-8")}
    for p in images:
        record = ImageRecord(os.path.basename(p.name), os.path.abspath(p.path) if p.path else p.name, p.width,
                             p.height, p.channels, os.path.splitext(p.name)[1].lstrip(".").lower(), "",
                             [Object(d.label, d.box) for d in p.kept])
        folder = os.path.basename(os.path.dirname(os.path.abspath(p.path))) if p.path else "images"
        files[annotation_stem(p.name) + ".xml"] = voc_xml(record, folder=folder)
    return files


def coco_file(images: Sequence[Predicted], label_map: LabelMap) -> Dict[str, bytes]:
    from ..data.writers.coco import coco_dict
    records = [ImageRecord(p.name, p.path, p.width, p.height, 3, "", "", [Object(d.label, d.box) for d in p.kept])
               for p in images]
    data = coco_dict(records, label_map)
    scores = [d.score for p in images for d in p.kept]  # coco_dict numbers annotations in this order
    for annotation, score in zip(data["annotations"], scores):
        annotation["score"] = round(score, 6)
    data["info"]["description"] = "medtfod pre-annotations (detections at or above the threshold in use)"
    return {"coco.json": (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")}


def labelstudio_files(images: Sequence[Predicted], label_map: LabelMap, model_version: str) -> Dict[str, bytes]:
    from ..data.writers.labelstudio import labeling_config, tasks
    data = tasks([(p.name, p.width, p.height, p.kept) for p in images], model_version)
    return {"tasks.json": (json.dumps(data, indent=1) + "\n").encode("utf-8"),
            "labeling_config.xml": labeling_config(label_map.names).encode("utf-8")}


def queue_csv(images: Sequence[Predicted], threshold: float) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "top_score", "boxes", "distance_to_threshold"])
    for p in images:
        writer.writerow([p.name, f"{p.top_score:.6f}", len(p.kept), f"{abs(p.top_score - threshold):.6f}"])
    return text.getvalue().encode("utf-8")


def write(fmt: str, out: str, images: Sequence[Predicted], label_map: LabelMap, threshold: float,
          model_version: str) -> List[str]:
    """Write the pre-annotations of `images` in format `fmt` into `out`; returns the file names."""
    check_names(fmt, [p.name for p in images])
    if fmt == "voc":
        files = voc_files(images, label_map)
    elif fmt == "coco":
        files = coco_file(images, label_map)
    else:
        files = labelstudio_files(images, label_map, model_version)
    files[QUEUE] = queue_csv(images, threshold)
    check_replaceable(out, list(files))
    os.makedirs(out, exist_ok=True)
    previous = _written(out)
    for name, data in files.items():
        atomic.write_file(os.path.join(out, name), data)
    for name, digest in previous.items():  # an earlier run's untouched files this run does not write
        path = os.path.join(out, name)
        if name not in files and os.path.isfile(path) and sha256_of(path) == digest:
            os.unlink(path)
    record = {"files": {name: sha256_of(os.path.join(out, name)) for name in sorted(files)}}
    atomic.write_file(os.path.join(out, WRITTEN), json.dumps(record, indent=1) + "\n")
    return sorted(files)


def read_queue(folder: str) -> Optional[Dict[str, float]]:
    """{image: distance to the threshold} from `folder`/queue.csv, or None without one."""
    path = os.path.join(folder, QUEUE)
    if not os.path.isfile(path):
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    try:
        return {row["image"]: float(row["distance_to_threshold"]) for row in rows}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: not a medtfod queue.csv ({type(e).__name__}: {e})") from None


def uncertainty_order(names: Sequence[str], distance: Dict[str, float]) -> List[str]:
    """`names` with the least certain first: ascending |highest detection score - threshold|
    (the images whose strongest finding is nearest the decision, whichever side of it), ties by
    name; images the queue does not list (not pre-annotated) come last, by name."""
    listed = sorted((n for n in names if n in distance), key=lambda n: (distance[n], n))
    return listed + sorted(n for n in names if n not in distance)
