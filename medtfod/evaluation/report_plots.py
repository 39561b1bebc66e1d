"""The report's plots as PNG bytes (matplotlib, Agg, no display): FROC with its patient-bootstrap
band and the operating point, precision-recall per class, image-level ROC, the detection
confusion matrix, and training history curves."""
from __future__ import annotations

import io
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np

from .matching import FROC_RATES, match_detections
from .metrics import froc_curve, pr_curve


def _figure(width=5.0, height=3.6):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(figure)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def froc_plot(gt, dets, iou: float, band: Dict[str, list], point: Optional[Tuple[float, float]]) -> bytes:
    curve = froc_curve(gt, dets, iou)
    figure = _figure()
    ax = figure.add_subplot()
    points = [(f, s) for f, s in zip(curve["avg_fp"], curve["sensitivity"]) if f > 0 and s is not None]
    if points:
        ax.step(*zip(*points), where="post", label="FROC")
    if band["low"] and band["low"][0] is not None and len(band["low"]) == len(FROC_RATES):
        ax.fill_between(FROC_RATES, band["low"], band["high"], step="post", alpha=0.25,
                        label="95% CI (patient bootstrap)")
    if point is not None and point[0] > 0:
        ax.plot([point[0]], [point[1]], "o", color="crimson", label="operating point")
    ax.set(xscale="log", xlabel="false positives per image", ylabel="sensitivity", ylim=(0, 1.02),
           title=f"FROC (IoU >= {iou:g})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(figure)


def pr_plot(gt, dets, label: str, iou: float) -> bytes:
    recall, precision = pr_curve(gt, dets, label, iou, match_detections(gt, dets, iou))
    figure = _figure(4.2, 3.4)
    ax = figure.add_subplot()
    if recall:
        envelope = list(precision)
        for k in range(len(envelope) - 2, -1, -1):
            envelope[k] = max(envelope[k], envelope[k + 1])
        ax.step([0.0] + recall, envelope[:1] + envelope, where="pre")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=f"{label} (IoU >= {iou:g})")
    ax.grid(True, alpha=0.3)
    return _png(figure)


def roc_plot(gt, dets) -> Optional[bytes]:
    """Image-level ROC (image score = its highest detection score); None without positives or negatives."""
    best: Dict[str, float] = defaultdict(float)
    for d in dets:
        best[d.image] = max(best[d.image], d.score)
    y = np.array([bool(gt[i]) for i in gt])
    s = np.array([best.get(i, 0.0) for i in gt])
    if y.all() or not y.any():
        return None
    thresholds = np.unique(s)[::-1]
    tpr = [0.0] + [float((s[y] >= t).mean()) for t in thresholds]
    fpr = [0.0] + [float((s[~y] >= t).mean()) for t in thresholds]
    figure = _figure(4.2, 3.4)
    ax = figure.add_subplot()
    ax.plot(fpr + [1.0], tpr + [1.0], drawstyle="default")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.02), title="image level ROC")
    ax.grid(True, alpha=0.3)
    return _png(figure)


def confusion_plot(matrix: Dict[str, Dict[str, int]]) -> bytes:
    names = list(matrix)
    values = np.array([[matrix[t][p] for p in names] for t in names])
    figure = _figure(1.4 + 0.9 * len(names), 1.2 + 0.8 * len(names))
    ax = figure.add_subplot()
    ax.imshow(values, cmap="Blues")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(values[i, j]), ha="center", va="center",
                    color="white" if values[i, j] > values.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="detected", ylabel="true", title="detection confusion matrix")
    return _png(figure)


def history_plot(series: Dict[str, List[Tuple[int, float]]], title: str, log: bool = False) -> bytes:
    figure = _figure(5.0, 3.2)
    ax = figure.add_subplot()
    for name, points in sorted(series.items()):
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=name)
    ax.set(xlabel="step", title=title)
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _png(figure)


def strata_rows(strata: dict) -> List[Tuple[str, str, dict]]:
    """(group, its path in metrics.json, stratum) for every stratum of metrics.json's "strata",
    size first, then each field."""
    rows = [(f"size ({strata['size']['unit']})", f"strata/size/strata/{k}", s)
            for k, s in enumerate(strata.get("size", {}).get("strata", []))]
    for name, part in strata.get("by", {}).items():
        rows += [(name, f"strata/by/{name}/strata/{k}", s) for k, s in enumerate(part["strata"])]
    return rows


def forest_plot(strata: dict, overall: Optional[float]) -> Optional[bytes]:
    """Sensitivity at the threshold per stratum with its 95% CI (a forest plot), or None without
    strata. Strata under the minimum lesion count are grey and marked."""
    rows = [(group, s) for group, _, s in strata_rows(strata) if s["sensitivity"] is not None]
    if not rows:
        return None
    figure = _figure(7.5, 1.4 + 0.32 * len(rows))
    ax = figure.add_subplot()
    for y, (group, s) in enumerate(reversed(rows)):
        colour = "#999999" if s["too_small"] else "#1f5fa8"
        low, high = (s.get("ci95") or {}).get("sensitivity", [None, None])
        if low is not None:
            ax.plot([low, high], [y, y], color=colour, linewidth=2)
        ax.plot([s["sensitivity"]], [y], "s", color=colour, markersize=6)
    labels = [f"{group}: {s['name']}  (n={s['lesions']}{', too few' if s['too_small'] else ''})"
              for group, s in reversed(rows)]
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    if overall is not None:
        ax.axvline(overall, color="#cc3333", linestyle="--", linewidth=1)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("sensitivity with 95% CI (patient bootstrap)"
                  + (f"; dashed: all lesions, {overall:.2f}" if overall is not None else ""), fontsize=9)
    ax.set_title(f"sensitivity at the threshold by stratum (hit: IoU >= {strata['iou']:g})", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(figure)
