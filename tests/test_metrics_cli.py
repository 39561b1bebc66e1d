"""`medtfod metrics` on a converted dataset and a detections.csv made from its ground truth."""
import csv
import json

from medtfod.cli import main


def test_metrics_command(tiny_nih, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["convert", "nih", "--bbox-csv", tiny_nih["bbox_csv"], "--images", tiny_nih["images"],
                 "--data-entry", tiny_nih["data_entry"], "--label-map", tiny_nih["label_map"],
                 "--out", str(out), "-q"]) == 0
    rows = list(csv.reader(open(tiny_nih["bbox_csv"])))[1:]
    dets = tmp_path / "detections.csv"
    with open(dets, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "score", "xmin", "ymin", "xmax", "ymax"])
        for image, label, x, y, bw, bh in rows:      # a perfect detector: every box, score 0.9
            x, y, bw, bh = map(float, (x, y, bw, bh))
            w.writerow([image, label, 0.9, x, y, x + bw, y + bh])
    result_path = tmp_path / "m.json"
    assert main(["metrics", "--detections", str(dets), "--ground-truth", str(out), "--out", str(result_path),
                 "--plots", str(tmp_path / "plots"), "--bootstrap", "20"]) == 0
    result = json.loads(result_path.read_text())
    assert result["ap"]["0.5"]["mean"] == 1.0 and result["froc"]["mean"] == 1.0
    assert result["coco"]["AP50"] == 1.0
    assert result["image_level"]["auc"] == 1.0
    assert (tmp_path / "plots" / "froc.png").is_file()
    assert "metrics written to" in capsys.readouterr().out
