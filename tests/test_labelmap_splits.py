import glob
import os

import pytest

from medtfod.errors import UserError
from medtfod.labelmap import LabelMap, read_label_map, shipped_path
from medtfod.splits import assign_patients, parse_fractions

from conftest import write


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
