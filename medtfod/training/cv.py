"""`medtfod cv`: K-fold cross-validation on a dataset converted with `convert --folds K`.

For fold k of K, in order: a config that trains on the other K-1 folds and evaluates on fold k
(`config.render`), training (`training.trainer`, evaluating every `eval_every` steps and keeping the
best by `select_by` when given), export (the best checkpoint when there is one), and detection on
fold k at score 0 (`detect --dataset --split foldk --no-draw`): every image gets out-of-fold
detections from the one model that never saw it. Then:

    OUT/fold<k>/model/          the fold's training run (pipeline.config, checkpoints, best/)
    OUT/fold<k>/exported/       its SavedModel
    OUT/fold<k>/detections/     its detections of fold k (detections.csv, ...)
    OUT/fold<k>/fold.json       written last: the fold is done (a rerun skips it)
    OUT/detections.csv          all out-of-fold detections
    OUT/metrics.json            `medtfod metrics` of the out-of-fold detections over every fold
                                image (patient-bootstrap CIs), plus each fold's numbers and their
                                mean and sample standard deviation

A killed run resumes: finished folds (fold.json) are skipped, the running fold continues
training from its latest checkpoint, and export and detection are redone for it.
"""
from __future__ import annotations

import json
import os
import re
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ..core import atomic
from ..core.errors import UserError
from .config import RenderOptions

SUMMARY = {"ap50_mean": ("ap", "0.5", "mean"), "ap10_mean": ("ap", "0.1", "mean"), "froc_mean": ("froc", "mean"),
           "auc": ("image_level", "auc"), "coco_ap": ("coco", "AP")}


def fold_splits(dataset: str) -> List[str]:
    """The dataset's fold splits (fold1, fold2, ...) in order; a UserError when it has fewer than 2."""
    from ..data import manifest
    splits = {e.split for e in manifest.load(dataset).images}
    folds = sorted((s for s in splits if re.fullmatch(r"fold\d+", s)), key=lambda s: int(s[4:]))
    if len(folds) < 2:
        raise UserError(f"{dataset} has no folds (splits: {', '.join(sorted(splits))}); convert it with --folds K "
                        "(e.g. --folds 5, and --split test=0.1 to hold a test split out of the folds)")
    return folds


def _pick(metrics: dict, path) -> Optional[float]:
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def summary(metrics: dict) -> Dict[str, Optional[float]]:
    return {name: _pick(metrics, path) for name, path in SUMMARY.items()}


def mean_sd(folds: Dict[str, dict]) -> Dict[str, dict]:
    out = {}
    for name in SUMMARY:
        values = [f["summary"][name] for f in folds.values() if f["summary"][name] is not None]
        out[name] = {"mean": statistics.fmean(values) if values else None,
                     "sd": statistics.stdev(values) if len(values) > 1 else None, "folds": len(values)}
    return out


@dataclass(frozen=True)
class CvOptions:
    """How each fold is trained and the folds are scored.

    Fields:
      eval_every: evaluate every N steps while training (a multiple of 100; None: not while
        training); also the checkpoint interval (1000 when None).
      select_by: with eval_every, keep and export each fold's best checkpoint by this metric
        (see `selection.METRICS`).
      bootstrap: patient-bootstrap resamples for the out-of-fold 95% CIs (0 = none).
    """
    eval_every: Optional[int] = None
    select_by: Optional[str] = None
    bootstrap: int = 200


def run_cv(dataset: str, model: str, out: str, *, render_options: Optional[RenderOptions] = None,
           options: Optional[CvOptions] = None, quiet: bool = False, verbose: bool = False) -> dict:
    """Cross-validate `model` over the folds of `dataset` into `out` (see the module docstring).

    `render_options` (a `config.RenderOptions`: steps, batch_size, image_size, learning_rate,
    checkpoint, augment, overrides, tiny, ...) go to `config.render`; `options` say how the
    folds are trained and scored (`CvOptions`). Returns the metrics.json dict.
    """
    from .config import render, write_config
    from ..inference.detect import DetectOutputs, detect
    from ..inference.predictor import PredictOptions
    from ..evaluation.evaluate import MetricsOptions, evaluate_all
    from ..data.readers.detections import read_detections_csv, read_ground_truth
    from ..data import manifest
    from ..odapi.export import export
    from .trainer import TrainOptions, train

    cv = options or CvOptions()
    folds = fold_splits(dataset)
    data = manifest.load(dataset)
    os.makedirs(out, exist_ok=True)
    results: Dict[str, dict] = {}
    for k, fold in enumerate(folds, start=1):
        fold_dir = os.path.join(out, fold)
        done_path = os.path.join(fold_dir, "fold.json")
        if os.path.isfile(done_path):
            with open(done_path, encoding="utf-8") as f:
                results[fold] = json.load(f)
            print(f"fold {k}/{len(folds)} ({fold}): done earlier ({done_path}), skipped", flush=True)
            continue
        others = [f for f in folds if f != fold]
        model_dir = os.path.join(fold_dir, "model")
        config_path = os.path.join(model_dir, "pipeline.config")
        if not os.path.isfile(config_path):  # a resumed fold keeps the config it started with
            write_config(render(model, dataset, options=render_options, train_split=others, eval_split=fold),
                         config_path)
        print(f"\n== fold {k}/{len(folds)}: train on {', '.join(others)}, evaluate on {fold} ==", flush=True)
        train(config_path, model_dir, options=TrainOptions(
            checkpoint_every_n=cv.eval_every or 1000, verbose=verbose, quiet=quiet, eval_every=cv.eval_every,
            select_by=cv.select_by, desc=f"fold {k}/{len(folds)} train"))
        exported = os.path.join(fold_dir, "exported")
        export(config_path, model_dir, exported, verbose=verbose)
        detections = os.path.join(fold_dir, "detections")
        detect(exported, detections, dataset=dataset, split=fold,
               options=PredictOptions(min_score=0.0),
               outputs=DetectOutputs(draw=False, quiet=quiet))
        gt = read_ground_truth(dataset, fold)
        dets = read_detections_csv(os.path.join(detections, "detections.csv"))
        metrics = evaluate_all(gt, dets, patients=data.patients(fold), label_names=_label_names(dataset),
                               options=MetricsOptions(bootstrap=0))
        with open(os.path.join(exported, "export.json"), encoding="utf-8") as f:
            step = json.load(f).get("step")
        results[fold] = {"fold": fold, "trained_on": others, "step": step, "images": len(gt),
                         "summary": summary(metrics), "metrics": metrics}
        atomic.write_file(done_path, json.dumps(results[fold], indent=1) + "\n")
        print(f"fold {k}/{len(folds)} ({fold}): " + _line(results[fold]["summary"]), flush=True)
    return _aggregate(dataset, out, folds, results, cv.bootstrap)


def _label_names(dataset: str) -> List[str]:
    from ..core.labelmap import read_label_map
    return read_label_map(os.path.join(dataset, "label_map.pbtxt")).names


def _line(values: Dict[str, Optional[float]]) -> str:
    return ", ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in values.items())


def _aggregate(dataset: str, out: str, folds: Sequence[str], results: Dict[str, dict], bootstrap: int) -> dict:
    """Out-of-fold metrics over every fold image, and the per-fold table; written to OUT."""
    from ..data import manifest
    from ..evaluation.evaluate import MetricsOptions, evaluate_all
    from ..data.readers.detections import read_detections_csv, read_ground_truth
    gt, patients = {}, {}
    data = manifest.load(dataset)
    for fold in folds:
        gt.update(read_ground_truth(dataset, fold))
        patients.update(data.patients(fold))
    parts = []
    for i, fold in enumerate(folds):
        with open(os.path.join(out, fold, "detections", "detections.csv"), encoding="utf-8") as source:
            lines = source.read().splitlines(keepends=True)
        parts.extend(lines if i == 0 else lines[1:])  # one header
    atomic.write_file(os.path.join(out, "detections.csv"), "".join(parts))
    dets = read_detections_csv(os.path.join(out, "detections.csv"))
    oof = evaluate_all(gt, dets, patients=patients, label_names=_label_names(dataset),
                       options=MetricsOptions(bootstrap=bootstrap))
    result = {"dataset": os.path.abspath(dataset), "folds": list(folds), "images": len(gt),
              "out_of_fold": oof, "out_of_fold_summary": summary(oof),
              "per_fold": {f: {k: v for k, v in results[f].items() if k != "metrics"} for f in folds},
              "per_fold_mean_sd": mean_sd(results)}
    atomic.write_file(os.path.join(out, "metrics.json"), json.dumps(result, indent=1) + "\n")
    return result


def format_cv(result: dict) -> str:
    """The per-fold table with mean ± sd, then the out-of-fold line with its 95% CIs."""
    names = list(SUMMARY)
    fmt = (lambda v: "n/a" if v is None else f"{v:.3f}")  # noqa: E731
    lines = [f"{'fold':<10}{'step':>7}{'images':>8}" + "".join(f"{n:>16}" for n in names)]
    for fold, row in result["per_fold"].items():
        lines.append(f"{fold:<10}{row['step'] or '':>7}{row['images']:>8}"
                     + "".join(f"{fmt(row['summary'][n]):>16}" for n in names))
    spread = result["per_fold_mean_sd"]
    lines.append(f"{'mean ± sd':<25}" + "".join(
        f"{fmt(spread[n]['mean']) + ' ± ' + fmt(spread[n]['sd']):>16}" if spread[n]['sd'] is not None
        else f"{fmt(spread[n]['mean']):>16}" for n in names))
    oof, ci = result["out_of_fold_summary"], result["out_of_fold"].get("ci95", {})
    lines.append(f"{'out of fold':<25}" + "".join(f"{fmt(oof[n]):>16}" for n in names))
    intervals = {"ap50_mean": ci.get("ap50_mean"), "froc_mean": ci.get("froc_mean"), "auc": ci.get("auc")}
    lines.append("out-of-fold 95% CIs (patient bootstrap): " + ", ".join(
        f"{k} [{fmt(v[0])}, {fmt(v[1])}]" for k, v in intervals.items() if v))
    return "\n".join(lines)
