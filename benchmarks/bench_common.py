"""What the training benchmarks share (`real_ddti.py`, `small_lesions.py`): train and export a
config once, keeping the train time, and print an interval.
"""
from __future__ import annotations

import json
import os
import time


def trained_export(config: str, out: str) -> float:
    """Train `config` into `out`/model and export it to `out`/exported, unless that export is
    already there (a rerun reuses it: delete `out` to train again). Returns the training time in
    seconds, as measured when it was trained (`out`/train_seconds.json)."""
    import medtfod
    from medtfod import ExportedModel, TrainOptions
    exported = os.path.join(out, "exported")
    timing = os.path.join(out, "train_seconds.json")
    if not os.path.isfile(os.path.join(exported, "saved_model", "saved_model.pb")):
        started = time.time()
        medtfod.train(config, os.path.join(out, "model"), options=TrainOptions(verbose=False))
        with open(timing, "w") as f:
            json.dump({"seconds": time.time() - started}, f)
        ExportedModel.export(config, os.path.join(out, "model"), exported)
    with open(timing) as f:
        return json.load(f)["seconds"]


def ci(value, low, high) -> str:
    """'0.683 [0.583, 0.788]', or 'n/a' when the value or its interval is undefined."""
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if None not in (value, low, high) else "n/a"
