"""`core.errors.did_you_mean`: the one 'did you mean' hint every unknown-name message ends with."""
from medtfod.core.errors import did_you_mean, nearest


def test_the_nearest_name_or_nothing():
    assert did_you_mean("froc_man", ["coco_map", "froc_mean"]) == "; did you mean 'froc_mean'?"
    assert did_you_mean("zzz", ["coco_map", "froc_mean"]) == ""
    assert nearest("batch_sise", {"batch_size": 1, "num_steps": 2}) == "batch_size"  # any iterable of names


def test_ignore_case_prefers_a_name_that_differs_only_in_case():
    assert nearest("nodule", ["Nodule", "nodules"]) == "nodules"
    assert nearest("nodule", ["Nodule", "nodules"], ignore_case=True) == "Nodule"
    assert did_you_mean("Infiltration", ["Infiltrate", "Mass"], ignore_case=True) == "; did you mean 'Infiltrate'?"
