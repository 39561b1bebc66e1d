import glob
import os

import pytest

from medtfod.core.errors import UserError
from medtfod.core.labelmap import LabelMap, read_label_map, shipped_path
from medtfod.data.splits import assign_patients, parse_fractions

from support import write


def test_shipped_nih_map():
    lm = read_label_map(shipped_path("nih_chestxray14"))
    assert lm.names == ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule",
                        "Pneumonia", "Pneumothorax"]
    assert lm.num_classes == 8
    assert "did you mean 'Infiltrate'" in lm.unknown_message("Infiltration")


def test_pbtxt_round_trip(tmp_path):
    lm = LabelMap.from_names(["Mass", "it's odd"])
    back = read_label_map(write(tmp_path / "m.pbtxt", lm.to_pbtxt()))
    assert back == lm


def test_bad_label_maps(tmp_path):
    with pytest.raises(UserError, match="m.pbtxt"):
        read_label_map(write(tmp_path / "m.pbtxt", "item { id: 1 nam: 'x' }"))
    with pytest.raises(UserError, match="used twice"):
        read_label_map(write(tmp_path / "m.pbtxt", "item { id: 1 name: 'a' } item { id: 1 name: 'b' }"))


def test_real_label_maps(shared_data):
    paths = glob.glob(os.path.join(shared_data, "tf_od_api", "label_maps", "*.pbtxt"))
    assert paths
    for path in paths:
        assert read_label_map(path).num_classes >= 1
    assert read_label_map(os.path.join(shared_data, "tf_od_api", "raccoon_dataset", "object-detection.pbtxt")).names == ["raccoon"]


def test_split_is_patient_level_and_deterministic():
    patients = [str(i) for i in range(100)]
    a = assign_patients(patients, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=1)
    assert a == assign_patients(reversed(patients), {"train": 0.7, "val": 0.2, "test": 0.1}, seed=1)
    counts = {s: sum(1 for v in a.values() if v == s) for s in ("train", "val", "test")}
    assert counts == {"train": 70, "val": 20, "test": 10}
    assert a != assign_patients(patients, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=2)


def test_small_split_gets_a_patient():
    a = assign_patients(["1", "2", "3"], {"train": 0.9, "val": 0.1})
    assert sorted(a.values()) == ["train", "train", "val"]


@pytest.mark.parametrize("text", ["train=0.8", "train=0.8,val=x", "train0.8,val=0.2", "train=1.5,val=-0.5"])
def test_bad_fractions(text):
    with pytest.raises(UserError, match="--split"):
        parse_fractions(text)


def test_stratified_split_spreads_rare_class():
    patients = [str(i) for i in range(40)]
    classes = {p: ({"rare"} if int(p) < 10 else {"common"}) for p in patients}
    a = assign_patients(patients, {"train": 0.8, "val": 0.2}, seed=0, classes=classes)
    rare_val = sum(1 for p in patients if int(p) < 10 and a[p] == "val")
    assert rare_val == 2                       # exactly 20% of the rare class's patients
    assert sum(1 for v in a.values() if v == "val") == 8


def test_folds_are_disjoint_by_patient_balanced_and_stratified():
    from medtfod.data.splits import assign_folds, fold_fractions, fold_names
    # 40 patients: 4 with the rare 'Mass', 16 with 'Nodule', 20 without findings
    classes = {f"P{i:02d}": ({"Mass"} if i < 4 else {"Nodule"} if i < 20 else set()) for i in range(40)}
    folds = fold_names(4)
    held = {"test": 0.1}
    assignment = assign_folds(classes, folds, held, seed=1, classes=classes)
    assert set(assignment) == set(classes) and len(set(assignment.values())) == 5  # every patient exactly once
    sizes = {f: sum(1 for s in assignment.values() if s == f) for f in folds}
    assert sum(1 for s in assignment.values() if s == "test") == 4
    assert max(sizes.values()) - min(sizes.values()) <= 1
    for label in ("Mass", "Nodule"):  # each class in every fold, evenly
        per_fold = [sum(1 for p, s in assignment.items() if s == f and label in classes[p]) for f in folds]
        assert min(per_fold) >= 1 and max(per_fold) - min(per_fold) <= 1, (label, per_fold)
    assert assign_folds(classes, folds, held, seed=1, classes=classes) == assignment  # deterministic
    assert fold_fractions(3) == {"fold1": 1 / 3, "fold2": 1 / 3, "fold3": 1 / 3}
    assert fold_fractions(2, "test=0.2") == {"fold1": 0.4, "fold2": 0.4, "test": 0.2}
    with pytest.raises(UserError, match="at least 2 folds"):
        fold_fractions(1)
    with pytest.raises(UserError, match="leaving nothing for the folds"):
        fold_fractions(3, "test=1")
    with pytest.raises(UserError, match="which --folds 3 uses for a fold"):
        fold_fractions(3, "fold2=0.1")


def test_convert_folds_writes_one_split_per_fold_and_audit_finds_no_leak(tiny_nih, tmp_path, capsys):
    import json
    from medtfod.cli import main
    out = tmp_path / "folds"
    assert main(["convert", "nih", "--bbox-csv", tiny_nih["bbox_csv"], "--images", tiny_nih["images"],
                 "--data-entry", tiny_nih["data_entry"], "--label-map", tiny_nih["label_map"],
                 "--out", str(out), "--folds", "3", "--split", "test=0.2", "-q"]) == 0
    assert sorted(os.listdir(out / "splits")) == ["fold1.txt", "fold2.txt", "fold3.txt", "test.txt"]
    assert sorted({os.path.basename(p).split(".record")[0] for p in glob.glob(str(out / "tfrecords" / "*"))}) == \
        ["fold1", "fold2", "fold3", "test"]
    manifest = json.loads((out / "dataset.json").read_text())
    patients_of = {}
    for image in manifest["images"]:
        patients_of.setdefault(image["patient"], set()).add(image["split"])
    assert all(len(splits) == 1 for splits in patients_of.values())  # no patient in two folds
    capsys.readouterr()
    assert main(["audit", "--splits", str(out), "--out", str(tmp_path / "audit.json")]) == 0
    assert json.loads((tmp_path / "audit.json").read_text())["leaks"] == 0
