"""medtfod: the TensorFlow Object Detection API workflow for medical images.

The Python API (the `medtfod` command is a thin layer over it):

    from medtfod import Dataset, ExportedModel, evaluate
    data = Dataset.convert("nih", images="images", out="data", bbox_csv="BBox_List_2017.csv")
    model = ExportedModel("exported")
    predictions = model.predict(data, split="val", min_score=0)
    metrics = evaluate(data, "val", predictions)

Names are loaded on first use, so `import medtfod` (and `medtfod --help`) stays fast.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "Dataset": ("medtfod.data.dataset", "Dataset"),
    "ConvertOptions": ("medtfod.data.convert", "ConvertOptions"),
    "TileOptions": ("medtfod.data.tiles", "TileOptions"),
    "ExportedModel": ("medtfod.inference.model", "ExportedModel"),
    "PredictOptions": ("medtfod.inference.predictor", "PredictOptions"),
    "Prediction": ("medtfod.inference.predictor", "Prediction"),
    "detect": ("medtfod.inference.detect", "detect"),
    "DetectOutputs": ("medtfod.inference.detect", "DetectOutputs"),
    "evaluate": ("medtfod.evaluation.evaluate", "evaluate"),
    "MetricsOptions": ("medtfod.evaluation.evaluate", "MetricsOptions"),
    "calibrate": ("medtfod.evaluation.calibrate", "calibrate"),
    "report": ("medtfod.evaluation.report", "build_report"),
    "render_config": ("medtfod.training.config", "render_config"),
    "RenderOptions": ("medtfod.training.config", "RenderOptions"),
    "train": ("medtfod.training.trainer", "train"),
    "TrainOptions": ("medtfod.training.trainer", "TrainOptions"),
    "Trainer": ("medtfod.training.trainer", "Trainer"),
    "ReportOptions": ("medtfod.evaluation.report", "ReportOptions"),
    "Box": ("medtfod.core.boxes", "Box"),
    "UserError": ("medtfod.core.errors", "UserError"),
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """The public API's names, imported when first used (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medtfod' has no attribute {name!r}")
    import importlib
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
