"""Which grey window `detect` / `ExportedModel.predict` apply to DICOM and 16-bit inputs: the one
the model's training data was converted with, unless the caller gives another (then a warning).

Windows are `medtfod.core.windowing`'s; a model knows its training window from export.json (or its
training dataset's manifest, `ExportedModel.window`).
"""
from __future__ import annotations

from typing import Sequence

from ..core.windowing import parse_window


def choose_window(models: Sequence, options: PredictOptions):
    """(Window, where it came from, a warning or None) for DICOM and 16-bit inputs: the options'
    window/clahe where given, else what the first model's training data was converted with
    (`ExportedModel.window`), else 'header'. The warning says when the given window (or CLAHE) is
    not the model's, or when the models of an ensemble were trained on differently windowed data."""
    recorded = [m.window for m in models]
    trained = recorded[0]
    given = options.window is not None or options.clahe is not None
    spec = options.window if options.window is not None else (trained or {}).get("window")
    clahe = options.clahe if options.clahe is not None else bool((trained or {}).get("clahe", False))
    window = parse_window(spec, clahe, option="window")
    source = "given" if given else ("the model's training data (export.json / dataset.json)" if trained
                                    else "the default: the model does not record one")
    warning = None
    if trained is not None:
        model_window = parse_window(trained["window"], bool(trained.get("clahe", False)))
        if given and model_window.key != window.key:
            warning = (f"the model {models[0].path} was trained on images windowed with {model_window.describe()}, "
                       f"but these DICOM/16-bit inputs get {window.describe()}: its detections may be off; leave "
                       "--window/--clahe out to use the training window")
    kinds = {parse_window(r["window"], bool(r.get("clahe", False))) for r in recorded if r is not None}
    if warning is None and len({k.key for k in kinds}) > 1:
        warning = (f"the ensemble's models were trained on differently windowed images "
                   f"({', '.join(sorted(k.describe() for k in kinds))}); DICOM/16-bit inputs get {window.describe()}")
    return window, source, warning
