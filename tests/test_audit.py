import json
import shutil

from medtfod.cli import main

from support import write


def test_clean_converted_split(tiny_nih, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "nih", "--bbox-csv", tiny_nih["bbox_csv"], "--images", tiny_nih["images"],
                 "--data-entry", tiny_nih["data_entry"], "--label-map", tiny_nih["label_map"],
                 "--out", str(out), "-q"]) == 0
    assert main(["audit", "--splits", str(out), "--images", tiny_nih["images"]]) == 0
    assert "no leaks found" in capsys.readouterr().out


def test_leaks_are_found(tiny_nih, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(tiny_nih["images"], images)
    shutil.copyfile(images / "00000001_000.png", images / "renamed_copy.png")
    splits = tmp_path / "splits"
    splits.mkdir()
    write(splits / "train.txt", "00000001_000.png\n00000002_000.png\n")
    # a stem-only name, and a name with a Windows folder, both resolve by file name
    write(splits / "val.txt", "00000001_001\nC:\\data\\renamed_copy.png\nmissing.png\n")
    report = tmp_path / "audit.json"
    assert main(["audit", "--splits", str(splits), "--images", str(images), "--data-entry", tiny_nih["data_entry"],
                 "--out", str(report)]) == 1
    result = json.loads(report.read_text())
    assert [leak["patient"] for leak in result["patient_leaks"]] == ["1"]
    (dup,) = result["duplicate_images"]
    assert dup["across_splits"] and {d["image"] for d in dup["images"]} == {"00000001_000.png", "renamed_copy.png"}
    assert result["missing_images"] == [{"split": "val", "image": "missing.png"}]
    assert result["leaks"] == 3  # two leaks, and one listed image that could not be checked
    out = capsys.readouterr().out
    assert "LEAK patient 1" in out and "LEAK identical image" in out and "patients from: Data_Entry" in out
    assert "INCOMPLETE: 1 listed images not found" in out
    # without patient ids nothing is guessed from the names: only the identical image is found
    assert main(["audit", "--splits", str(splits), "--images", str(images)]) == 1
    out = capsys.readouterr().out
    assert "LEAK patient" not in out and "each image is its own patient" in out


def test_a_moved_dataset_is_audited_from_its_manifest(tiny_dataset, tmp_path, capsys):
    """No --images: patients and bytes come from dataset.json and the TFRecords, wherever the
    folder now is. A patient put into two splits in the manifest is a leak."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny_dataset, moved)
    assert main(["audit", "--splits", str(moved)]) == 0
    out = capsys.readouterr().out
    assert "no leaks found" in out and "patients from: dataset.json (nih)" in out
    manifest = json.loads((moved / "dataset.json").read_text())
    val = next(e for e in manifest["images"] if e["split"] == "val")
    train = next(e for e in manifest["images"] if e["split"] == "train")
    val["patient"] = train["patient"]
    (moved / "dataset.json").write_text(json.dumps(manifest))
    assert main(["audit", "--splits", str(moved)]) == 1
    assert f"LEAK patient {train['patient']}" in capsys.readouterr().out
