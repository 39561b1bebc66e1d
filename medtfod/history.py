"""A training run's history read from its TensorBoard event files with TensorBoard's own reader
(`EventAccumulator`), not by parsing logs: the losses, the learning rate and every evaluated
step's metrics, as {run: {tag: [(step, value), ...]}} (run = the folder below the model dir,
e.g. 'train' or 'eval')."""
from __future__ import annotations

import os
import warnings
from typing import Dict, List, Tuple

History = Dict[str, Dict[str, List[Tuple[int, float]]]]


def read_history(model_dir: str) -> History:
    """Every scalar series under `model_dir` (recursively); {} when it has no event files."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources", category=UserWarning)
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.util.tensor_util import make_ndarray
    runs: History = {}
    for folder, _, files in sorted(os.walk(model_dir)):
        if not any(f.startswith("events.out.tfevents.") for f in files):
            continue
        run = os.path.relpath(folder, model_dir).replace(os.sep, "/").split("/")[0]
        accumulator = EventAccumulator(folder, size_guidance={"tensors": 0, "scalars": 0, "images": 1})
        accumulator.Reload()
        tags = accumulator.Tags()
        series = runs.setdefault(run, {})
        for tag in tags.get("tensors", []):
            points = []
            for event in accumulator.Tensors(tag):
                value = make_ndarray(event.tensor_proto)
                if value.size == 1 and value.dtype.kind in "fiu":
                    points.append((int(event.step), float(value.reshape(()))))
            if points:
                series.setdefault(tag, []).extend(points)
        for tag in tags.get("scalars", []):
            series.setdefault(tag, []).extend((int(e.step), float(e.value)) for e in accumulator.Scalars(tag))
    for series in runs.values():
        for tag in series:
            series[tag] = sorted(dict(series[tag]).items())  # one value per step (the last written)
    return runs
