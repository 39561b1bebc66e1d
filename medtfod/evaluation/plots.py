"""Presenting `medtfod.evaluation.metrics` results: a printed summary table and PNG curves.

Plots use matplotlib's object API with the Agg canvas (no pyplot, no global backend change),
imported only when `write_plots` runs.
"""
from __future__ import annotations

import io
import os
import re
from typing import List, Optional, Sequence

from ..core import atomic
from ..data.readers.detections import Detection, GroundTruth
from .matching import match_detections
from .metrics import froc_curve, pr_curve


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(result: dict) -> str:
    """A plain-text summary of `evaluate_all`'s result (None printed as 'n/a')."""
    lines: List[str] = []
    t = result.get("threshold")
    if t:
        lines += [f"Threshold score >= {t['min_score']:g} ({t['detail']}): IoBB, image-level sensitivity/specificity, "
                  f"confusion, sensitivity, FP/image and per-lesion IoU; {t['kept']} of {t['detections']} detections "
                  "kept. AP, FROC, AUC and COCO use all detections.", ""]
    ious = list(result["ap"])
    classes = [c for c in result["ap"][ious[0]] if c != "mean"] + ["mean"]
    width = max([len(c) for c in classes] + [12])
    lines.append(f"{'AP (all-point)':<{width}}  " + "  ".join(f"IoU {t:<5}" for t in ious))
    for c in classes:
        lines.append(f"{c:<{width}}  " + "  ".join(f"{_fmt(result['ap'][t].get(c)):<9}" for t in ious))
    rates = [r for r in result["froc"] if r != "mean"]
    lines += ["", "FROC sensitivity at FP/image:  " + "  ".join(f"{r:>5}" for r in rates) + "   mean",
              " " * 31 + "  ".join(f"{_fmt(result['froc'][r]):>5}" for r in rates)
              + f"  {_fmt(result['froc']['mean'])}"]
    if result["iobb"]:
        thresholds = list(next(iter(result["iobb"].values())))
        lines += ["", f"{'IoBB accuracy / avg FP':<{width}}  " + "  ".join(f"T={t:<11}" for t in thresholds)]
        for c, row in result["iobb"].items():
            lines.append(f"{c:<{width}}  " + "  ".join(
                f"{_fmt(row[t]['accuracy'], 2)}/{_fmt(row[t]['avg_fp'], 2):<8}" for t in thresholds))
    il = result["image_level"]
    lines += ["", f"Image level: AUC {_fmt(il['auc'])}, sensitivity {_fmt(il['sensitivity'])}, "
                  f"specificity {_fmt(il['specificity'])} at score >= {_fmt(il['threshold'])}"]
    at = result.get("at_threshold")
    if at:
        ci = at.get("ci95", {})

        def with_ci(key):
            low, high = ci.get(key, (None, None))
            return _fmt(at[key]) + (f" [{_fmt(low)}, {_fmt(high)}]" if key in ci else "")
        lines += ["", f"At the threshold: sensitivity {with_ci('sensitivity')} ({at['hits']} of {at['lesions']} "
                      f"lesions), FP/image {with_ci('fp_per_image')}, mean best IoU per lesion {with_ci('mean_iou')} "
                      f"(median {_fmt(at['median_iou'])}), mean best IoBB {_fmt(at['mean_iobb'])}"]
    lines += _strata_lines(result.get("strata") or {})
    coco = result["coco"]
    lines += ["", "COCO: " + ", ".join(f"{k} {_fmt(v)}" for k, v in coco.items() if k != "per_class")]
    ci = result.get("ci95")
    if ci:
        intervals = {k: v for k, v in ci.items() if isinstance(v, list)}
        lines += ["", f"95% CI ({ci['unit']} bootstrap, {ci['groups']} {ci['unit']}s, {ci['replicates']} "
                  "replicates): " + ", ".join(f"{k} [{_fmt(lo)}, {_fmt(hi)}]" for k, (lo, hi) in intervals.items())]
    return "\n".join(lines) + "\n"


def _strata_lines(strata: dict) -> List[str]:
    from .report_plots import strata_rows
    rows = strata_rows(strata)
    if not rows:
        return []
    rates = strata["rates"]
    lines = ["", f"{'Strata':<32} {'lesions':>7} {'images':>6} {'AP@0.5':>7} " + " ".join(f"{f'FROC@{r:g}':>8}" for r in rates)
             + f" {'sensitivity [95% CI]':>24} {'FP/image':>8} {'mean IoU':>8}"]
    for group, _, s in rows:
        low, high = (s.get("ci95") or {}).get("sensitivity", (None, None))
        sens = _fmt(s["sensitivity"]) + (f" [{_fmt(low)}, {_fmt(high)}]" if s.get("ci95") else "")
        name = f"{group}: {s['name']}"
        lines.append(f"{name:<32} {s['lesions']:>7} {s['images']:>6} {_fmt(s['ap50']):>7} "
                     + " ".join(f"{_fmt(s['froc'][f'{r:g}']):>8}" for r in rates)
                     + f" {sens:>24} {_fmt(s['fp_per_image']):>8} {_fmt(s['mean_iou']):>8}"
                     + ("  (too few lesions)" if s["too_small"] else ""))
    return lines


def _save(figure, path: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic.write_file(path, buffer.getvalue())
    return path


def write_plots(gt: GroundTruth, dets: Sequence[Detection], out_dir: str, iou_froc: float = 0.1,
                iou_pr: float = 0.5) -> List[str]:
    """Write `froc.png` (sensitivity vs FP/image, log x axis, IoU >= `iou_froc`) and one
    `pr_<class>.png` per class with GT boxes (precision vs recall at IoU >= `iou_pr`, raw and
    its monotone envelope). Class names become file names with characters other than
    letters, digits, '-', '_' and '.' replaced by '_'. Returns the paths written.
    """
    from matplotlib.figure import Figure

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    curve = froc_curve(gt, dets, iou_froc)
    figure = Figure(figsize=(5, 4))
    ax = figure.add_subplot()
    points = [(f, s) for f, s in zip(curve["avg_fp"], curve["sensitivity"]) if f > 0 and s is not None]
    if points:
        ax.step(*zip(*points), where="post")
    ax.set(xscale="log", xlabel="average false positives per image", ylabel="sensitivity",
           ylim=(0, 1.02), title=f"FROC (IoU >= {iou_froc:g})")
    ax.grid(True, which="both", alpha=0.3)
    paths.append(_save(figure, os.path.join(out_dir, "froc.png")))
    matched = match_detections(gt, dets, iou_pr)
    for label in sorted({name for objects in gt.values() for name, _ in objects}):
        recall, precision = pr_curve(gt, dets, label, iou_pr, matched)
        envelope = list(precision)
        for k in range(len(envelope) - 2, -1, -1):
            envelope[k] = max(envelope[k], envelope[k + 1])
        figure = Figure(figsize=(5, 4))
        ax = figure.add_subplot()
        if recall:
            ax.plot(recall, precision, ".", alpha=0.4, label="precision")
            ax.step([0.0] + recall, envelope[:1] + envelope, where="pre", label="envelope (AP area)")
            ax.legend(loc="lower left")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
               title=f"{label} (IoU >= {iou_pr:g})")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", label)
        paths.append(_save(figure, os.path.join(out_dir, f"pr_{safe}.png")))
    return paths
