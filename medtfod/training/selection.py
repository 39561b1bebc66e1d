"""Choosing the best checkpoint of a run by a medical metric, and when to stop (patience).

Pure bookkeeping, no TensorFlow: `Selection` is fed one evaluation at a time (step and the full
metric set, as `train --eval-every` and `eval --all` produce them) and says whether it is the
best so far and whether training should stop. `evaluations.jsonl` is its history; `best/` holds
the best checkpoint (see `save_best`), safe from the OD API's `max_to_keep`.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..core import atomic
from ..core.errors import UserError, did_you_mean

# --select-by name -> the key of the metric in an evaluation's metric set. The Medical/*
# values come from medtfod.evaluation.metrics (the same code as `medtfod metrics`), computed on the eval
# split inside the run; coco_map is the OD API's own COCO mAP@[.5:.95].
METRICS: Dict[str, str] = {
    "coco_map": "DetectionBoxes_Precision/mAP",
    "ap50": "Medical/ap50",
    "ap10": "Medical/ap10",
    "froc_mean": "Medical/froc_mean",
    "auc": "Medical/auc",
}
HISTORY = "evaluations.jsonl"
BEST = "best"


def metric_key(name: str) -> str:
    """The metric-set key of --select-by `name`; a `UserError` listing the valid names."""
    if name not in METRICS:
        raise UserError(f"--select-by {name!r} is not a metric medtfod selects by{did_you_mean(name, METRICS)} "
                        f"(valid: {', '.join(METRICS)})")
    return METRICS[name]


def default_metric(images_with_boxes: int, images: int) -> str:
    """froc_mean when some eval images have no box (FROC counts their false positives: the
    screening question), else ap50."""
    return "froc_mean" if images_with_boxes < images else "ap50"


def format_metrics(result: dict) -> str:
    """An evaluation's COCO metrics (`DetectionBoxes_*`, `DetectionMasks_*`), one per line under
    the checkpoint and step it evaluated, as `medtfod eval` and the demo print them."""
    lines = [f"evaluation of {result['checkpoint']} (step {result['step']}):"]
    for name, value in result["metrics"].items():
        if name.startswith("DetectionBoxes_") or name.startswith("DetectionMasks_"):
            lines.append(f"  {name:<45} {value:.4f}")
    return "\n".join(lines)


def _finite(value) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass
class Selection:
    """Best-so-far and patience over a run's evaluations.

    An evaluation improves on the best when its metric is finite and larger than the best by
    more than `min_delta` (the first finite value always does); ties and NaN never improve.
    `stop` is true once `patience` evaluations in a row have not improved (never without one).
    """

    metric: str
    patience: Optional[int] = None
    min_delta: float = 0.0
    best_step: Optional[int] = None
    best_value: Optional[float] = None
    since_best: int = 0
    history: List[dict] = field(default_factory=list)

    def update(self, step: int, metrics: Dict[str, float]) -> bool:
        """Record an evaluation; True when it is the new best."""
        value = _finite(metrics.get(metric_key(self.metric)))
        self.history.append({"step": step, "value": value})
        if value is not None and (self.best_value is None or value > self.best_value + self.min_delta):
            self.best_step, self.best_value, self.since_best = step, value, 0
            return True
        self.since_best += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience


def read_history(model_dir: str) -> List[dict]:
    """The evaluations of a run so far ([] before the first), oldest first."""
    path = os.path.join(model_dir, HISTORY)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def append_history(model_dir: str, record: dict) -> None:
    """Append one evaluation (one JSON line) to MODEL_DIR/evaluations.jsonl."""
    with open(os.path.join(model_dir, HISTORY), "a", encoding="utf-8") as f:
        f.write(json.dumps(record, allow_nan=True, sort_keys=True) + "\n")


def resume(model_dir: str, metric: str, patience: Optional[int], min_delta: float) -> Selection:
    """A `Selection` continued from the run's history (a resumed run keeps its best and its
    patience count). Evaluations of a step seen twice count once (the later one)."""
    selection = Selection(metric, patience, min_delta)
    by_step = {}
    for record in read_history(model_dir):
        by_step[record["step"]] = record
    for step in sorted(by_step):
        selection.update(step, by_step[step]["metrics"])
    return selection


def read_best(model_dir: str) -> Optional[dict]:
    """MODEL_DIR/best/best.json, or None when the run has no best checkpoint yet."""
    path = os.path.join(model_dir, BEST, "best.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_best(model_dir: str, checkpoint: str, record: dict) -> str:
    """Copy `checkpoint` (a prefix such as MODEL_DIR/ckpt-4) into MODEL_DIR/best/ and describe
    it in best/best.json. Returns the copied prefix.

    Safe against a kill at any moment: the new checkpoint's files are copied under their own
    names first, then the `checkpoint` state file and best.json are replaced atomically (each
    names a complete checkpoint), and only then are the previous best's files removed.
    """
    best_dir = os.path.join(model_dir, BEST)
    os.makedirs(best_dir, exist_ok=True)
    name = os.path.basename(checkpoint)
    folder = os.path.dirname(checkpoint) or "."
    files = [f for f in os.listdir(folder) if f.startswith(name + ".")]
    if not any(f.endswith(".index") for f in files):
        raise UserError(f"checkpoint {checkpoint} not found (no {name}.index)")
    for f in files:
        partial = os.path.join(best_dir, f + ".partial")
        shutil.copyfile(os.path.join(folder, f), partial)
        os.replace(partial, os.path.join(best_dir, f))
    atomic.write_file(os.path.join(best_dir, "checkpoint"),
                      f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    atomic.write_file(os.path.join(best_dir, "best.json"), json.dumps(dict(record, checkpoint=name), indent=2,
                                                                      allow_nan=True) + "\n")
    for f in os.listdir(best_dir):
        if f.startswith("ckpt-") and not f.startswith(name + "."):
            os.unlink(os.path.join(best_dir, f))
    return os.path.join(best_dir, name)


def select_best(model_dir: str, results: List[dict], metric: str) -> Optional[dict]:
    """Rank evaluated checkpoints (results of `medtfod eval --all`) by `metric` and copy the best
    into MODEL_DIR/best/. Returns the best result (None when the metric is undefined for every one)."""
    selection, best = Selection(metric), None
    for result in sorted(results, key=lambda r: r["step"]):
        if selection.update(result["step"], result["metrics"]):
            best = result
    if best is not None:
        save_best(model_dir, os.path.join(model_dir, best["checkpoint"]),
                  {"step": best["step"], "metric": metric, "value": best["metrics"][metric_key(metric)],
                   "metrics": best["metrics"]})
    return best
