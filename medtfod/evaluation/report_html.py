"""The report's HTML: one file, inline CSS and a little inline JavaScript (the gallery filter),
images as data: URIs. Every metric cell carries `data-key` (its path in metrics.json, e.g.
`ap/0.5/mean`) and shows the value to 3 decimals, so a test can read the page against
metrics.json."""
from __future__ import annotations

import html
from typing import Any, Dict, List, Optional

from ..inference.operating_point import tiling_text

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.note{color:#8a5a00;background:#fff7e0;padding:6px 10px;border-radius:4px}
.plots img,.history img{margin:4px;border:1px solid #eee}
.cards{display:flex;flex-wrap:wrap;gap:10px} .card{border:1px solid #ccc;border-radius:4px;padding:6px;width:390px}
.card img{max-width:384px;display:block} .card .tags span{display:inline-block;font-size:12px;padding:1px 6px;
margin:2px;border-radius:8px;background:#eee} .tags .missed{background:#f8c9c9} .tags .fp{background:#fde2b8}
.tags .tp{background:#cdebd3} .filter label{margin-right:12px} #strata td{white-space:nowrap} .few{color:#8a5a00;font-weight:bold}
"""

SCRIPT = """
function applyFilter(){
  var cls=document.getElementById('cls').value;
  var wanted=[].slice.call(document.querySelectorAll('.outcome:checked')).map(function(e){return e.value});
  var shown=0;
  document.querySelectorAll('.card').forEach(function(card){
    var okClass=cls==='' || card.dataset.classes.split(' ').indexOf(cls)>=0;
    var okOutcome=card.dataset.outcomes.split(' ').some(function(o){return wanted.indexOf(o)>=0});
    card.style.display=(okClass&&okOutcome)?'':'none'; if(okClass&&okOutcome){shown++}
  });
  document.getElementById('shown').textContent=shown;
}
document.addEventListener('DOMContentLoaded',applyFilter);
// where the plots and the gallery are drawn (page pixels), for checks of a screenshot
window.addEventListener('load',function(){['plots','review','strata'].forEach(function(id){
  if(!document.getElementById(id)){return}
  var r=document.getElementById(id).getBoundingClientRect();
  document.getElementById(id).dataset.rect=[r.left+scrollX,r.top+scrollY,r.width,r.height].map(Math.round).join(',');
})});
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _cell(key: str, value: Any) -> str:
    return f'<td data-key="{html.escape(key)}">{_fmt(value)}</td>'


def _table(header: List[str], rows: List[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _metrics(m: Dict[str, Any]) -> str:
    parts = []
    ious = list(m["ap"])
    rows = [f"<tr><td>{html.escape(c)}</td>" + "".join(_cell(f"ap/{t}/{c}", m["ap"][t].get(c)) for t in ious) + "</tr>"
            for c in m["ap"][ious[0]]]
    threshold = m["threshold"]["min_score"]
    parts.append("<h3>Average precision (all-point) by IoU, all detections</h3>" + _table(["class"] + [f"IoU {t}" for t in ious], rows))
    rates = list(m["froc"])
    parts.append("<h3>FROC sensitivity at false positives per image (IoU &ge; 0.1), all detections</h3>" + _table(
        ["FP/image"] + rates, ["<tr><td>sensitivity</td>" + "".join(_cell(f"froc/{r}", m["froc"][r]) for r in rates)
                               + "</tr>"]))
    parts.append(_at_threshold(m))
    rows = []
    for c, by_t in m["iobb"].items():
        for t, values in by_t.items():
            rows.append(f"<tr><td>{html.escape(c)}</td><td>{t}</td>" + _cell(f"iobb/{c}/{t}/accuracy", values["accuracy"])
                        + _cell(f"iobb/{c}/{t}/avg_fp", values["avg_fp"]) + "</tr>")
    parts.append(f"<h3>Localization by IoBB (Wang et al. 2017), detections at score &ge; {threshold:g}</h3>" + _table(["class", "T(IoBB)", "accuracy", "avg FP"], rows))
    il = m["image_level"]
    parts.append("<h3>Image level (AUC on all detections; sensitivity and specificity at the threshold)</h3>"
                 + _table(["AUC", "sensitivity", "specificity", "at score \u2265"], [
        "<tr>" + "".join(_cell(f"image_level/{k}", il[k]) for k in ("auc", "sensitivity", "specificity", "threshold"))
        + "</tr>"]))
    coco = {k: v for k, v in m["coco"].items() if k != "per_class"}
    parts.append("<h3>COCO (pycocotools), all detections</h3>" + _table(list(coco), [
        "<tr>" + "".join(_cell(f"coco/{k}", v) for k, v in coco.items()) + "</tr>"]))
    ci = m.get("ci95") or {}
    if ci:
        names = [k for k, v in ci.items() if isinstance(v, list)]
        rows = [f"<tr><td>{n}</td>{_cell(f'ci95/{n}/0', ci[n][0])}{_cell(f'ci95/{n}/1', ci[n][1])}</tr>" for n in names]
        rows += [f"<tr><td>FROC sensitivity at {r} FP/image</td>{_cell(f'ci95/froc/{r}/0', v[0])}"
                 f"{_cell(f'ci95/froc/{r}/1', v[1])}</tr>" for r, v in ci.get("froc", {}).items()]
        parts.append(f"<h3>95% confidence intervals ({ci['unit']} bootstrap: {ci['groups']} {ci['unit']}s, "
                     f"{ci['replicates']} replicates)</h3>" + _table(["metric", "low", "high"], rows))
    return "".join(parts)


def _at_threshold(m: Dict[str, Any]) -> str:
    at, t = m["at_threshold"], m["threshold"]["min_score"]
    ci = at.get("ci95", {})
    keys = ("sensitivity", "fp_per_image", "mean_iou", "median_iou", "mean_iobb")
    header = ["lesions", "hits", "false positives", "sensitivity", "FP/image", "mean best IoU", "median best IoU",
              "mean best IoBB"]
    row = ("<tr>" + "".join(_cell(f"at_threshold/{k}", at[k]) for k in ("lesions", "hits", "false_positives"))
           + "".join(_cell(f"at_threshold/{k}", at[k]) for k in keys) + "</tr>")
    if ci:
        row += ("<tr><td colspan=3>95% CI</td>" + "".join(
            f"<td>{_fmt(ci[k][0])}&ndash;{_fmt(ci[k][1])}</td>" if k in ci else "<td></td>" for k in keys) + "</tr>")
    return (f"<h3>At the operating threshold: score &ge; {t:g} (hits at IoU &ge; {m['strata']['iou']:g}; best IoU "
            "per lesion of a same-class detection, 0 when none)</h3>" + _table(header, [row]))


def _strata(page: Dict[str, Any]) -> str:
    from .report_plots import strata_rows
    strata = page["metrics"]["strata"]
    rates = strata["rates"]
    header = ["stratum", "value", "lesions", "images", "patients", "AP@0.5"] + [f"FROC@{r}" for r in rates] + [
        "sensitivity", "95% CI", "FP/image", "mean best IoU"]
    rows = []
    for group, key, s in strata_rows(strata):
        low, high = (s.get("ci95") or {}).get("sensitivity", [None, None])
        flag = ' <span class="few" title="too few lesions to read">*</span>' if s["too_small"] else ""
        rows.append(f"<tr><td>{html.escape(group)}</td><td>{html.escape(s['name'])}{flag}</td>"
                    + "".join(_cell(f"{key}/{k}", s[k]) for k in ("lesions", "images", "patients", "ap50"))
                    + "".join(_cell(f"{key}/froc/{r:g}", s["froc"][f"{r:g}"]) for r in rates)
                    + _cell(f"{key}/sensitivity", s["sensitivity"])
                    + f'<td><span data-key="{key}/ci95/sensitivity/0">{_fmt(low)}</span>&ndash;'
                    f'<span data-key="{key}/ci95/sensitivity/1">{_fmt(high)}</span></td>'
                    + _cell(f"{key}/fp_per_image", s["fp_per_image"]) + _cell(f"{key}/mean_iou", s["mean_iou"]) + "</tr>")
    if not rows:
        return ""
    plot = (f'<img id="strata-plot" alt="sensitivity by stratum" src="{page["strata_plot"]}">'
            if page.get("strata_plot") else "")
    return (f'<h2>Strata</h2><div id="strata"><p>Sensitivity, FP and IoU at score &ge; {page["threshold"]:g}; AP '
            f"and FROC on all detections. * under {strata['min_lesions']} lesions: shown, but too few to "
            f"read.</p>{_table(header, rows)}{plot}</div>")


def _images(plots: Dict[str, str], css: str) -> str:
    return f'<div class="{css}">' + "".join(f'<img alt="{html.escape(t)}" title="{html.escape(t)}" src="{u}">'
                                            for t, u in plots.items()) + "</div>"


def _gallery(page: Dict[str, Any]) -> str:
    options = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in page["classes"])
    boxes = "".join(f'<label><input type="checkbox" class="outcome" value="{o}" checked onchange="applyFilter()"> '
                    f"{label}</label>" for o, label in (("missed", "missed lesion"), ("fp", "false positive"),
                                                        ("tp", "true positive"), ("negative", "negative")))
    cards = []
    for item in page["gallery"]:
        tags = "".join(f'<span class="{o}">{o}</span>' for o in item["outcomes"])
        cards.append(
            f'<div class="card" data-image="{html.escape(item["image"])}" data-outcomes="{" ".join(item["outcomes"])}" '
            f'data-classes="{html.escape(" ".join(item["classes"]))}"><img alt="{html.escape(item["image"])}" '
            f'src="{item["uri"]}"><div><b>{html.escape(item["image"])}</b> missed {item["missed"]}, '
            f'false positives {item["fp"]}, true positives {item["tp"]}</div><div class="tags">{tags}</div></div>')
    left = (f'<p class="note">{page["left_out"]} more images are not shown (--max-images keeps the worst cases '
            "first).</p>") if page["left_out"] else ""
    return (f'<div class="filter">class <select id="cls" onchange="applyFilter()"><option value="">all</option>{options}'
            f'</select> {boxes} &middot; <span id="shown">{len(cards)}</span> shown</div>{left}'
            f'<p>Ground truth in white, detections (score &ge; {page["threshold"]:g}) in class colours, '
            f'worst first.</p><div class="cards" id="gallery">{"".join(cards)}</div>')


def render(page: Dict[str, Any]) -> str:
    info = page["model_info"]
    per_class = ", ".join(f"{html.escape(c)} {n}" for c, n in page["boxes_per_class"].items())
    point: Optional[tuple] = page.get("operating_point")
    header = (f"<p><b>Dataset</b> {html.escape(page['dataset'])}, split <b>{html.escape(page['split'])}</b>: "
              f"{page['images']} images ({page['negatives']} without findings), {page['patients']} patients; "
              f"boxes: {per_class}.</p>"
              f"<p><b>Model</b> {html.escape(page['model'])}: {html.escape(info['family'])}, input "
              f"{html.escape(info['input'])}, checkpoint step {info['step'] if info['step'] is not None else 'unknown'}."
              f"</p><p><b>Threshold</b> score &ge; {page['threshold']:g}, from {html.escape(page['threshold_source'])}"
              + (f"; there: {point[1]:.3f} sensitivity at {point[0]:.2f} false positives per image" if point else "")
              + f". Review at IoU &ge; {page['iou']:g}. {page['detections']} detections in all (every score, for the curves)"
              + (f", detected on {html.escape(tiling_text(page['tiling']))}" if page.get("tiling") else "") + ".</p>")
    metrics = (_metrics(page["metrics"]) if page.get("metrics") else
               '<p class="note">No ground-truth boxes in this split: no metrics are possible; detections and '
               "counts only.</p>")
    history = ""
    if page["history"] or page["history_note"]:
        history = "<h2>Training history</h2>" + (f'<p class="note">{html.escape(page["history_note"])}</p>'
                                                  if page["history_note"] else "") + _images(page["history"], "history")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>medtfod report: "
            f"{html.escape(page['split'])}</title><style>{CSS}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>Detection report: {html.escape(page['split'])} split</h1>{header}"
            f'<h2>Metrics</h2><div id="metrics">{metrics}</div>'
            f'{_strata(page) if page.get("metrics") else ""}'
            f'<h2>Plots</h2><div id="plots">{_images(page["plots"], "plots")}</div>{history}'
            f'<h2>Review gallery</h2><div id="review">{_gallery(page)}</div>'
            f"<p style=\"color:#888\">built by medtfod in {page['built_seconds']:.1f} s</p></body></html>\n")
