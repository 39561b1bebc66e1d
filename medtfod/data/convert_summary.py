"""The few lines `medtfod convert` prints about what it wrote (from its report.json)."""
from __future__ import annotations

from .duplicates import groups_summary


def summary(report: dict, out_dir: str) -> str:
    """A short human-readable summary of a conversion report."""
    lines = [f"converted {report['images']} images, {report['boxes']} boxes ({report['source']}) -> {out_dir}"]
    if report.get("window", "header") != "header" or report.get("clahe"):
        lines.append(f"  window: {report['window']}" + (" + CLAHE" if report.get("clahe") else "")
                     + " (DICOM and 16-bit images; recorded in dataset.json)")
    if not report.get("classes", [None]):
        lines.append("  warning: the table has no boxes, so label_map.pbtxt has no classes and `config`/`train` cannot "
                     "use this dataset; convert a table with boxes, or give --label-map with your classes (a set of "
                     "images without findings, to test a model on)")
    for split, s in report["splits"].items():
        boxes = ", ".join(f"{k} {v}" for k, v in s["boxes"].items()) or "no boxes"
        lines.append(f"  {split:<6} {s['images']:>6} images ({s['negatives']} without findings, "
                     f"{s['patients']} patients): {boxes}")
        if "tiles" in s:
            t = s["tiles"]
            lines.append(f"         {t['tiles']:>6} tiles of {t['size']} px ({t['without_boxes']} without boxes), "
                         f"{t['boxes']} boxes" + (f"; {t['lost_boxes']} {'box' if t['lost_boxes'] == 1 else 'boxes'} in "
                                                 "no tile (no tile holds half of it: larger than a tile, or cut by "
                                                 "tile edges: a larger --tile-overlap keeps those)"
                                                 if t["lost_boxes"] else ""))
            for lost in t.get("lost", [])[:3]:
                box = ",".join(f"{v:g}" for v in lost["box"])
                lines.append(f"           in no tile: {lost['image']} {lost['label']} [{box}]"
                             + (f" ({lost['source']})" if lost.get("source") else ""))
            if len(t.get("lost", [])) > 3:
                lines.append(f"           ... and {len(t['lost']) - 3} more: report.json lists them (splits.{split}.tiles.lost)")
    if report.get("fields"):
        lines.append("  fields kept: " + ", ".join(f"{k} ({n} images)" for k, n in report["fields"].items()))
    if "duplicates" in report:
        lines.extend(groups_summary(report["duplicates"]))
    p = report["problems"]
    if p["count"]:
        kinds = ", ".join(f"{k} {v}" for k, v in p["by_kind"].items())
        lines.append(f"  skipped: {p['count']} problems ({kinds}); details in report.json")
        lines.extend(f"    {item['file']}:{item['line'] or '-'}: {item['message']}" for item in p["items"][:5])
    skips = p.get("expected_skips", {})
    if skips.get("count"):
        kinds = ", ".join(f"{k} {v}" for k, v in skips["by_kind"].items())
        lines.append(f"  not objects (expected, not errors): {kinds}")
    return "\n".join(lines)
