"""A training run's history read from its TensorBoard event files with TensorBoard's own record
reader and protos, not by parsing logs: the losses, the learning rate and every evaluated step's
metrics, as {run: {tag: [(step, value), ...]}} (run = the folder below the model dir, e.g.
'train' or 'eval').

TensorBoard's `EventAccumulator` would import all of TensorFlow (about 3 s) only to open the
files; TensorBoard ships a pure-Python record reader for machines without TensorFlow, and the
report uses that one. The values are converted the way `EventAccumulator` converts them
(`data_compat.migrate_value`, then `make_ndarray`); a test checks both give the same series.
"""
from __future__ import annotations

import os
import warnings
from typing import Dict, Iterator, List, Tuple

History = Dict[str, Dict[str, List[Tuple[int, float]]]]
EVENT_FILE_PREFIX = "events.out.tfevents."


def _events(path: str) -> Iterator:
    """The Event protos of one event file, in order (a record cut short at the end ends it)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
    reader = pywrap_tensorflow.PyRecordReader_New(path)
    while True:
        try:
            reader.GetNext()
        except (errors.OutOfRangeError, errors.DataLossError):  # the end, or a file still being written
            return
        yield event_pb2.Event.FromString(reader.record())


def read_history(model_dir: str) -> History:
    """Every scalar series under `model_dir` (recursively); {} when it has no event files."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources", category=UserWarning)
        from tensorboard import data_compat
        from tensorboard.util.tensor_util import make_ndarray
    runs: History = {}
    for folder, _, files in sorted(os.walk(model_dir)):
        for name in sorted(f for f in files if f.startswith(EVENT_FILE_PREFIX)):
            run = os.path.relpath(folder, model_dir).replace(os.sep, "/").split("/")[0]
            series = runs.setdefault(run, {})
            for event in _events(os.path.join(folder, name)):
                for value in event.summary.value:
                    value = data_compat.migrate_value(value)
                    if not value.HasField("tensor"):
                        continue
                    array = make_ndarray(value.tensor)
                    if array.size == 1 and array.dtype.kind in "fiu":
                        series.setdefault(value.tag, []).append((int(event.step), float(array.reshape(()))))
    for series in runs.values():
        for tag in series:
            series[tag] = sorted(dict(series[tag]).items())  # one value per step (the last written)
    return {run: series for run, series in runs.items() if series}
