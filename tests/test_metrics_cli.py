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
    assert result["ci95"]["unit"] == "patient" and result["ci95"]["groups"] == 12  # tiny_nih's Data_Entry patients


def test_bootstrap_resamples_the_csv_tables_patients(tmp_path, capsys):
    """A `csv` dataset with a patient= column: the CIs resample its 3 patients, not 6 images
    (the patients come from the manifest, not from an NIH-style file name)."""
    import numpy as np
    from PIL import Image

    from support import write
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.fromarray(np.zeros((40, 50), np.uint8)).save(images / f"scan{i}.png")
    table = write(tmp_path / "t.csv", "name,finding,x,y,w,h,patient\n" +
                  "".join(f"scan{i}.png,lesion,{i},{i},10,12,P{i // 2}\n" for i in range(6)))
    out = tmp_path / "data"
    assert main(["convert", "csv", "--table", table, "--columns",
                 "filename=name,label=finding,x=x,y=y,w=w,h=h,patient=patient",
                 "--images", str(images), "--out", str(out), "--split", "train=1", "-q"]) == 0
    dets = write(tmp_path / "d.csv", "image,label,score,xmin,ymin,xmax,ymax\n" +
                 "".join(f"scan{i}.png,lesion,0.9,{i},{i},{i + 10},{i + 12}\n" for i in range(6)))
    assert main(["metrics", "--detections", dets, "--ground-truth", str(out), "--out", str(tmp_path / "m.json"),
                 "--bootstrap", "10"]) == 0
    ci = json.loads((tmp_path / "m.json").read_text())["ci95"]
    assert (ci["unit"], ci["groups"], ci["replicates"]) == ("patient", 3, 10)
    assert "patient bootstrap, 3 patients" in capsys.readouterr().out
